"""One beat leads: the lock of the database (reporting.leadership), and beat standing by without it.

The lock is the real one of the test database: an advisory lock on PostgreSQL, a lock file
(under the test's own folder) on SQLite. Its holders here are separate connections or
separate open files, which exclude each other as two processes would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from celery import signals
from celery.beat import Service
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from project.celery import app as celery_app
from reporting import beat, leadership, schedules
from reporting.beat import ReportScheduler
from reporting.leadership import AdvisoryLock, FileLock, Leadership
from reporting.models import DataSource, Heartbeat, Report
from reporting.schedules import CronSpec
from tests import beatkit
from tests.beatkit import run_due

pytestmark = pytest.mark.django_db(transaction=True)  # the lock's own connection sees only what is committed

sent = beatkit.sent
look_at_the_database_on_every_tick = beatkit.look_at_the_database_on_every_tick

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 20, 6, 50, tzinfo=UTC)  # a Friday; London is on UTC in November


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def wait_until(predicate: Callable[[], bool], *, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture(autouse=True)
def try_the_lock_on_every_tick(monkeypatch):
    monkeypatch.setattr(beat, "LEADERSHIP_CHECK_SECONDS", 0)


@pytest.fixture(autouse=True)
def beat_logs_at_info(caplog):
    caplog.set_level(logging.INFO, logger=beat.logger.name)


@pytest.fixture
def new_lock(settings, tmp_path) -> Iterator[Callable[[], Leadership]]:
    """Makes holders of the test database's beat lock; each lets go at the end of the test."""
    settings.VAR_DIR = tmp_path / "var"
    made: list[Leadership] = []

    def make() -> Leadership:
        made.append(leadership.for_database())
        return made[-1]

    yield make
    for lock in made:
        lock.release()


@pytest.fixture
def new_beat(new_lock) -> Iterator[Callable[[], ReportScheduler]]:
    """Makes beats that lead by the test database's lock; each is closed at the end of the test."""
    made: list[ReportScheduler] = []

    def make() -> ReportScheduler:
        made.append(ReportScheduler(app=celery_app, leadership=new_lock()))
        return made[-1]

    yield make
    for scheduler in made:
        scheduler.close()


def leads(scheduler: ReportScheduler) -> bool:
    """Tick once: does it hold the lock now?"""
    scheduler.tick()
    return scheduler.leadership.still_held()


def cut_off(lock: Leadership) -> None:
    """Take the lock away from its holder behind its back, as a server restart or a removed file would."""
    if isinstance(lock, AdvisoryLock):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND datname = current_database()",
                [leadership.APPLICATION_NAME],
            )
    else:
        os.unlink(lock.path)


# --- the lock ----------------------------------------------------------------------------


def test_it_is_the_lock_of_the_database_vendor(new_lock, settings):
    lock = new_lock()

    if connection.vendor == "postgresql":
        assert isinstance(lock, AdvisoryLock)
        assert lock.params["dbname"] == connection.settings_dict["NAME"]
    else:
        assert isinstance(lock, FileLock)
        assert lock.path == settings.VAR_DIR / "beat.lock"


def test_one_holder_at_a_time_until_it_lets_go(new_lock):
    first, second = new_lock(), new_lock()

    assert first.try_acquire()
    assert first.try_acquire()  # taking it again keeps it
    assert not second.try_acquire()
    assert first.still_held()
    assert not second.still_held()

    first.release()

    assert not first.still_held()
    assert second.try_acquire()
    assert not first.try_acquire()


HOLD_THE_LOCK = """
import json, os, time
from pathlib import Path
from reporting.leadership import AdvisoryLock, FileLock

spec = json.loads(os.environ["BEAT_LOCK"])
lock = FileLock(Path(spec["path"])) if "path" in spec else AdvisoryLock(spec["params"])
assert lock.try_acquire(), "the lock is taken"
print("holding", flush=True)
time.sleep(300)
"""


def test_a_holder_killed_with_sigkill_leaves_the_lock_free(new_lock):
    lock = new_lock()
    spec = {"path": str(lock.path)} if isinstance(lock, FileLock) else {"params": lock.params}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK],
        cwd=ROOT,
        env={**os.environ, "BEAT_LOCK": json.dumps(spec)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        assert not lock.try_acquire()

        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)

        assert wait_until(lock.try_acquire), "the dead holder's lock was not freed"
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()


def test_a_holder_whose_lock_is_cut_off_no_longer_holds_it_and_may_take_it_again(new_lock):
    lock = new_lock()
    assert lock.try_acquire()

    cut_off(lock)

    assert not lock.still_held()
    assert wait_until(lock.try_acquire)
    assert lock.still_held()


def test_a_lock_file_replaced_under_its_holder_is_not_held_any_more(tmp_path):
    path = tmp_path / "beat.lock"
    holder, newcomer = FileLock(path), FileLock(path)
    assert holder.try_acquire()

    path.unlink()  # e.g. someone cleaning var/: a newcomer locks a new file of that name
    assert newcomer.try_acquire()

    assert not holder.still_held()
    assert not holder.try_acquire()
    newcomer.release()


def test_beats_of_two_databases_on_one_server_do_not_block_each_other(new_lock):
    if connection.vendor != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    ours = new_lock()
    another_database = AdvisoryLock({**ours.params, "dbname": "postgres"})
    try:
        assert ours.try_acquire()
        assert another_database.try_acquire()
    finally:
        another_database.release()


# --- beat, leading or standing by ------------------------------------------------------------


@pytest.fixture
def clock():
    """Time flowing from NOW; `clock.move_to(...)` jumps ahead."""
    with time_machine.travel(NOW, tick=True) as traveller:
        yield traveller


@pytest.fixture
def source():
    return DataSource.objects.create(name="Positions API", base_url="https://api.example.test/v1/")


@pytest.fixture
def published() -> Iterator[list[str]]:
    """The name of every task published, the sweeps' included."""
    names: list[str] = []

    def record(sender=None, **_kwargs) -> None:
        names.append(sender)

    signals.before_task_publish.connect(record, weak=False)
    yield names
    signals.before_task_publish.disconnect(record)


def scheduled(source: DataSource, slug: str, *, minute: str = "0") -> Report:
    """A report due at 07:`minute` London time every day."""
    report = Report.objects.create(
        name=slug.title(), slug=slug, data_source=source, template="reports/table.html", timezone="Europe/London"
    )
    schedules.save_schedule(report=report, spec=CronSpec(minute=minute, hour="7", timezone="Europe/London"))
    return report


def every_minute(task: str) -> PeriodicTask:
    """A sweep-like task, as migration 0005 installs the sweeps."""
    interval, _created = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    return PeriodicTask.objects.create(name=task, task=task, interval=interval)


def test_a_standby_publishes_and_writes_nothing_then_leads_when_the_lock_frees(
    source, clock, sent, published, new_lock, new_beat, caplog
):
    report = scheduled(source, "positions")
    every_minute("tests.sweep")
    other_beat = new_lock()
    assert other_beat.try_acquire()
    rows_before = list(PeriodicTask.objects.order_by("pk").values())
    changed_before = PeriodicTasks.last_change()
    standby = new_beat()

    run_due(standby)
    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(standby)
    standby.sync()

    assert published == []
    assert list(PeriodicTask.objects.order_by("pk").values()) == rows_before
    assert PeriodicTasks.last_change() == changed_before
    assert not Heartbeat.objects.exists()
    assert caplog.text.count("beat: standing by, another beat leads") == 1
    assert "beat: now leading" not in caplog.text

    other_beat.release()
    run_due(standby)

    assert sent == [report.pk]
    assert "tests.sweep" in published
    assert caplog.text.count("beat: now leading") == 1
    assert Heartbeat.objects.filter(name="beat").exists()


def test_a_beat_taking_the_lead_fires_what_fell_due_meanwhile_and_not_what_the_last_leader_fired(
    source, clock, sent, new_beat, caplog
):
    at_seven = scheduled(source, "at-seven")
    at_five_past = scheduled(source, "at-five-past", minute="5")
    returning = new_beat()
    run_due(returning)  # leads, and reads the schedule
    cut_off(returning.leadership)
    other = new_beat()
    assert wait_until(lambda: leads(other))
    run_due(returning)  # finds its lock gone and stands by

    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(other)
    run_due(returning)
    other.sync()  # as it does within minutes of a burst
    clock.move_to(utc(2026, 11, 20, 7, 0, 30))
    other.leadership.release()  # it dies: the lock goes with it, and it never ticks again

    clock.move_to(utc(2026, 11, 20, 7, 6, 0))  # 07:05 fell due while nobody led
    run_due(returning)
    run_due(returning)

    assert sent == [at_seven.pk, at_five_past.pk]
    assert caplog.text.count("beat: now leading") == 3


def test_a_leader_that_loses_its_lock_publishes_nothing_until_it_leads_again(
    source, clock, sent, new_lock, new_beat, caplog
):
    report = scheduled(source, "positions")
    leader = new_beat()
    run_due(leader)
    cut_off(leader.leadership)
    usurper = new_lock()
    assert wait_until(usurper.try_acquire)

    clock.move_to(utc(2026, 11, 20, 7, 0, 1))
    run_due(leader)  # finds its lock gone
    run_due(leader)  # and the lock taken

    assert sent == []
    assert "beat: lost the lead" in caplog.text
    assert "beat: standing by, another beat leads" in caplog.text

    usurper.release()
    run_due(leader)

    assert sent == [report.pk]


def test_celery_beat_leads_by_the_lock_of_its_database(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    service = Service(app=celery_app, scheduler_cls=ReportScheduler)

    signals.beat_init.send(sender=service)

    scheduler = service.scheduler
    try:
        assert isinstance(scheduler.leadership, AdvisoryLock if connection.vendor == "postgresql" else FileLock)
    finally:
        scheduler.close()
