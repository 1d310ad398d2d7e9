"""Waiting for the stack to settle once the faults stop: generous, bounded, and said out loud.

The harness must not mistake its own impatience for a lost email, so it waits for what the
service promises (every slot gets a run, every run reaches an end, every failure is alerted)
up to a bound well past the service's own timers; whatever is still open at the bound is
then a finding, not a timing accident.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import close_old_connections
from django.utils import timezone

from reporting.models import Alert, Delivery, ReportRun

from .scenario import ChaosReport, pause_schedules
from .smtp import ChaosSmtp

QUIET_SECONDS = 8.0  # nothing changed in the database or the mailbox for this long
MINUTE = timedelta(minutes=1)


def terminal_statuses() -> tuple[str, ...]:
    return (*ReportRun.FINISHED, ReportRun.Status.HELD)


def alerted_statuses() -> tuple[str, ...]:
    """The statuses the service alerts about, as its alert sweep defines them."""
    try:
        from reporting.alerts import ALERTED_STATUSES
    except ImportError:
        return (ReportRun.Status.FAILED, ReportRun.Status.HELD, ReportRun.Status.MISSED)
    return tuple(ALERTED_STATUSES)


def period_key(slot: datetime) -> str:
    """The period key of a report without a period, for the slot (reporting.periods.Period.key)."""
    return f"at:{slot.astimezone(UTC):%Y-%m-%dT%H:%M}Z"


def slots_between(first: datetime, last: datetime) -> list[datetime]:
    slots, slot = [], first
    while slot <= last:
        slots.append(slot)
        slot += MINUTE
    return slots


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def ceil_minute(moment: datetime) -> datetime:
    floor = floor_minute(moment)
    return floor if floor == moment else floor + MINUTE


def slots_without_run(reports: list[ChaosReport], first: datetime, last: datetime) -> list[tuple[int, datetime]]:
    """(report id, slot) of each slot in [first, last] whose period has no scheduled run."""
    wanted = {(report.pk, period_key(slot)): slot for report in reports for slot in slots_between(first, last)}
    have = set(
        ReportRun.objects.filter(
            report_id__in=[report.pk for report in reports],
            trigger__in=ReportRun.SCHEDULED_TRIGGERS,
            period_key__in={key for _pk, key in wanted},
        ).values_list("report_id", "period_key")
    )
    return sorted((pk, slot) for (pk, key), slot in wanted.items() if (pk, key) not in have)


@dataclass
class Settled:
    last_slot: datetime  # the last slot beat fired before the schedules were paused
    slots_waited: float  # seconds until every slot had its run
    settle_waited: float  # seconds until everything had finished and was quiet
    settled: bool  # False: the bound was reached first
    settled_at: datetime


def settle(
    reports: list[ChaosReport],
    *,
    first_slot: datetime,
    smtp: ChaosSmtp,
    slots_bound: float,
    settle_bound: float,
    say: Callable[[str], None],
) -> Settled:
    """Wait for every slot to have a run, pause the schedules, then wait for the end of every run."""
    started = time.monotonic()
    last_slot = _pause_when_every_slot_has_a_run(reports, first_slot, bound=slots_bound, say=say)
    slots_waited = time.monotonic() - started
    say(f"schedules paused after the slot of {last_slot:%H:%M} UTC ({slots_waited:.0f}s); waiting for every run")
    started = time.monotonic()
    settled = _wait_until_quiet(reports, smtp, bound=settle_bound)
    settle_waited = time.monotonic() - started
    say(f"{'settled' if settled else 'NOT settled'} after {settle_waited:.0f}s")
    return Settled(last_slot, slots_waited, settle_waited, settled, timezone.now())


def _pause_when_every_slot_has_a_run(
    reports: list[ChaosReport], first_slot: datetime, *, bound: float, say: Callable[[str], None]
) -> datetime:
    """Pause the schedules at a moment when every slot so far has its run; at the bound, pause anyway.

    Never within a few seconds of a minute: the slot beat is about to fire must be clearly
    before or clearly after the pause.
    """
    deadline = time.monotonic() + bound
    while True:
        close_old_connections()
        now = timezone.now()
        last = floor_minute(now)
        second = (now - last).total_seconds()
        if 3 <= second <= 50:
            missing = slots_without_run(reports, first_slot, last)
            if not missing or time.monotonic() >= deadline:
                pause_schedules(reports)
                if missing:
                    say(f"{len(missing)} slots still have no run after {bound:.0f}s: pausing anyway")
                return last
        time.sleep(1.0)


def _wait_until_quiet(reports: list[ChaosReport], smtp: ChaosSmtp, *, bound: float) -> bool:
    """True once no run is open, none waits for its alert, and nothing changed for QUIET_SECONDS."""
    deadline = time.monotonic() + bound
    last_state, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        close_old_connections()
        state = _state(reports, smtp)
        if state != last_state:
            last_state, quiet_since = state, time.monotonic()
        open_runs, unalerted = state[0], state[1]
        if not open_runs and not unalerted and time.monotonic() - quiet_since >= QUIET_SECONDS:
            return True
        time.sleep(1.0)
    return False


def _state(reports: list[ChaosReport], smtp: ChaosSmtp) -> tuple[int, ...]:
    runs = ReportRun.objects.filter(report_id__in=[report.pk for report in reports])
    open_runs = runs.exclude(status__in=terminal_statuses()).count()
    unalerted = runs.filter(status__in=alerted_statuses(), alerted_at__isnull=True).count()
    deliveries = Delivery.objects.filter(run__in=runs)
    return (
        open_runs,
        unalerted,
        runs.count(),
        deliveries.exclude(status__in=(Delivery.Status.QUEUED, Delivery.Status.SENDING)).count(),
        Alert.objects.count(),
        len(smtp.mailbox()),
    )
