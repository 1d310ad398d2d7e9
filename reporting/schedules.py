"""A report's schedule: its own django-celery-beat PeriodicTask and CrontabSchedule.

The crontab is the one source of truth. Slots are computed from Celery's own parse of
the cron fields (day of month AND day of week, as Celery's beat matches them), so
what is shown and what the period logic assumes is what beat fires.

One schedule cannot be said in cron: "the last business day of the month". It is a
crontab that fires on every weekday that could be the last (days 26-31, Mon-Fri) plus a
rule, `Report.schedule_rule`, that keeps only the slots on the last weekday of their
month. The rule is applied here, to the slots (`next_runs`, `latest_slot`), so the next
runs shown, the catch-up sweep and the slot a scheduled run is for all agree; beat still
fires on the other candidate days, and reporting.runs.open_scheduled_run opens no run
then. It lives on the report, beside the task, because a PeriodicTask has no place for
it that django-celery-beat's own pages would keep. Business days are Monday to Friday:
public holidays are not known here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from celery.schedules import ParseException, crontab
from cron_descriptor import Options, get_description
from django.core.exceptions import ValidationError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from reporting.models import Report

RUN_TASK = "reporting.tasks.run_scheduled_report"
# How far to look for the next or previous slot: a schedule like "29 February, on a
# Monday" fires once in 28 years.
_SEARCH_DAYS = 366 * 29


@dataclass(frozen=True)
class CronSpec:
    minute: str = "0"
    hour: str = "7"
    day_of_month: str = "*"
    month_of_year: str = "*"
    day_of_week: str = "*"
    timezone: str = "UTC"
    rule: str = ""  # "" or LAST_BUSINESS_DAY: which of the crontab's slots are kept

    @classmethod
    def from_crontab(cls, schedule: CrontabSchedule, *, rule: str = "") -> CronSpec:
        return cls(
            minute=schedule.minute,
            hour=schedule.hour,
            day_of_month=schedule.day_of_month,
            month_of_year=schedule.month_of_year,
            day_of_week=schedule.day_of_week,
            timezone=str(schedule.timezone),
            rule=rule,
        )

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def expression(self) -> str:
        return f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} {self.day_of_week}"

    def parsed(self) -> crontab:
        """Celery's parse of the fields; raises ValidationError in words when one is invalid."""
        errors = {}
        for field, label in _FIELD_LABELS.items():
            try:
                crontab(**{field: getattr(self, field)})
            except (ValueError, TypeError, ParseException) as exc:
                errors[field] = f"{label}: {getattr(self, field)!r} is not valid here ({exc})."
        if errors:
            raise ValidationError(errors)
        try:
            return crontab(
                minute=self.minute,
                hour=self.hour,
                day_of_month=self.day_of_month,
                month_of_year=self.month_of_year,
                day_of_week=self.day_of_week,
            )
        except ValueError as exc:  # e.g. day 31 with only months that have no 31st
            raise ValidationError(f"This schedule never fires: {exc}") from exc


LAST_BUSINESS_DAY = "last_business_day"
RULES = ("", LAST_BUSINESS_DAY)


def is_last_business_day(day: date) -> bool:
    """Whether `day` is the last Monday-to-Friday of its month (public holidays are not known)."""
    if day.isoweekday() > 5:
        return False
    following = day + timedelta(days=1)
    while following.isoweekday() > 5:
        following += timedelta(days=1)
    return following.month != day.month


def keeps(rule: str, slot: datetime) -> bool:
    """Whether a slot of the crontab (aware, in the schedule's timezone) is one the rule keeps."""
    return rule != LAST_BUSINESS_DAY or is_last_business_day(slot.date())


_FIELD_LABELS = {
    "minute": "Minute (0-59)",
    "hour": "Hour (0-23)",
    "day_of_month": "Day of month (1-31)",
    "month_of_year": "Month (1-12)",
    "day_of_week": "Day of week (0-6, Sunday is 0, or mon-sun)",
}


def describe(spec: CronSpec) -> str:
    """The schedule in words, e.g. 'At 07:00, on day 1 of the month (Europe/London)'."""
    if spec.rule == LAST_BUSINESS_DAY:
        return f"{_describe_last_business_day(spec)} ({spec.timezone})"
    return f"{_cron_words(spec.expression)} ({spec.timezone})"


def _cron_words(expression: str) -> str:
    options = Options()
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return get_description(expression, options)
    except Exception:  # cron_descriptor raises several unrelated types on odd input
        return expression


LAST_BUSINESS_DAY_CRON = ("26-31", "*", "mon-fri")  # day of month, month, day of week: every possible last weekday


def _describe_last_business_day(spec: CronSpec) -> str:
    """cron_descriptor would say "every weekday between day 26 and 31": what the rule keeps, in words instead."""
    days = (spec.day_of_month, spec.month_of_year, spec.day_of_week)
    if days == LAST_BUSINESS_DAY_CRON and spec.minute.isdigit() and spec.hour.isdigit():
        return f"At {int(spec.hour):02}:{int(spec.minute):02} on the last business day (Mon–Fri) of the month"
    # The crontab edited elsewhere (e.g. on django-celery-beat's pages): the rule still applies to it.
    return f"{_cron_words(spec.expression)}, only on the last business day (Mon–Fri) of the month"


def validate(spec: CronSpec) -> None:
    """Raise ValidationError, in words, unless `spec` is a schedule that ever fires."""
    spec.parsed()
    if spec.rule not in RULES:
        raise ValidationError(f"Unknown schedule rule {spec.rule!r}.")
    if spec.timezone not in _zone_names():
        raise ValidationError({"timezone": f"Unknown timezone {spec.timezone!r}."})
    if next(iter(next_runs(spec, after=datetime.now(UTC), count=1)), None) is None:
        raise ValidationError("This schedule never fires: no date matches all of its fields.")


def next_runs(spec: CronSpec, *, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` slots strictly after `after`, aware, in the schedule's timezone."""
    after = after.astimezone(UTC)  # compare instants, not wall clocks (which repeat in autumn)
    slots = []
    for slot in _slots(spec, after.astimezone(spec.tz).date(), step=1):
        if slot > after:
            slots.append(slot)
            if len(slots) == count:
                break
    return slots


def latest_slot(spec: CronSpec, *, at_or_before: datetime) -> datetime | None:
    """The most recent slot at or before `at_or_before`, or None when there is none."""
    at_or_before = at_or_before.astimezone(UTC)  # compare instants, not wall clocks (which repeat in autumn)
    for slot in _slots(spec, at_or_before.astimezone(spec.tz).date(), step=-1):
        if slot <= at_or_before:
            return slot
    return None


def rule_keeps_latest_firing(spec: CronSpec, *, at_or_before: datetime) -> bool:
    """Whether the crontab's own latest slot (what beat just fired) is one the schedule's rule keeps.

    Always true without a rule. With one, beat also fires on the days the rule skips (the
    crontab cannot tell them apart); those firings are no slot of the schedule.
    """
    if not spec.rule:
        return True
    fired = latest_slot(replace(spec, rule=""), at_or_before=at_or_before)
    return fired is not None and keeps(spec.rule, fired)


def next_slot(cron: crontab, tz: ZoneInfo, *, after: datetime) -> datetime | None:
    """The first slot of an already parsed crontab strictly after `after`: what beat fires next."""
    after = after.astimezone(UTC)  # compare instants, not wall clocks (which repeat in autumn)
    for slot in slots(cron, tz, after.astimezone(tz).date(), step=1):
        if slot > after:
            return slot
    return None


def _slots(spec: CronSpec, first_day: date, *, step: int) -> Iterator[datetime]:
    """The crontab's slots that its rule keeps: what next_runs, latest_slot (and so runs and catch-up) see."""
    return (slot for slot in slots(spec.parsed(), spec.tz, first_day, step=step) if keeps(spec.rule, slot))


def slots(cron: crontab, tz: ZoneInfo, first_day: date, *, step: int) -> Iterator[datetime]:
    """Slots day by day from `first_day`, forwards (step 1) or backwards (step -1), in `tz`.

    A time skipped by a DST change fires at the change; a repeated time, once (its first).
    """
    times = sorted(time(hour, minute) for hour in cron.hour for minute in cron.minute)  # type: ignore[attr-defined]
    if step < 0:
        times.reverse()
    day = first_day
    for _ in range(_SEARCH_DAYS):
        if (
            day.month in cron.month_of_year  # type: ignore[attr-defined]
            and day.day in cron.day_of_month  # type: ignore[attr-defined]
            and day.isoweekday() % 7 in cron.day_of_week  # type: ignore[attr-defined]
        ):
            seen = set()
            for local_time in times:
                slot = localize(datetime.combine(day, local_time), tz)
                if slot not in seen:  # two gap times can land on the same instant
                    seen.add(slot)
                    yield slot
        day += timedelta(days=step)


def localize(naive: datetime, tz: ZoneInfo) -> datetime:
    """Attach `tz` to a wall-clock time; a time skipped by a DST change moves to the change."""
    aware = naive.replace(tzinfo=tz)
    if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive:
        return aware  # exists (for a repeated time, fold=0: the first occurrence)
    # In the spring gap: walk forward from the instant before the gap to the change.
    instant = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    before = instant.astimezone(tz).utcoffset()
    while instant.astimezone(tz).utcoffset() == before:
        instant += timedelta(minutes=1)
    return instant.replace(second=0, microsecond=0).astimezone(tz)


def _zone_names() -> set[str]:
    from zoneinfo import available_timezones

    return available_timezones() | {"UTC"}


def spec_for(report: Report) -> CronSpec | None:
    task = report.periodic_task
    if task is None or task.crontab is None:
        return None
    return CronSpec.from_crontab(task.crontab, rule=report.schedule_rule)


@transaction.atomic
def save_schedule(*, report: Report, spec: CronSpec) -> PeriodicTask:
    """Create or update the report's own PeriodicTask and CrontabSchedule from `spec`."""
    validate(spec)
    task = report.periodic_task
    schedule = task.crontab if task and task.crontab else CrontabSchedule()
    for field in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"):
        setattr(schedule, field, getattr(spec, field))
    schedule.timezone = spec.tz
    schedule.save()
    if task is None:
        task = PeriodicTask(task=RUN_TASK)
    task.name = task_name(report)
    task.crontab = schedule
    task.interval = task.solar = task.clocked = None
    task.kwargs = json.dumps({"report_id": report.pk})
    task.enabled = report.enabled
    task.description = f"Runs the report {report.name!r}. Edit its schedule on the report's page."
    task.save()  # save(), not update(): django-celery-beat tells beat to reload on save
    if report.periodic_task_id != task.pk or report.schedule_rule != spec.rule:
        Report.objects.filter(pk=report.pk).update(periodic_task=task, schedule_rule=spec.rule)
        report.periodic_task, report.schedule_rule = task, spec.rule
    return task


def task_name(report: Report) -> str:
    return f"Report {report.pk}: {report.name}"[:200]


def sync_task_to_report(report: Report) -> None:
    """Keep the task's name and enabled flag in step after the report itself was saved."""
    task = report.periodic_task
    if task is None:
        return
    if task.enabled != report.enabled or task.name != task_name(report):
        task.enabled = report.enabled
        task.name = task_name(report)
        task.save()


def delete_schedule(report: Report) -> None:
    """Delete the report's task and its crontab (never shared with another task)."""
    task = report.periodic_task
    if task is None:
        return
    schedule = task.crontab
    task.delete()
    if schedule is not None and not PeriodicTask.objects.filter(crontab=schedule).exists():
        schedule.delete()
