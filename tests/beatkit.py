"""Driving reporting.beat.ReportScheduler in tests: start it, tick it, record what it publishes.

Bind the fixtures in a test module to use them there:
`sent = beatkit.sent` and `look_at_the_database_on_every_tick = beatkit.look_at_the_database_on_every_tick`.
"""

from __future__ import annotations

import pytest
from celery import signals

from project.celery import app as celery_app
from reporting import beat, schedules
from reporting.beat import ReportScheduler


class Sent(list):
    """Report ids in the order beat publishes them (to the tests' in-memory broker), and its messages."""

    def __init__(self):
        super().__init__()
        self.messages: list[tuple[str, dict, dict]] = []  # (task, kwargs, headers)
        self.routing_keys: dict[int, str] = {}  # report id → the queue its message went to

    def record(self, sender=None, body=None, headers=None, routing_key=None, **_kwargs) -> None:
        kwargs = body[1]
        if sender == schedules.RUN_TASK:
            self.append(kwargs["report_id"])
        elif sender == beat.BATCH_TASK:
            self.extend(kwargs["report_ids"])
        else:
            return
        self.messages.append((sender, kwargs, headers))
        self.routing_keys.update((report_id, routing_key) for report_id in kwargs.get("report_ids", []))


@pytest.fixture
def sent():
    recorder = Sent()
    signals.before_task_publish.connect(recorder.record, weak=False)
    yield recorder
    signals.before_task_publish.disconnect(recorder.record)
    with celery_app.connection_for_write() as connection:
        connection.default_channel.queue_purge(celery_app.conf.task_default_queue)


@pytest.fixture(autouse=True)
def look_at_the_database_on_every_tick(monkeypatch):
    monkeypatch.setattr(beat, "CHANGE_CHECK_SECONDS", 0)


def start_beat() -> ReportScheduler:
    scheduler = ReportScheduler(app=celery_app)
    scheduler.tick()  # the first tick builds the heap
    return scheduler


def entries_by_report(scheduler: ReportScheduler) -> dict[int, object]:
    return {
        entry.kwargs["report_id"]: entry for entry in scheduler.schedule.values() if entry.task == schedules.RUN_TASK
    }


def run_due(scheduler: ReportScheduler) -> None:
    """Tick as beat does until it would sleep: every due task is sent."""
    for _ in range(1000):
        if scheduler.tick() > 0:
            return
    raise AssertionError("beat kept ticking without sleeping")
