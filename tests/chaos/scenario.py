"""What the chaos run schedules: reports every minute, their owners, and sweeps every 10 seconds."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from reporting.models import Report
from tests import factories

from .plan import Profile
from .source import READ_TIMEOUT

SWEEP_PREFIX = "Reporting: "
SWEEP_SECONDS = 10
# The sweeps the chaos run needs quickly: (name if the row is missing, task). The deadline
# sweep replaced the stuck-run sweep; whichever the code has is used.
CATCH_UP = ("Reporting: catch up missed runs", "reporting.tasks.catch_up_missed_runs")
ALERTS = ("Reporting: send failure alerts", "reporting.tasks.send_failure_alerts")
DEADLINES = ("Reporting: enforce run deadlines", "reporting.tasks.enforce_run_deadlines")
STUCK_RUNS = ("Reporting: recover stuck runs", "reporting.tasks.recover_stuck_runs")


@dataclass(frozen=True)
class ChaosReport:
    pk: int
    slug: str
    addresses: tuple[str, ...]
    owner_email: str


def create_reports(profile: Profile, source_url: str) -> list[ChaosReport]:
    """`profile.reports` reports of the source, each with its own owner and addresses, every minute."""
    source = factories.data_source(source_url, name="Chaos data source", connect_timeout=2.0, read_timeout=READ_TIMEOUT)
    created = []
    for number in range(1, profile.reports + 1):
        slug = f"chaos-{number:02d}"
        owner = get_user_model().objects.create_user(f"owner-{slug}", f"owner-{slug}@example.com", None)
        addresses = tuple(f"p{person}.{slug}@example.com" for person in range(1, profile.addresses + 1))
        report = factories.report(
            source,
            addresses=addresses,
            name=f"Chaos {number:02d}",
            slug=slug,
            owner=owner,
            period_kind=Report.PeriodKind.NONE,  # one period per slot: every minute is its own email
            timezone="UTC",
            subject_template="{{ report.name }} — {{ period.label }}",
        )
        factories.schedule(report, minute="*", hour="*")
        created.append(ChaosReport(report.pk, slug, addresses, owner.email))
    return created


def speed_up_sweeps() -> list[str]:
    """Every interval sweep every SWEEP_SECONDS (rows missing after a test flush are created)."""
    every, _ = IntervalSchedule.objects.get_or_create(every=SWEEP_SECONDS, period=IntervalSchedule.SECONDS)
    from reporting import tasks

    deadline_sweep = DEADLINES if hasattr(tasks, "enforce_run_deadlines") else STUCK_RUNS
    if deadline_sweep is DEADLINES:  # the old task may be gone: its row must not keep publishing it
        PeriodicTask.objects.filter(task=STUCK_RUNS[1]).exclude(name=DEADLINES[0]).update(enabled=False)
    for name, task in (CATCH_UP, deadline_sweep, ALERTS):
        if not PeriodicTask.objects.filter(task=task).exists():
            PeriodicTask.objects.create(name=name, task=task, kwargs=json.dumps({}), interval=every)
    sweeps = PeriodicTask.objects.filter(name__startswith=SWEEP_PREFIX, interval__isnull=False, enabled=True)
    sweeps.update(interval=every)
    PeriodicTasks.update_changed()
    return sorted(sweeps.values_list("name", flat=True))


def pause_schedules(reports: list[ChaosReport]) -> None:
    """Beat stops firing the reports (their runs and queued messages go on)."""
    PeriodicTask.objects.filter(report__pk__in=[report.pk for report in reports]).update(enabled=False)
    PeriodicTasks.update_changed()
