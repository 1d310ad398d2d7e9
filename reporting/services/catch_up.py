"""The catch-up sweep: a schedule slot that beat never started is run late, or recorded as missed.

Beat fires each report on time; this runs every few minutes (a periodic task installed by
migration 0005) and repairs what an outage left behind: a slot whose period has no
scheduled run is run late (trigger "catch-up") within the report's catch-up window, or
recorded as a `missed` run when older, so that every gap shows in the archive. A period
that has a run, whatever its state, is not a gap: a run that never ends is the deadline
sweep's (reporting.services.deadlines).

It cannot send an address twice: the unique constraint on (report, period) for scheduled
runs, the lease claim in `runs.execute_run` and the per-address delivery claim still decide.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateformat import format as format_date

from reporting import audit, conf, runs, schedules
from reporting.models import AuditEvent, Report, ReportRun
from reporting.periods import Period, period_for_slot
from reporting.services.enqueue import EXECUTE_RUN, enqueue

log = logging.getLogger(__name__)
Status = ReportRun.Status

LOOK_BACK = timedelta(days=7)  # how far back gaps are recorded
SLOTS_PER_REPORT = 11  # the latest slot and up to ten before it
REPORTS_PER_QUERY = 200  # reports whose existing runs are read in one query


# --- catch-up -------------------------------------------------------------------------------


@dataclass
class CatchUpResult:
    caught_up: list[int] = field(default_factory=list)  # ids of the runs queued late
    missed: int = 0  # missed runs recorded


@dataclass(frozen=True)
class _Gap:
    """A slot of a report whose period may have no scheduled run."""

    report: _ScheduledReport
    slot: datetime
    period: Period
    latest: bool  # the report's most recent slot: the one that may still be run late


@dataclass(frozen=True)
class _ScheduledReport:
    pk: int
    name: str
    timezone: str
    period_kind: str
    catch_up_hours: int
    not_before: datetime  # slots at or before this are not gaps: created or re-scheduled later
    spec: schedules.CronSpec


def catch_up_missed_runs(*, now: datetime | None = None) -> CatchUpResult:
    """Run late, or record as missed, the scheduled runs that beat never started.

    Looks at each enabled report's slots from LOOK_BACK ago up to the grace period before
    `now` (beat itself fires on time; the sweep must not race it).
    """
    now = now or timezone.now()
    newest = now - timedelta(seconds=conf.REPORTING["CATCH_UP_GRACE_SECONDS"])
    slots = _SlotCache(newest=newest, oldest=now - LOOK_BACK)
    result = CatchUpResult()
    for chunk in _chunks(_scheduled_reports(), REPORTS_PER_QUERY):
        candidates = [gap for report in chunk for gap in _candidates(report, slots)]
        taken = _periods_with_runs(candidates)
        gaps = [gap for gap in candidates if (gap.report.pk, gap.period.key) not in taken]
        missed = []
        for gap in gaps:
            if gap.latest and gap.slot >= now - timedelta(hours=gap.report.catch_up_hours):
                run_id = _catch_up(gap)
                if run_id is not None:
                    result.caught_up.append(run_id)
            else:
                missed.append(_missed_run(gap, now=now))
        # ignore_conflicts: the unique constraint is the final guard against a concurrent beat.
        ReportRun.objects.bulk_create(missed, ignore_conflicts=True, batch_size=500)
        result.missed += len(missed)
    if result.caught_up or result.missed:
        log.warning("catch-up: %d runs queued late, %d recorded as missed", len(result.caught_up), result.missed)
    return result


def _scheduled_reports() -> Iterator[_ScheduledReport]:
    rows = (
        Report.objects.filter(enabled=True, periodic_task__enabled=True, periodic_task__crontab__isnull=False)
        .order_by("pk")
        .values_list(
            "pk",
            "name",
            "timezone",
            "period_kind",
            "catch_up_hours",
            "created_at",
            "periodic_task__date_changed",
            "schedule_rule",
            "periodic_task__crontab__minute",
            "periodic_task__crontab__hour",
            "periodic_task__crontab__day_of_month",
            "periodic_task__crontab__month_of_year",
            "periodic_task__crontab__day_of_week",
            "periodic_task__crontab__timezone",
        )
    )
    specs: dict[tuple, schedules.CronSpec] = {}  # many reports share one schedule
    for pk, name, tz, kind, hours, created_at, changed_at, rule, *cron in rows.iterator(chunk_size=2000):
        cron[-1] = str(cron[-1])
        cron.append(rule)  # the slots the rule keeps are the slots to catch up
        spec = specs.setdefault(tuple(cron), schedules.CronSpec(*cron))
        yield _ScheduledReport(pk, name, tz, kind, hours, max(created_at, changed_at), spec)


class _SlotCache:
    """Each schedule's slots in the look-back, newest first, and their periods: computed once."""

    def __init__(self, *, newest: datetime, oldest: datetime):
        self.newest, self.oldest = newest, oldest
        self._slots: dict[schedules.CronSpec, list[datetime]] = {}
        self._periods: dict[tuple, list[tuple[datetime, Period]]] = {}

    def periods(self, report: _ScheduledReport) -> list[tuple[datetime, Period]]:
        """(slot, period) for each slot, newest first, the newest slot only for each period."""
        key = (report.spec, report.period_kind, report.timezone)
        if key not in self._periods:
            tz = ZoneInfo(report.timezone)
            seen: dict[str, tuple[datetime, Period]] = {}
            for slot in self._slots_of(report.spec):
                period = period_for_slot(report.period_kind, slot, tz)
                seen.setdefault(period.key, (slot, period))
            self._periods[key] = list(seen.values())
        return self._periods[key]

    def _slots_of(self, spec: schedules.CronSpec) -> list[datetime]:
        if spec not in self._slots:
            found: list[datetime] = []
            slot = schedules.latest_slot(spec, at_or_before=self.newest)
            while slot is not None and slot > self.oldest and len(found) < SLOTS_PER_REPORT:
                found.append(slot)
                slot = schedules.latest_slot(spec, at_or_before=slot - timedelta(microseconds=1))
            self._slots[spec] = found
        return self._slots[spec]


def _candidates(report: _ScheduledReport, slots: _SlotCache) -> list[_Gap]:
    periods = slots.periods(report)
    newest_slot = periods[0][0] if periods else None
    return [
        _Gap(report=report, slot=slot, period=period, latest=slot == newest_slot)
        for slot, period in periods
        if slot > report.not_before
    ]


def _periods_with_runs(gaps: list[_Gap]) -> set[tuple[int, str]]:
    """(report id, period key) of the candidates that already have a scheduled run: one query."""
    if not gaps:
        return set()
    existing = ReportRun.objects.filter(
        report_id__in={gap.report.pk for gap in gaps},
        period_key__in={gap.period.key for gap in gaps},
        trigger__in=ReportRun.SCHEDULED_TRIGGERS,
    ).values_list("report_id", "period_key")
    return set(existing)


def _catch_up(gap: _Gap) -> int | None:
    """Create the late run and queue it; None when beat or another sweep created it meanwhile."""
    request = runs.RunRequest(
        report_id=gap.report.pk, period=gap.period, trigger=ReportRun.Trigger.CATCH_UP, scheduled_for=gap.slot
    )
    try:
        with transaction.atomic():
            run = runs.create_run(request)
            summary = f"Ran missed run #{run.pk} ({run.period_label}) late: beat did not start it at its slot."
            audit.record(actor=None, action=AuditEvent.Action.CAUGHT_UP, summary=summary, run=run)
            enqueue(EXECUTE_RUN, run_id=run.pk)
    except IntegrityError:
        log.info("report %s period %s got its run meanwhile", gap.report.pk, gap.period.key)
        return None
    log.warning("report %s: the run for %s was missed; running it late", gap.report.pk, gap.slot.isoformat())
    return run.pk


def _missed_run(gap: _Gap, *, now: datetime) -> ReportRun:
    return ReportRun(
        report_id=gap.report.pk,
        report_name=gap.report.name,
        period_kind=gap.period.kind,
        period_timezone=gap.report.timezone,
        period_start=gap.period.start,
        period_end=gap.period.end,
        period_key=gap.period.key,
        period_label=gap.period.label,
        scheduled_for=gap.slot,
        trigger=ReportRun.Trigger.SCHEDULE,
        status=Status.MISSED,
        created_at=now,
        finished_at=now,
        error=_missed_message(gap, now=now),
    )


def _missed_message(gap: _Gap, *, now: datetime) -> str:
    when = format_date(gap.slot.astimezone(ZoneInfo(gap.report.timezone)), "l j F Y, H:i T")
    hours = gap.report.catch_up_hours
    if gap.slot < now - timedelta(hours=hours):
        window = f"{hours} hour" if hours == 1 else f"{hours} hours"
        reason = f"and is older than the catch-up window of {window}"
    else:
        reason = "and a later slot has come since (only the latest missed run is sent late)"
    return f"Missed: the run for {when} did not happen (beat or the broker was down) {reason}. Use Run now to send it."


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
