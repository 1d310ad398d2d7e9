"""Daylight-saving nights through the real scheduler path: beat ticks, the worker's task, the sweep.

Beat (reporting.beat.ReportScheduler) is ticked every few minutes through the night of a
clock change; what it publishes is run by `tasks.run_scheduled_reports` at once, as a
worker would, and the catch-up sweep checks that nothing was missed. A time skipped in
spring runs once, at the change; a time repeated in autumn runs once, at its first
occurrence; each period is sent once.
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail

from reporting import beat, schedules, tasks
from reporting.models import ReportRun
from reporting.services import catch_up as sweeps
from tests import beatkit, factories

sent = beatkit.sent
look_at_the_database_on_every_tick = beatkit.look_at_the_database_on_every_tick

TICK = timedelta(minutes=3)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def through_the_night(start: datetime, end: datetime, sent: beatkit.Sent) -> None:
    """Start beat at `start` and tick it every few minutes until `end`.

    After each tick a worker runs what beat published, and the catch-up sweep comes by:
    beat and the sweep must agree on when a slot is, or the sweep would run it as missed.
    """
    worked_on = len(sent.messages)
    with time_machine.travel(start, tick=True) as clock:
        scheduler = beatkit.start_beat()
        moment = start
        while moment < end:
            moment += TICK
            clock.move_to(moment)
            beatkit.run_due(scheduler)
            for task, kwargs, _headers in sent.messages[worked_on:]:
                assert task == beat.BATCH_TASK
                tasks.run_scheduled_reports(**kwargs)
            worked_on = len(sent.messages)
            assert sweeps.catch_up_missed_runs() == sweeps.CatchUpResult()
        scheduler.sync()


@pytest.mark.parametrize(
    ("zone", "cron_hour", "beat_from", "expected_slot", "expected_label"),
    [
        # 01:30 does not exist on 28 March 2027 in London (01:00 GMT → 02:00 BST): 02:00 BST.
        ("Europe/London", "1", utc(2027, 3, 27, 23, 40), utc(2027, 3, 28, 1, 0), "27 March 2027"),
        # 01:30 happens twice on 25 October 2026 in London (02:00 BST → 01:00 GMT): the first, BST.
        ("Europe/London", "1", utc(2026, 10, 24, 23, 10), utc(2026, 10, 25, 0, 30), "24 October 2026"),
        # 02:30 does not exist on 14 March 2027 in New York (02:00 EST → 03:00 EDT): 03:00 EDT.
        ("America/New_York", "2", utc(2027, 3, 14, 5, 10), utc(2027, 3, 14, 7, 0), "13 March 2027"),
        # 01:30 happens twice on 1 November 2026 in New York (02:00 EDT → 01:00 EST): the first, EDT.
        ("America/New_York", "1", utc(2026, 11, 1, 4, 10), utc(2026, 11, 1, 5, 30), "31 October 2026"),
    ],
    ids=["london-spring", "london-autumn", "new-york-spring", "new-york-autumn"],
)
def test_a_daily_report_runs_once_through_a_clock_change(
    transactional_db, httpserver, sent, zone, cron_hour, beat_from, expected_slot, expected_label
):
    """Beat starts less than two hours before the hour (see tests/test_beat.py) and runs until well after."""
    httpserver.expect_request("/api/positions").respond_with_json(factories.POSITIONS)
    source = factories.data_source(httpserver.url_for("/api/"))
    with time_machine.travel(beat_from - timedelta(minutes=5)):
        report = factories.report(source, timezone=zone)
        factories.schedule(report, minute="30", hour=cron_hour)
    spec = schedules.spec_for(report)
    # In UTC: Python never finds a repeated local time equal to an instant in another zone.
    assert [slot.astimezone(UTC) for slot in schedules.next_runs(spec, after=beat_from, count=1)] == [expected_slot]

    through_the_night(beat_from, expected_slot + timedelta(hours=3), sent)

    assert sent == [report.pk], "beat fired the slot more than once (or not at all)"
    fired_at = datetime.fromisoformat(sent.messages[0][1]["fired_at"])
    assert expected_slot <= fired_at < expected_slot + TICK + timedelta(seconds=5)
    run = ReportRun.objects.get()
    assert (run.trigger, run.status, run.scheduled_for) == ("schedule", "sent", expected_slot)
    assert run.period_label == expected_label
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]
    assert {m.subject for m in mail.outbox} == {f"Portfolio — {expected_label}"}


def test_beat_restarted_between_the_two_repeated_times_does_not_fire_again(transactional_db, httpserver, sent):
    httpserver.expect_request("/api/positions").respond_with_json(factories.POSITIONS)
    source = factories.data_source(httpserver.url_for("/api/"))
    with time_machine.travel(utc(2026, 10, 24, 23, 0)):
        report = factories.report(source, timezone="Europe/London")
        factories.schedule(report, minute="30", hour="1")

    through_the_night(utc(2026, 10, 24, 23, 10), utc(2026, 10, 25, 1, 10), sent)  # fires 01:30 BST, then stops
    through_the_night(utc(2026, 10, 25, 1, 10), utc(2026, 10, 25, 3, 0), sent)  # a new beat, at 01:10 GMT

    assert sent == [report.pk]
    assert ReportRun.objects.get().scheduled_for == utc(2026, 10, 25, 0, 30)
    assert len(mail.outbox) == 2


@pytest.mark.parametrize(("minute", "fold"), [(45, 0), (10, 1)])
def test_the_next_slot_after_a_repeated_time_is_the_next_day(minute, fold):
    spec = schedules.CronSpec(minute="30", hour="1", timezone="Europe/London")
    # 01:45 BST and 01:10 GMT (the second 01:10, fold 1) both come after the one 01:30 slot (BST).
    after = datetime(2026, 10, 25, 1, minute, fold=fold, tzinfo=ZoneInfo("Europe/London"))

    assert [slot.astimezone(UTC) for slot in schedules.next_runs(spec, after=after, count=1)] == [
        utc(2026, 10, 26, 1, 30)
    ]
    assert schedules.latest_slot(spec, at_or_before=after).astimezone(UTC) == utc(2026, 10, 25, 0, 30)
