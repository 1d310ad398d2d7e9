"""The overview: per enabled report, its next run, last success, consecutive failures and
whether it is late, has missed slots or held runs — for a page that shows at a glance what
needs attention. A fixed number of queries for any number of reports.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db.models import F, Func, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from reporting import conf, schedules
from reporting.models import Report, ReportRun
from reporting.periods import period_for_slot

Status = ReportRun.Status
SUCCESS = (Status.SENT, Status.PARTIALLY_SENT)  # a run skipped by "Send only if" is neither success nor failure
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ReportHealth:
    report: Report
    next_run: datetime | None
    last_success_at: datetime | None
    last_success_id: int | None
    consecutive_failures: int
    missed: int  # missed slots since the last success
    held: int  # runs held back by a data check, not yet released or re-run
    late: bool  # the latest slot has passed (beyond the grace) without a run for its period
    overdue: int = 0  # runs not yet at an end and past their deadline (the deadline sweep acts on them)

    @property
    def needs_attention(self) -> bool:
        return bool(self.consecutive_failures or self.missed or self.held or self.late or self.overdue)


def enabled_reports() -> QuerySet:
    """Enabled reports with what the overview needs, each a correlated subquery: no query per report."""
    runs = ReportRun.objects.filter(report=OuterRef("pk")).exclude(trigger=ReportRun.Trigger.TEST)
    successes = runs.filter(status__in=SUCCESS).order_by("-created_at", "-pk")
    since_success = Q(created_at__gt=Coalesce(OuterRef("last_success_at"), Value(EPOCH)))
    scheduled = runs.filter(trigger__in=ReportRun.SCHEDULED_TRIGGERS).order_by("-created_at", "-pk")
    return (
        Report.objects.filter(enabled=True)
        .select_related("periodic_task__crontab")
        .annotate(
            last_success_at=Subquery(successes.values("created_at")[:1]),
            last_success_id=Subquery(successes.values("pk")[:1]),
            latest_scheduled_key=Subquery(scheduled.values("period_key")[:1]),
        )
        .annotate(
            failures_since_success=_count(runs.filter(since_success, status=Status.FAILED)),
            missed_since_success=_count(runs.filter(since_success, status=Status.MISSED)),
            held_runs=_count(runs.filter(status=Status.HELD)),
            overdue_runs=_count(runs.filter(status__in=ReportRun.WORKING, deadline_at__lt=timezone.now())),
        )
        .order_by("name", "pk")
    )


def report_health(reports: list[Report], *, now: datetime | None = None) -> list[ReportHealth]:
    """The overview's rows for reports from `enabled_reports()` (e.g. one page of them)."""
    now = (now or timezone.now()).replace(second=0, microsecond=0)
    grace = timedelta(seconds=conf.REPORTING["CATCH_UP_GRACE_SECONDS"])
    rows = []
    for report in reports:
        spec = schedules.spec_for(report)
        rows.append(
            ReportHealth(
                report=report,
                next_run=_next_run(spec, now) if spec else None,
                last_success_at=report.last_success_at,  # type: ignore[attr-defined]
                last_success_id=report.last_success_id,  # type: ignore[attr-defined]
                consecutive_failures=report.failures_since_success or 0,  # type: ignore[attr-defined]
                missed=report.missed_since_success or 0,  # type: ignore[attr-defined]
                held=report.held_runs or 0,  # type: ignore[attr-defined]
                overdue=report.overdue_runs or 0,  # type: ignore[attr-defined]
                late=spec is not None and _is_late(report, spec, now - grace),
            )
        )
    return rows


def _is_late(report: Report, spec: schedules.CronSpec, moment: datetime) -> bool:
    slot = _latest_slot(spec, moment)
    if slot is None or slot < report.created_at:
        return False
    return _period_key(report.period_kind, slot, report.timezone) != report.latest_scheduled_key  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=4096)
def _next_run(spec: schedules.CronSpec, minute: datetime) -> datetime | None:
    upcoming = schedules.next_runs(spec, after=minute, count=1)
    return upcoming[0] if upcoming else None


@functools.lru_cache(maxsize=4096)
def _latest_slot(spec: schedules.CronSpec, minute: datetime) -> datetime | None:
    return schedules.latest_slot(spec, at_or_before=minute)


@functools.lru_cache(maxsize=4096)
def _period_key(kind: str, slot: datetime, zone: str) -> str:
    return period_for_slot(kind, slot, ZoneInfo(zone)).key


def count_of(queryset: QuerySet) -> Subquery:
    """The number of rows of a queryset correlated with OuterRef, as a subquery (no GROUP BY)."""
    counted = queryset.order_by().annotate(count=Func(F("pk"), function="COUNT", output_field=IntegerField()))
    return Subquery(counted.values("count"))


def _count(queryset: QuerySet) -> Coalesce:
    return Coalesce(count_of(queryset), 0)
