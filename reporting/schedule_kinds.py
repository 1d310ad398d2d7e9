"""The schedule picker in words: each kind of schedule staff pick, as cron fields (and a rule), and back.

Pure functions, no database. The report form derives its cron fields from a picked kind
(reporting.forms), and shows a stored schedule as the kind it matches; the admin's
schedule_picker.js does the same in the browser, as a convenience only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from celery.schedules import ParseException, crontab

from reporting.schedules import LAST_BUSINESS_DAY, LAST_BUSINESS_DAY_CRON

DAILY = "daily"
WEEKDAYS = "weekdays"
WEEKLY = "weekly"
MONTHLY_DAY = "monthly_day"
MONTHLY_FIRST_WEEKDAY = "monthly_first_weekday"
MONTHLY_LAST_BUSINESS_DAY = "monthly_last_business_day"
QUARTERLY = "quarterly"
CUSTOM = "custom"

KIND_CHOICES = [
    (DAILY, "Daily"),
    (WEEKDAYS, "Weekdays (Mon–Fri)"),
    (WEEKLY, "Weekly on…"),
    (MONTHLY_DAY, "Monthly on day…"),
    (MONTHLY_FIRST_WEEKDAY, "Monthly on the first…"),
    (MONTHLY_LAST_BUSINESS_DAY, "Monthly on the last business day (Mon–Fri)"),
    (QUARTERLY, "Quarterly on day… of Jan, Apr, Jul, Oct"),
    (CUSTOM, "Custom (the cron fields below)"),
]
# Cron's day numbers (Sunday 0), listed from Monday.
WEEKDAY_CHOICES = [
    ("1", "Monday"),
    ("2", "Tuesday"),
    ("3", "Wednesday"),
    ("4", "Thursday"),
    ("5", "Friday"),
    ("6", "Saturday"),
    ("0", "Sunday"),
]
QUARTER_MONTHS = "1,4,7,10"
FIRST_WEEK = "1-7"


@dataclass(frozen=True)
class Picked:
    """A kind with its time (all but custom), weekday (weekly, first weekday) and day of month (monthly, quarterly)."""

    kind: str = CUSTOM
    at: time = time(7, 0)
    weekday: int = 1
    day: int = 1


@dataclass(frozen=True)
class CronFields:
    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str
    rule: str = ""


def cron_for(picked: Picked) -> CronFields:
    """The cron fields (and rule) of a picked kind other than custom."""
    minute, hour = str(picked.at.minute), str(picked.at.hour)
    days = {
        DAILY: ("*", "*", "*"),
        WEEKDAYS: ("*", "*", "mon-fri"),
        WEEKLY: ("*", "*", str(picked.weekday)),
        MONTHLY_DAY: (str(picked.day), "*", "*"),
        MONTHLY_FIRST_WEEKDAY: (FIRST_WEEK, "*", str(picked.weekday)),
        MONTHLY_LAST_BUSINESS_DAY: LAST_BUSINESS_DAY_CRON,
        QUARTERLY: (str(picked.day), QUARTER_MONTHS, "*"),
    }[picked.kind]
    rule = LAST_BUSINESS_DAY if picked.kind == MONTHLY_LAST_BUSINESS_DAY else ""
    return CronFields(minute, hour, *days, rule=rule)


_EVERY_DAY_OF_MONTH = set(range(1, 32))
_EVERY_MONTH = set(range(1, 13))
_EVERY_WEEKDAY = set(range(7))


def kind_of(fields: CronFields) -> Picked:
    """The kind that stored cron fields (and rule) match; custom when none does (or they do not parse)."""
    try:
        cron = crontab(
            minute=fields.minute,
            hour=fields.hour,
            day_of_month=fields.day_of_month,
            month_of_year=fields.month_of_year,
            day_of_week=fields.day_of_week,
        )
    except (ValueError, TypeError, ParseException):
        return Picked()
    if len(cron.minute) != 1 or len(cron.hour) != 1:  # type: ignore[attr-defined]
        return Picked()
    at = time(next(iter(cron.hour)), next(iter(cron.minute)))  # type: ignore[attr-defined]
    days_of_month, months, weekdays = set(cron.day_of_month), set(cron.month_of_year), set(cron.day_of_week)  # type: ignore[attr-defined]
    one_weekday = next(iter(weekdays)) if len(weekdays) == 1 else None
    one_day = next(iter(days_of_month)) if len(days_of_month) == 1 else None
    if fields.rule == LAST_BUSINESS_DAY:
        matches = months == _EVERY_MONTH and days_of_month == set(range(26, 32)) and weekdays == set(range(1, 6))
        return Picked(MONTHLY_LAST_BUSINESS_DAY, at) if matches else Picked()
    if fields.rule:
        return Picked()
    if months == {1, 4, 7, 10} and one_day and weekdays == _EVERY_WEEKDAY:
        return Picked(QUARTERLY, at, day=one_day)
    if months != _EVERY_MONTH:
        return Picked()
    if days_of_month == _EVERY_DAY_OF_MONTH:
        if weekdays == _EVERY_WEEKDAY:
            return Picked(DAILY, at)
        if weekdays == set(range(1, 6)):
            return Picked(WEEKDAYS, at)
        if one_weekday is not None:
            return Picked(WEEKLY, at, weekday=one_weekday)
    elif one_day and weekdays == _EVERY_WEEKDAY:
        return Picked(MONTHLY_DAY, at, day=one_day)
    elif days_of_month == set(range(1, 8)) and one_weekday is not None:
        return Picked(MONTHLY_FIRST_WEEKDAY, at, weekday=one_weekday)
    return Picked()
