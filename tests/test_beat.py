"""Beat's scheduler against the real database: it follows edits without reloading everything."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from project.celery import app as celery_app
from reporting import beat, schedules
from reporting.models import DataSource, Report
from reporting.schedules import CronSpec
from tests import beatkit
from tests.beatkit import entries_by_report, run_due, start_beat

# The shared beat fixtures (tests/beatkit.py): what beat publishes, and a look at the database every tick.
sent = beatkit.sent
look_at_the_database_on_every_tick = beatkit.look_at_the_database_on_every_tick

# A Friday; London is on UTC in November. The stock scheduler's window of hours (which
# ours keeps) loads crontab tasks from two hours before their hour, so every schedule
# here fires between 05:00 and 09:00 UTC, or every hour.
NOW = datetime(2026, 11, 20, 6, 50, tzinfo=UTC)
LONDON_7AM = CronSpec(minute="0", hour="7", timezone="Europe/London")
LONDON_7_05 = CronSpec(minute="5", hour="7", timezone="Europe/London")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def clock():
    """Time flowing from NOW; `clock.move_to(...)` jumps ahead."""
    with time_machine.travel(NOW, tick=True) as traveller:
        yield traveller


@pytest.fixture
def source(transactional_db):
    # transactional_db: beat closes stale connections and ends open transactions, as
    # it must in production, which a test wrapped in one transaction would not survive.
    return DataSource.objects.create(name="Positions API", base_url="https://api.example.test/v1/")


def scheduled(source: DataSource, slug: str, spec: CronSpec = LONDON_7AM) -> Report:
    report = Report.objects.create(
        name=slug.title(), slug=slug, data_source=source, template="reports/table.html", timezone=spec.timezone
    )
    schedules.save_schedule(report=report, spec=spec)
    return Report.objects.select_related("periodic_task__crontab").get(pk=report.pk)


# --- what it loads ----------------------------------------------------------------------


def test_it_loads_the_enabled_report_tasks_and_leaves_out_disabled_ones(source, clock):
    enabled = scheduled(source, "enabled")
    disabled = scheduled(source, "disabled")
    PeriodicTask.objects.filter(pk=disabled.periodic_task_id).update(enabled=False)

    scheduler = start_beat()

    assert set(entries_by_report(scheduler)) == {enabled.pk}


def test_it_reads_a_row_as_django_celery_beat_does_but_keeps_less_of_it(source, clock):
    report = scheduled(source, "positions")
    other = scheduled(source, "holdings")  # the same schedule
    task = PeriodicTask.objects.select_related("crontab").get(pk=report.periodic_task_id)
    crontabs: dict = {}

    stock = beat.ReportEntry(task, app=celery_app)
    shared = beat.ReportEntry(PeriodicTask.objects.get(pk=task.pk), app=celery_app, crontabs=crontabs)
    alike = beat.ReportEntry(PeriodicTask.objects.get(pk=other.periodic_task_id), app=celery_app, crontabs=crontabs)

    for field in ("name", "task", "args", "kwargs", "options", "last_run_at", "total_run_count"):
        assert getattr(shared, field) == getattr(stock, field), field
    assert type(shared.schedule) is type(stock.schedule) is beat.SlotCrontab
    assert shared.schedule == stock.schedule
    (shared_due, shared_next), (stock_due, stock_next) = shared.is_due(), stock.is_due()
    assert shared_due == stock_due and abs(shared_next - stock_next) < 1  # the clock moves on meanwhile
    assert alike.schedule is shared.schedule  # parsed once for both
    assert isinstance(shared.model, beat.TaskRow) and shared.model.pk == task.pk


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (LONDON_7AM, utc(2026, 11, 20, 7, 0)),
        (CronSpec(minute="30", hour="1", day_of_week="1-5", timezone="America/New_York"), utc(2026, 11, 23, 6, 30)),
        (CronSpec(minute="45", hour="12", day_of_month="1", timezone="Asia/Kolkata"), utc(2026, 12, 1, 7, 15)),
        (CronSpec(minute="*/20", hour="*", timezone="UTC"), utc(2026, 11, 20, 7, 0)),
    ],
)
def test_its_entries_are_due_when_reporting_schedules_says_they_are(source, clock, spec, expected):
    report = scheduled(source, "positions", spec)

    entry = entries_by_report(start_beat())[report.pk]
    now = datetime.now(UTC)
    is_due, seconds_to_go = entry.is_due()

    [next_run] = schedules.next_runs(spec, after=now, count=1)
    assert next_run == expected
    assert not is_due
    assert abs(now + timedelta(seconds=seconds_to_go) - next_run) < timedelta(seconds=1)


def test_it_sends_each_report_due_at_the_same_minute_once(source, clock, sent):
    reports = [scheduled(source, slug) for slug in ("first", "second", "third")]
    scheduler = start_beat()

    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(scheduler)
    run_due(scheduler)

    assert sorted(sent) == sorted(report.pk for report in reports)


def test_it_sends_a_burst_of_due_reports_in_a_few_messages_each_report_once(source, clock, sent, monkeypatch):
    monkeypatch.setattr(beat, "MESSAGES_PER_BURST", 3)
    reports = [scheduled(source, f"report-{number}") for number in range(10)]
    later = scheduled(source, "later", LONDON_7_05)
    scheduler = start_beat()

    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(scheduler)

    assert sorted(sent) == sorted(report.pk for report in reports)
    assert [len(kwargs["report_ids"]) for _task, kwargs, _headers in sent.messages] == [4, 4, 2]
    fired = {datetime.fromisoformat(kwargs["fired_at"]) for _task, kwargs, _headers in sent.messages}
    assert len(fired) == 1 and utc(2026, 11, 20, 7, 0, 1) <= fired.pop() < utc(2026, 11, 20, 7, 0, 5)
    assert all(headers["celery_beat_task"] for _task, _kwargs, headers in sent.messages)

    clock.move_to(utc(2026, 11, 20, 7, 5, 1))
    run_due(scheduler)
    assert sent[10:] == [later.pk]


def test_a_burst_keeps_each_tasks_queue(source, clock, sent):
    reports = [scheduled(source, slug) for slug in ("finance", "ops", "board")]
    PeriodicTask.objects.filter(pk=reports[2].periodic_task_id).update(queue="board")
    scheduler = start_beat()

    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(scheduler)

    default = celery_app.conf.task_default_queue
    assert sent.routing_keys == {reports[0].pk: default, reports[1].pk: default, reports[2].pk: "board"}
    assert len(sent.messages) == 3


# --- following edits ------------------------------------------------------------------------


def test_it_picks_up_an_edited_schedule_without_reloading_the_others(source, clock, sent):
    first, edited, third = (scheduled(source, slug) for slug in ("first", "edited", "third"))
    scheduler = start_beat()
    before = entries_by_report(scheduler)

    schedules.save_schedule(report=edited, spec=LONDON_7_05)
    after = entries_by_report(scheduler)

    assert after[first.pk] is before[first.pk]
    assert after[third.pk] is before[third.pk]
    assert after[edited.pk] is not before[edited.pk]
    assert after[edited.pk].schedule.minute == {5}
    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(scheduler)
    assert sorted(sent) == sorted([first.pk, third.pk])
    clock.move_to(utc(2026, 11, 20, 7, 5, 1))
    run_due(scheduler)
    assert sent[-1] == edited.pk
    assert len(sent) == 3
    assert {task for task, _kwargs, _headers in sent.messages} == {beat.BATCH_TASK}


def test_it_picks_up_a_crontab_edited_on_its_own_admin_page(source, clock, sent):
    report = scheduled(source, "positions")
    scheduler = start_beat()

    crontab = report.periodic_task.crontab
    crontab.minute = "5"
    crontab.save()  # the task row itself is untouched

    assert entries_by_report(scheduler)[report.pk].schedule.minute == {5}


def test_it_drops_a_deleted_task(source, clock, sent):
    kept = scheduled(source, "kept")
    deleted = scheduled(source, "deleted")
    scheduler = start_beat()

    deleted.delete()  # deletes its task and crontab too
    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(scheduler)

    assert set(entries_by_report(scheduler)) == {kept.pk}
    assert sent == [kept.pk]


def test_it_drops_a_task_disabled_in_the_admin(source, clock, sent):
    kept = scheduled(source, "kept")
    disabled = scheduled(source, "disabled")
    scheduler = start_beat()

    task = disabled.periodic_task
    task.enabled = False
    task.save()
    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(scheduler)

    assert set(entries_by_report(scheduler)) == {kept.pk}
    assert sent == [kept.pk]


def test_it_adds_a_new_report_task(source, clock, sent):
    existing = scheduled(source, "existing")
    scheduler = start_beat()

    added = scheduled(source, "added", LONDON_7_05)
    clock.move_to(utc(2026, 11, 20, 7, 5, 1))
    run_due(scheduler)

    assert set(entries_by_report(scheduler)) == {existing.pk, added.pk}
    assert sorted(sent) == sorted([existing.pk, added.pk])


def test_it_does_not_fire_again_when_an_edit_saves_an_older_last_run(source, clock, sent):
    report = scheduled(source, "positions")
    PeriodicTask.objects.filter(pk=report.periodic_task_id).update(last_run_at=utc(2026, 11, 19, 7, 0))
    scheduler = start_beat()
    form_loaded = Report.objects.select_related("periodic_task__crontab").get(pk=report.pk)
    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(scheduler)

    # A staff user saves the form they opened before 07:00: the task row goes back to
    # yesterday's last run, which would make 07:00 due again.
    clock.move_to(utc(2026, 11, 20, 7, 0, 30))
    form_loaded.name = "Renamed"
    schedules.sync_task_to_report(form_loaded)
    run_due(scheduler)

    assert sent == [report.pk]
    assert entries_by_report(scheduler)[report.pk].model.name == f"Report {report.pk}: Renamed"


# --- writing back -----------------------------------------------------------------------------


def test_it_writes_the_last_run_back_without_marking_the_task_edited(source, clock, sent):
    report = scheduled(source, "positions")
    scheduler = start_beat()
    task_before = PeriodicTask.objects.get(pk=report.periodic_task_id)
    changed_before = PeriodicTasks.last_change()
    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(scheduler)

    scheduler.sync()

    task = PeriodicTask.objects.get(pk=report.periodic_task_id)
    assert utc(2026, 11, 20, 7, 0, 1) <= task.last_run_at < utc(2026, 11, 20, 7, 1)
    assert task.total_run_count == 1
    assert task.date_changed == task_before.date_changed
    assert PeriodicTasks.last_change() == changed_before


def test_it_leaves_the_last_run_of_a_task_disabled_meanwhile_alone(source, clock, sent):
    report = scheduled(source, "positions")
    scheduler = start_beat()
    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(scheduler)  # beat writes its first run at once
    clock.move_to(utc(2026, 11, 21, 7, 0, 1))
    run_due(scheduler)  # and the next one only at its next sync

    task = PeriodicTask.objects.get(pk=report.periodic_task_id)
    task.enabled = False
    task.save()  # clears last_run_at, as django-celery-beat does for a disabled task
    scheduler.sync()

    task.refresh_from_db()
    assert sent == [report.pk, report.pk]
    assert task.last_run_at is None
    assert task.total_run_count == 1
