import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from reporting import schedules
from reporting.models import DataSource, Report
from reporting.schedules import CronSpec
from tests import factories

LONDON = "Europe/London"
NEW_YORK = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def in_utc(moments: list[datetime]) -> list[datetime]:
    """As UTC: an aware time in a repeated hour never equals a time in another zone (PEP 495)."""
    return [moment.astimezone(UTC) for moment in moments]


# --- CronSpec.parsed and validate -----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("minute", "61", "Minute (0-59)"),
        ("hour", "24", "Hour (0-23)"),
        ("day_of_month", "0", "Day of month (1-31)"),
        ("day_of_month", "32", "Day of month (1-31)"),
        ("month_of_year", "13", "Month (1-12)"),
        ("day_of_week", "7", "Day of week (0-6, Sunday is 0"),
    ],
)
def test_it_explains_an_out_of_range_field_in_words(field, value, words):
    spec = CronSpec(**{field: value})

    with pytest.raises(ValidationError) as caught:
        spec.parsed()

    assert list(caught.value.message_dict) == [field]
    [message] = caught.value.message_dict[field]
    assert message.startswith(f"{words}")
    assert f"'{value}' is not valid here" in message


def test_it_names_every_invalid_field_at_once():
    with pytest.raises(ValidationError) as caught:
        CronSpec(minute="61", hour="24").parsed()

    assert set(caught.value.message_dict) == {"minute", "hour"}


def test_it_accepts_celery_day_names_and_lists():
    cron = CronSpec(minute="0,30", hour="7-9", day_of_week="mon-fri").parsed()

    assert cron.minute == {0, 30}
    assert cron.hour == {7, 8, 9}
    assert cron.day_of_week == {1, 2, 3, 4, 5}


def test_it_validates_a_schedule_that_fires():
    schedules.validate(CronSpec(minute="0", hour="7", day_of_month="29", month_of_year="2", timezone=LONDON))


def test_it_rejects_an_unknown_timezone():
    with pytest.raises(ValidationError) as caught:
        schedules.validate(CronSpec(timezone="Europe/Atlantis"))

    assert caught.value.message_dict == {"timezone": ["Unknown timezone 'Europe/Atlantis'."]}


def test_it_rejects_a_schedule_that_never_fires_in_words():
    with pytest.raises(ValidationError) as caught:
        schedules.validate(CronSpec(minute="0", hour="7", day_of_month="31", month_of_year="2"))

    [message] = caught.value.messages
    assert message.startswith("This schedule never fires: ")
    assert "'31'" in message


# --- describe -------------------------------------------------------------------------


def test_it_describes_a_monthly_schedule_in_words():
    spec = CronSpec(minute="0", hour="7", day_of_month="1", timezone=LONDON)

    assert schedules.describe(spec) == "At 07:00, on day 1 of the month (Europe/London)"


def test_it_describes_a_weekly_schedule_in_words():
    spec = CronSpec(minute="30", hour="6", day_of_week="1", timezone=NEW_YORK)

    assert schedules.describe(spec) == "At 06:30, only on Monday (America/New_York)"


def test_it_falls_back_to_the_expression_when_it_cannot_describe_it():
    assert schedules.describe(CronSpec(minute="x")) == "x 7 * * * (UTC)"


# --- next_runs and latest_slot --------------------------------------------------------


def test_it_lists_next_runs_in_the_schedules_timezone():
    spec = CronSpec(minute="0", hour="7", timezone=LONDON)

    runs = schedules.next_runs(spec, after=utc(2026, 7, 1, 12, 0), count=3)

    assert in_utc(runs) == [utc(2026, 7, 2, 6, 0), utc(2026, 7, 3, 6, 0), utc(2026, 7, 4, 6, 0)]
    assert all(run.tzinfo == ZoneInfo(LONDON) for run in runs)
    assert [run.strftime("%H:%M %Z") for run in runs] == ["07:00 BST"] * 3


def test_it_lists_next_runs_strictly_after_an_exact_slot():
    spec = CronSpec(minute="0", hour="7", timezone="UTC")

    assert in_utc(schedules.next_runs(spec, after=utc(2026, 7, 1, 7, 0), count=1)) == [utc(2026, 7, 2, 7, 0)]


def test_it_keeps_local_time_across_the_spring_change_in_london():
    spec = CronSpec(minute="0", hour="7", timezone=LONDON)

    runs = schedules.next_runs(spec, after=utc(2026, 3, 27, 12, 0), count=3)

    assert in_utc(runs) == [utc(2026, 3, 28, 7, 0), utc(2026, 3, 29, 6, 0), utc(2026, 3, 30, 6, 0)]


def test_it_keeps_local_time_across_the_autumn_change_in_new_york():
    spec = CronSpec(minute="0", hour="7", timezone=NEW_YORK)

    runs = schedules.next_runs(spec, after=utc(2026, 10, 31, 12, 0), count=2)

    assert in_utc(runs) == [utc(2026, 11, 1, 12, 0), utc(2026, 11, 2, 12, 0)]


def test_it_fires_a_london_job_in_the_spring_gap_once_at_the_change():
    spec = CronSpec(minute="30", hour="1", timezone=LONDON)

    runs = schedules.next_runs(spec, after=utc(2026, 3, 28, 12, 0), count=2)

    assert in_utc(runs) == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    assert runs[0].strftime("%H:%M %Z") == "02:00 BST"


def test_it_fires_a_new_york_job_in_the_spring_gap_once_at_the_change():
    spec = CronSpec(minute="30", hour="2", timezone=NEW_YORK)

    runs = schedules.next_runs(spec, after=utc(2026, 3, 7, 12, 0), count=2)

    assert in_utc(runs) == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]


def test_it_fires_several_gap_times_of_one_day_once():
    spec = CronSpec(minute="0,30", hour="1", timezone=LONDON)

    runs = schedules.next_runs(spec, after=utc(2026, 3, 28, 12, 0), count=3)

    assert in_utc(runs) == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0), utc(2026, 3, 30, 0, 30)]


def test_it_fires_a_london_job_in_the_repeated_autumn_hour_once_at_its_first_occurrence():
    spec = CronSpec(minute="30", hour="1", timezone=LONDON)

    runs = schedules.next_runs(spec, after=utc(2026, 10, 24, 12, 0), count=2)

    assert in_utc(runs) == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_it_fires_a_new_york_job_in_the_repeated_autumn_hour_once_at_its_first_occurrence():
    spec = CronSpec(minute="30", hour="1", timezone=NEW_YORK)

    runs = schedules.next_runs(spec, after=utc(2026, 10, 31, 12, 0), count=2)

    assert in_utc(runs) == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_it_does_not_fire_again_in_the_second_pass_of_the_repeated_hour():
    spec = CronSpec(minute="30", hour="1", timezone=LONDON)

    runs = schedules.next_runs(spec, after=utc(2026, 10, 25, 0, 30), count=1)

    assert in_utc(runs) == [utc(2026, 10, 26, 1, 30)]


def test_it_needs_both_day_of_month_and_day_of_week_to_match_as_celery_does():
    spec = CronSpec(minute="0", hour="7", day_of_month="13", day_of_week="5", timezone="UTC")

    runs = schedules.next_runs(spec, after=utc(2026, 1, 1), count=3)

    assert in_utc(runs) == [utc(2026, 2, 13, 7, 0), utc(2026, 3, 13, 7, 0), utc(2026, 11, 13, 7, 0)]
    assert {run.strftime("%A %d") for run in runs} == {"Friday 13"}


def test_it_treats_day_of_week_0_as_sunday():
    spec = CronSpec(minute="0", hour="7", day_of_week="0", timezone="UTC")

    [run] = schedules.next_runs(spec, after=utc(2026, 5, 11), count=1)

    assert run == utc(2026, 5, 17, 7, 0)
    assert run.strftime("%A") == "Sunday"


def test_it_finds_a_leap_day_schedule_years_ahead():
    spec = CronSpec(minute="0", hour="7", day_of_month="29", month_of_year="2", timezone="UTC")

    assert in_utc(schedules.next_runs(spec, after=utc(2026, 1, 1), count=1)) == [utc(2028, 2, 29, 7, 0)]


def test_it_counts_an_exact_slot_as_the_latest_slot():
    spec = CronSpec(minute="0", hour="7", timezone=LONDON)

    assert schedules.latest_slot(spec, at_or_before=utc(2026, 6, 1, 6, 0)).astimezone(UTC) == utc(2026, 6, 1, 6, 0)


def test_it_finds_the_previous_days_slot_just_before_todays():
    spec = CronSpec(minute="0", hour="7", timezone=LONDON)

    slot = schedules.latest_slot(spec, at_or_before=utc(2026, 6, 1, 5, 59))

    assert slot == utc(2026, 5, 31, 6, 0)
    assert slot.tzinfo == ZoneInfo(LONDON)


def test_it_finds_the_latest_slot_after_the_spring_gap():
    spec = CronSpec(minute="30", hour="1", timezone=LONDON)

    assert schedules.latest_slot(spec, at_or_before=utc(2026, 3, 29, 1, 0)).astimezone(UTC) == utc(2026, 3, 29, 1, 0)
    assert schedules.latest_slot(spec, at_or_before=utc(2026, 3, 29, 0, 59)).astimezone(UTC) == utc(2026, 3, 28, 1, 30)


def test_it_finds_the_first_occurrence_as_latest_slot_in_the_repeated_hour():
    spec = CronSpec(minute="30", hour="1", timezone=LONDON)

    assert schedules.latest_slot(spec, at_or_before=utc(2026, 10, 25, 1, 45)).astimezone(UTC) == utc(
        2026, 10, 25, 0, 30
    )


def test_it_finds_the_latest_slot_for_new_york_across_the_spring_change():
    spec = CronSpec(minute="30", hour="2", timezone=NEW_YORK)

    assert schedules.latest_slot(spec, at_or_before=utc(2026, 3, 8, 12, 0)).astimezone(UTC) == utc(2026, 3, 8, 7, 0)
    assert schedules.latest_slot(spec, at_or_before=utc(2026, 3, 9, 12, 0)).astimezone(UTC) == utc(2026, 3, 9, 6, 30)


def test_it_finds_the_latest_slot_with_both_day_fields():
    spec = CronSpec(minute="0", hour="7", day_of_month="13", day_of_week="5", timezone="UTC")

    assert schedules.latest_slot(spec, at_or_before=utc(2026, 11, 12)).astimezone(UTC) == utc(2026, 3, 13, 7, 0)


# --- the report's PeriodicTask and CrontabSchedule -----------------------------------


@pytest.fixture
def data_source(db):
    return DataSource.objects.create(name="Positions API", base_url="https://api.example.test/v1/")


def make_report(data_source: DataSource, slug: str = "positions", **fields) -> Report:
    fields.setdefault("name", "Daily positions")
    return Report.objects.create(slug=slug, data_source=data_source, template="reports/table.html", **fields)


@pytest.fixture
def report(data_source):
    return make_report(data_source)


MONTHLY_LONDON = CronSpec(minute="0", hour="7", day_of_month="1", timezone=LONDON)


@pytest.mark.django_db
def test_it_creates_the_reports_own_task_and_crontab(report):
    task = schedules.save_schedule(report=report, spec=MONTHLY_LONDON)

    assert factories.report_tasks().count() == 1
    assert factories.report_crontabs().count() == 1
    task.refresh_from_db()
    assert task.task == "reporting.tasks.run_scheduled_report"
    assert task.name == f"Report {report.pk}: Daily positions"
    assert json.loads(task.kwargs) == {"report_id": report.pk}
    assert json.loads(task.args) == []
    assert task.enabled is True
    assert task.interval is None and task.solar is None and task.clocked is None
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_month, crontab.month_of_year, crontab.day_of_week) == (
        "0",
        "7",
        "1",
        "*",
        "*",
    )
    assert str(crontab.timezone) == LONDON
    assert Report.objects.get(pk=report.pk).periodic_task_id == task.pk


@pytest.mark.django_db
def test_it_gives_two_reports_with_the_same_cron_two_crontabs(data_source):
    first = make_report(data_source, slug="first", name="First")
    second = make_report(data_source, slug="second", name="Second")

    first_task = schedules.save_schedule(report=first, spec=MONTHLY_LONDON)
    second_task = schedules.save_schedule(report=second, spec=MONTHLY_LONDON)

    assert first_task.pk != second_task.pk
    assert first_task.crontab_id != second_task.crontab_id
    assert factories.report_crontabs().count() == 2
    assert json.loads(second_task.kwargs) == {"report_id": second.pk}


@pytest.mark.django_db
def test_it_reads_back_the_spec_it_saved(report):
    schedules.save_schedule(report=report, spec=MONTHLY_LONDON)

    reloaded = Report.objects.select_related("periodic_task__crontab").get(pk=report.pk)

    assert schedules.spec_for(reloaded) == MONTHLY_LONDON


@pytest.mark.django_db
def test_it_has_no_spec_for_an_unscheduled_report(report):
    assert schedules.spec_for(report) is None


@pytest.mark.django_db
def test_it_edits_the_schedule_in_place(report):
    task = schedules.save_schedule(report=report, spec=MONTHLY_LONDON)
    weekly = CronSpec(minute="30", hour="6", day_of_week="1", timezone=NEW_YORK)

    edited = schedules.save_schedule(report=report, spec=weekly)

    assert (edited.pk, edited.crontab_id) == (task.pk, task.crontab_id)
    assert factories.report_tasks().count() == 1
    assert factories.report_crontabs().count() == 1
    crontab = factories.report_crontabs().get()
    assert (crontab.minute, crontab.hour, crontab.day_of_month, crontab.day_of_week) == ("30", "6", "*", "1")
    assert str(crontab.timezone) == NEW_YORK
    reloaded = Report.objects.get(pk=report.pk)
    assert schedules.spec_for(reloaded) == weekly


@pytest.mark.parametrize(
    "spec",
    [CronSpec(hour="24"), CronSpec(day_of_month="31", month_of_year="2"), CronSpec(timezone="Mars/Olympus")],
    ids=["out of range", "never fires", "unknown timezone"],
)
@pytest.mark.django_db
def test_it_refuses_to_save_an_invalid_schedule(report, spec):
    with pytest.raises(ValidationError):
        schedules.save_schedule(report=report, spec=spec)

    assert not factories.report_tasks().exists()
    assert not factories.report_crontabs().exists()


@pytest.mark.django_db
def test_it_saves_a_disabled_reports_task_disabled(data_source):
    report = make_report(data_source, enabled=False)

    task = schedules.save_schedule(report=report, spec=MONTHLY_LONDON)

    assert PeriodicTask.objects.get(pk=task.pk).enabled is False
    assert Report.objects.get(pk=report.pk).enabled is False


@pytest.mark.django_db
def test_it_disables_the_task_when_the_report_is_disabled(report):
    task = schedules.save_schedule(report=report, spec=MONTHLY_LONDON)

    report.enabled = False
    report.save()
    schedules.sync_task_to_report(report)

    assert PeriodicTask.objects.get(pk=task.pk).enabled is False
    assert Report.objects.get(pk=report.pk).enabled is False


@pytest.mark.django_db
def test_it_renames_the_task_when_the_report_is_renamed(report):
    task = schedules.save_schedule(report=report, spec=MONTHLY_LONDON)

    report.name = "Weekly positions"
    report.save()
    schedules.sync_task_to_report(report)

    assert PeriodicTask.objects.get(pk=task.pk).name == f"Report {report.pk}: Weekly positions"


@pytest.mark.django_db
def test_it_syncs_nothing_for_an_unscheduled_report(report):
    schedules.sync_task_to_report(report)

    assert not factories.report_tasks().exists()


@pytest.mark.django_db
def test_it_disables_the_report_when_its_task_is_disabled_on_its_own(report):
    task = schedules.save_schedule(report=report, spec=MONTHLY_LONDON)

    task.enabled = False
    task.save()

    assert Report.objects.get(pk=report.pk).enabled is False

    task.enabled = True
    task.save()

    assert Report.objects.get(pk=report.pk).enabled is True


@pytest.mark.django_db
def test_it_deletes_the_task_and_crontab_with_the_report(data_source):
    kept = make_report(data_source, slug="kept", name="Kept")
    kept_task = schedules.save_schedule(report=kept, spec=MONTHLY_LONDON)
    report = make_report(data_source)
    schedules.save_schedule(report=report, spec=MONTHLY_LONDON)

    report.delete()

    assert list(factories.report_tasks()) == [kept_task]
    assert list(factories.report_crontabs().values_list("pk", flat=True)) == [kept_task.crontab_id]


@pytest.mark.django_db
def test_it_deletes_the_task_and_crontab_on_a_bulk_delete(report):
    schedules.save_schedule(report=report, spec=MONTHLY_LONDON)

    Report.objects.filter(pk=report.pk).delete()

    assert not factories.report_tasks().exists()
    assert not factories.report_crontabs().exists()


@pytest.mark.django_db
def test_it_deletes_a_schedule_and_keeps_the_report(report):
    schedules.save_schedule(report=report, spec=MONTHLY_LONDON)
    report = Report.objects.select_related("periodic_task__crontab").get(pk=report.pk)

    schedules.delete_schedule(report)

    assert not factories.report_tasks().exists()
    assert not factories.report_crontabs().exists()
    reloaded = Report.objects.get(pk=report.pk)
    assert reloaded.periodic_task_id is None
    assert schedules.spec_for(reloaded) is None


# --- what django-celery-beat's scheduler does with it ---------------------------------


def beat_entry(task: PeriodicTask, last_run_at: datetime) -> ModelEntry:
    entry = ModelEntry(PeriodicTask.objects.select_related("crontab").get(pk=task.pk))
    entry.last_run_at = last_run_at
    return entry


@pytest.mark.django_db
def test_it_is_due_under_beat_at_the_slot_in_the_schedules_timezone(report):
    saved_at = utc(2026, 7, 15, 12, 0)  # 08:00 in New York
    spec = CronSpec(minute="30", hour="11", timezone=NEW_YORK)
    task = schedules.save_schedule(report=report, spec=spec)
    [slot] = schedules.next_runs(spec, after=saved_at, count=1)
    assert slot == utc(2026, 7, 15, 15, 30)
    entry = beat_entry(task, last_run_at=saved_at)
    crontab = PeriodicTask.objects.get(pk=task.pk).crontab.schedule

    with time_machine.travel(slot - timedelta(minutes=1), tick=False):
        assert entry.is_due().is_due is False
        assert crontab.is_due(saved_at).is_due is False
    with time_machine.travel(slot, tick=False):
        assert entry.is_due().is_due is True
        assert crontab.is_due(saved_at).is_due is True
    with time_machine.travel(slot + timedelta(seconds=30), tick=False):
        assert entry.is_due().is_due is True


@pytest.mark.django_db
def test_it_is_not_due_again_under_beat_until_the_next_slot(report):
    spec = CronSpec(minute="30", hour="11", timezone=NEW_YORK)
    task = schedules.save_schedule(report=report, spec=spec)
    fired_at = utc(2026, 7, 15, 15, 30, 5)
    [next_slot] = schedules.next_runs(spec, after=fired_at, count=1)
    entry = beat_entry(task, last_run_at=fired_at)

    with time_machine.travel(next_slot - timedelta(minutes=1), tick=False):
        assert entry.is_due().is_due is False
    with time_machine.travel(next_slot, tick=False):
        assert entry.is_due().is_due is True
    assert next_slot == utc(2026, 7, 16, 15, 30)


@pytest.mark.django_db
def test_it_is_due_under_beat_at_the_first_occurrence_of_a_repeated_hour(report):
    spec = CronSpec(minute="30", hour="1", timezone=LONDON)
    task = schedules.save_schedule(report=report, spec=spec)
    saved_at = utc(2026, 10, 24, 12, 0)
    [slot] = schedules.next_runs(spec, after=saved_at, count=1)
    entry = beat_entry(task, last_run_at=saved_at)

    with time_machine.travel(slot - timedelta(minutes=1), tick=False):
        assert entry.is_due().is_due is False
    with time_machine.travel(slot, tick=False):
        assert entry.is_due().is_due is True
    assert slot.astimezone(UTC) == utc(2026, 10, 25, 0, 30)


@pytest.mark.django_db
def test_it_gives_beats_late_spring_gap_firing_the_slot_next_runs_showed(report):
    spec = CronSpec(minute="30", hour="1", timezone=LONDON)
    task = schedules.save_schedule(report=report, spec=spec)
    saved_at = utc(2026, 3, 28, 12, 0)
    [slot] = schedules.next_runs(spec, after=saved_at, count=1)
    entry = beat_entry(task, last_run_at=saved_at)
    assert slot.astimezone(UTC) == utc(2026, 3, 29, 1, 0)

    # Celery reads 01:30, which does not exist that day, as 01:30 GMT: half an hour after
    # the change instant that next_runs shows. The run it starts still gets that slot.
    with time_machine.travel(slot, tick=False):
        assert entry.is_due().is_due is False
    with time_machine.travel(utc(2026, 3, 29, 1, 30), tick=False):
        assert entry.is_due().is_due is True
    assert schedules.latest_slot(spec, at_or_before=utc(2026, 3, 29, 1, 30)) == slot


def test_the_schedule_in_words_says_both_day_fields_must_match_as_celery_fires_it():
    """cron-descriptor 2.x says "…or on Monday" for the first Monday; Celery fires only on days matching both."""
    first_monday = CronSpec(minute="0", hour="7", day_of_month="1-7", day_of_week="1", timezone="Europe/London")

    words = schedules.describe(first_monday)

    assert words == "At 07:00, between day 1 and 7 of the month, only on Monday (Europe/London)"
    assert " or " not in words
    slots = schedules.next_runs(first_monday, after=datetime(2026, 12, 2, tzinfo=UTC), count=3)
    assert [slot.date().isoformat() for slot in slots] == ["2026-12-07", "2027-01-04", "2027-02-01"]
