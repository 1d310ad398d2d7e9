"""Period arithmetic: pure functions on dates, in the report's own timezone."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone
from django.utils.dateformat import format as format_date

DAILY, WEEKLY, MONTHLY, QUARTERLY, NONE = "daily", "weekly", "monthly", "quarterly", "none"


@dataclass(frozen=True)
class Period:
    """The span of data a run reports on: `start` to `end`, both days inclusive."""

    kind: str
    start: date
    end: date
    # For reports without a period: the scheduled instant the snapshot belongs to.
    at: datetime | None = None

    @property
    def key(self) -> str:
        """What makes two runs 'the same period' for the once-per-period rule."""
        if self.kind == NONE and self.at is not None:
            return f"at:{self.at.astimezone(UTC):%Y-%m-%dT%H:%M}Z"
        return f"{self.start.isoformat()}..{self.end.isoformat()}"

    @property
    def label(self) -> str:
        if self.kind == DAILY:
            return format_date(self.start, "j F Y")
        if self.kind == WEEKLY:
            return f"week of {format_date(self.start, 'j F Y')}"
        if self.kind == MONTHLY:
            return format_date(self.start, "F Y")
        if self.kind == QUARTERLY:
            return f"Q{(self.start.month - 1) // 3 + 1} {self.start.year}"
        if self.at is not None:
            return format_date(self.at, "j F Y, H:i T")
        return format_date(self.start, "j F Y")


# The last day a period of any kind may contain: the week of 27 December 9999 would end in
# the year 10000, which Python's dates (and so every run) cannot hold.
LAST_DAY = date(9999, 12, 26)


class PeriodOutOfRange(ValueError):
    """The period containing a day would end after 31 December 9999; the message says so in words."""


def period_containing(kind: str, day: date) -> Period:
    """Return the period of `kind` that contains `day`; PeriodOutOfRange past the last representable day."""
    if kind in (DAILY, NONE):
        return Period(kind, day, day)
    if kind == WEEKLY:
        start = day - timedelta(days=day.weekday())
        if start > date.max - timedelta(days=6):
            raise PeriodOutOfRange(TOO_FAR)
        return Period(kind, start, start + timedelta(days=6))
    if kind == MONTHLY:
        return Period(kind, day.replace(day=1), _last_day_of_month(day.year, day.month))
    if kind == QUARTERLY:
        first_month = 3 * ((day.month - 1) // 3) + 1
        return Period(kind, date(day.year, first_month, 1), _last_day_of_month(day.year, first_month + 2))
    raise ValueError(f"Unknown period kind {kind!r}.")


TOO_FAR = "This day is too far in the future: choose a day up to 26 December 9999."


def period_for_slot(kind: str, slot: datetime, tz: ZoneInfo) -> Period:
    """Return the period a run scheduled at `slot` reports on.

    That is the last complete period before the slot's local day; a report without a
    period reports on the slot itself.
    """
    local_day = slot.astimezone(tz).date()
    if kind == NONE:
        return Period(kind, local_day, local_day, at=slot.astimezone(tz))
    return period_containing(kind, period_containing(kind, local_day).start - timedelta(days=1))


def last_complete_period(kind: str, tz: ZoneInfo, moment: datetime | None = None) -> Period:
    """Return the last complete period before `moment` (default: now) in `tz`."""
    return period_for_slot(kind, moment or timezone.now(), tz)


def _last_day_of_month(year: int, month: int) -> date:
    # Not "the 1st of the next month minus a day": December 9999 has no next month.
    return date(year, month, calendar.monthrange(year, month)[1])
