"""The sweeps that keep scheduled runs from being lost: catch-up of missed slots, stuck-run recovery."""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django_celery_beat.models import PeriodicTask

from project.celery import app as celery_app
from reporting import runs, sweeps, tasks
from reporting.models import Delivery, ReportRun
from reporting.periods import period_for_slot
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
LONDON = ZoneInfo("Europe/London")
Status = ReportRun.Status


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)


def daily_at_7(source, *, created: datetime, **fields):
    """A daily report for ann@ and bob@, scheduled at 07:00 London, created (and scheduled) at `created`."""
    with time_machine.travel(created):
        report = factories.report(source, **fields)
        factories.schedule(report, minute="0", hour="7")
    return report


def catch_up(moment: datetime, capture) -> sweeps.CatchUpResult:
    with time_machine.travel(moment), capture(execute=True):
        return sweeps.catch_up_missed_runs()


def beat_fires(report, moment: datetime) -> None:
    """Beat's task for `report`, run by a worker at `moment`."""
    with time_machine.travel(moment):
        tasks.run_scheduled_report(report_id=report.pk)


def scheduled_runs(report) -> list[tuple[date, str, str, datetime]]:
    rows = ReportRun.objects.filter(report=report).order_by("scheduled_for")
    return [(run.period_start, run.trigger, run.status, run.scheduled_for) for run in rows]


# --- catch-up -----------------------------------------------------------------------------


def test_it_runs_a_missed_slot_late_once_within_the_catch_up_window(
    source, use_smtp, django_capture_on_commit_callbacks
):
    report = daily_at_7(source, created=at(2026, 11, 20, 12, 0))

    # Beat was down at 07:00; the sweep comes by ten minutes later.
    result = catch_up(at(2026, 11, 21, 7, 10), django_capture_on_commit_callbacks)

    run = ReportRun.objects.get()
    assert result.caught_up == [run.pk] and result.missed == 0
    assert scheduled_runs(report) == [(date(2026, 11, 20), "catch-up", "sent", at(2026, 11, 21, 7, 0))]
    assert sorted(address for m in use_smtp.messages for address in use_smtp.recipients_of(m)) == [
        "ann@example.com",
        "bob@example.com",
    ]
    assert {m["Subject"] for m in use_smtp.messages} == {"Portfolio — 20 November 2026"}
    assert "Acme Corp" in use_smtp.messages[0].get_body(("html",)).get_content()

    again = catch_up(at(2026, 11, 21, 7, 15), django_capture_on_commit_callbacks)

    assert again == sweeps.CatchUpResult()
    assert ReportRun.objects.count() == 1
    assert len(use_smtp.messages) == 2


def test_beat_firing_late_after_a_catch_up_sends_nothing_again(source, django_capture_on_commit_callbacks):
    report = daily_at_7(source, created=at(2026, 11, 20, 12, 0))
    catch_up(at(2026, 11, 21, 7, 10), django_capture_on_commit_callbacks)

    # Beat comes back and fires the 07:00 slot late (its starting deadline allows it).
    beat_fires(report, at(2026, 11, 21, 7, 20))

    assert scheduled_runs(report) == [(date(2026, 11, 20), "catch-up", "sent", at(2026, 11, 21, 7, 0))]
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]


def test_it_leaves_a_slot_to_beat_during_the_grace_period(source, settings, django_capture_on_commit_callbacks):
    daily_at_7(source, created=at(2026, 11, 20, 12, 0))

    assert catch_up(at(2026, 11, 21, 7, 1), django_capture_on_commit_callbacks) == sweeps.CatchUpResult()
    assert not ReportRun.objects.exists()

    settings.REPORTING = {**settings.REPORTING, "CATCH_UP_GRACE_SECONDS": 30}
    result = catch_up(at(2026, 11, 21, 7, 1), django_capture_on_commit_callbacks)

    assert len(result.caught_up) == 1
    assert len(mail.outbox) == 2


def test_a_sweep_after_beat_ran_on_time_does_nothing(source, django_capture_on_commit_callbacks):
    report = daily_at_7(source, created=at(2026, 11, 20, 12, 0))
    beat_fires(report, at(2026, 11, 21, 7, 0, 2))

    result = catch_up(at(2026, 11, 21, 7, 10), django_capture_on_commit_callbacks)

    assert result == sweeps.CatchUpResult()
    assert scheduled_runs(report) == [(date(2026, 11, 20), "schedule", "sent", at(2026, 11, 21, 7, 0))]
    assert len(mail.outbox) == 2


def test_a_three_day_outage_sends_the_latest_slot_and_records_the_two_before_as_missed(
    source, django_capture_on_commit_callbacks
):
    report = daily_at_7(source, created=at(2026, 11, 18, 12, 0))
    beat_fires(report, at(2026, 11, 19, 7, 0, 2))
    beat_fires(report, at(2026, 11, 20, 7, 0, 2))
    mail.outbox.clear()

    # Down from Friday night to Monday morning: Saturday's, Sunday's and Monday's 07:00 never ran.
    result = catch_up(at(2026, 11, 23, 9, 0), django_capture_on_commit_callbacks)

    assert result.missed == 2 and len(result.caught_up) == 1
    assert scheduled_runs(report) == [
        (date(2026, 11, 18), "schedule", "sent", at(2026, 11, 19, 7, 0)),
        (date(2026, 11, 19), "schedule", "sent", at(2026, 11, 20, 7, 0)),
        (date(2026, 11, 20), "schedule", "missed", at(2026, 11, 21, 7, 0)),
        (date(2026, 11, 21), "schedule", "missed", at(2026, 11, 22, 7, 0)),
        (date(2026, 11, 22), "catch-up", "sent", at(2026, 11, 23, 7, 0)),
    ]
    assert ReportRun.objects.get(period_start=date(2026, 11, 21)).error == (
        "Missed: the run for Sunday 22 November 2026, 07:00 GMT did not happen (beat or the broker was down) "
        "and is older than the catch-up window of 24 hours. Use Run now to send it."
    )
    assert {m.subject for m in mail.outbox} == {"Portfolio — 22 November 2026"}
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]


def test_an_outage_longer_than_the_window_records_missed_runs_and_sends_nothing(source):
    report = daily_at_7(source, created=at(2026, 11, 18, 12, 0), catch_up_hours=12)
    beat_fires(report, at(2026, 11, 19, 7, 0, 2))
    beat_fires(report, at(2026, 11, 20, 7, 0, 2))
    mail.outbox.clear()

    with time_machine.travel(at(2026, 11, 23, 20, 0)):
        tasks.catch_up_missed_runs()  # the task beat runs every five minutes
        tasks.catch_up_missed_runs()

    missed = ReportRun.objects.filter(status=Status.MISSED).order_by("scheduled_for")
    assert [(run.period_start, run.trigger, run.finished_at) for run in missed] == [
        (date(2026, 11, 20), "schedule", at(2026, 11, 23, 20, 0)),
        (date(2026, 11, 21), "schedule", at(2026, 11, 23, 20, 0)),
        (date(2026, 11, 22), "schedule", at(2026, 11, 23, 20, 0)),
    ]
    assert missed.last().error == (
        "Missed: the run for Monday 23 November 2026, 07:00 GMT did not happen (beat or the broker was down) "
        "and is older than the catch-up window of 12 hours. Use Run now to send it."
    )
    assert not mail.outbox
    assert not Delivery.objects.filter(run__in=missed).exists()


def test_a_missed_run_can_still_be_sent_by_hand_and_is_not_recorded_again(source, django_capture_on_commit_callbacks):
    report = daily_at_7(source, created=at(2026, 11, 20, 12, 0), catch_up_hours=1)
    catch_up(at(2026, 11, 21, 9, 0), django_capture_on_commit_callbacks)

    with time_machine.travel(at(2026, 11, 21, 9, 5)):
        manual = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
        runs.execute_run(run_id=manual.pk)
    again = catch_up(at(2026, 11, 21, 9, 10), django_capture_on_commit_callbacks)

    assert again == sweeps.CatchUpResult()
    assert sorted((run.trigger, run.status) for run in ReportRun.objects.all()) == [
        ("manual", "sent"),
        ("schedule", "missed"),
    ]
    assert "older than the catch-up window of 1 hour." in ReportRun.objects.get(trigger="schedule").error
    assert {m.subject for m in mail.outbox} == {"Portfolio — 20 November 2026"}


def test_a_new_or_rescheduled_report_has_no_gaps(source, django_capture_on_commit_callbacks):
    daily_at_7(source, created=at(2026, 11, 20, 10, 0), slug="new")
    rescheduled = daily_at_7(source, created=at(2026, 11, 1, 12, 0), slug="rescheduled")
    with time_machine.travel(at(2026, 11, 20, 10, 30)):
        factories.schedule(rescheduled, minute="0", hour="6")

    result = catch_up(at(2026, 11, 20, 12, 0), django_capture_on_commit_callbacks)

    assert result == sweeps.CatchUpResult()
    assert not ReportRun.objects.exists()


def test_it_skips_disabled_and_unscheduled_reports(source, django_capture_on_commit_callbacks):
    disabled = daily_at_7(source, created=at(2026, 11, 1, 12, 0), slug="disabled")
    disabled.enabled = False
    disabled.save()
    with time_machine.travel(at(2026, 11, 1, 12, 0)):
        factories.report(source, slug="unscheduled")

    result = catch_up(at(2026, 11, 21, 7, 10), django_capture_on_commit_callbacks)

    assert result == sweeps.CatchUpResult()
    assert not ReportRun.objects.exists()
    assert not mail.outbox


def test_it_records_at_most_a_bounded_look_back_of_gaps(source, django_capture_on_commit_callbacks):
    report = daily_at_7(source, created=at(2026, 10, 1, 12, 0), catch_up_hours=0)

    result = catch_up(at(2026, 11, 21, 9, 0), django_capture_on_commit_callbacks)

    # Seven days back: the slots of 15 to 21 November.
    assert result.missed == 7
    assert [slot.day for *_rest, slot in scheduled_runs(report)] == [15, 16, 17, 18, 19, 20, 21]


def test_it_checks_many_reports_in_a_few_queries(
    source, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    reports = [daily_at_7(source, created=at(2026, 11, 20, 12, 0), slug=f"report-{n}") for n in range(250)]
    period = period_for_slot("daily", at(2026, 11, 21, 7, 0), LONDON)
    ReportRun.objects.bulk_create(
        ReportRun(
            report=report,
            period_start=period.start,
            period_end=period.end,
            period_key=period.key,
            trigger="schedule",
            status=Status.SENT,
        )
        for report in reports[1:]
    )

    # The reports; their runs, 200 reports a query; and creating the one late run.
    with (
        time_machine.travel(at(2026, 11, 21, 7, 10)),
        django_capture_on_commit_callbacks() as queued,
        django_assert_max_num_queries(10),
    ):
        result = sweeps.catch_up_missed_runs()

    assert [ReportRun.objects.get(pk=run_id).report for run_id in result.caught_up] == [reports[0]]
    assert len(queued) == 1


def test_the_sweeps_are_installed_as_periodic_tasks_beat_can_send():
    installed = dict(PeriodicTask.objects.filter(name__startswith="Reporting: ").values_list("task", "enabled"))

    assert installed["reporting.tasks.catch_up_missed_runs"] is True
    assert installed["reporting.tasks.recover_stuck_runs"] is True
    assert {"reporting.tasks.catch_up_missed_runs", "reporting.tasks.recover_stuck_runs"} <= set(celery_app.tasks)


# --- stuck runs ---------------------------------------------------------------------------

SILENT_SINCE = at(2026, 11, 21, 7, 2, 10)


def stall(run: ReportRun, status: str, *, recoveries: int = 0) -> None:
    """As if the worker holding `run` died at SILENT_SINCE while `status`: its lease ran out at 07:04:10."""
    ReportRun.objects.filter(pk=run.pk).update(
        status=status,
        heartbeat_at=SILENT_SINCE,
        lease_expires_at=SILENT_SINCE + timedelta(minutes=2),
        recoveries=recoveries,
    )


def recover(moment: datetime, capture, *, execute: bool = True) -> tuple[sweeps.RecoveryResult, list]:
    with time_machine.travel(moment), capture(execute=execute) as callbacks:
        result = sweeps.recover_stuck_runs()
    return result, callbacks


def manual_run(report) -> ReportRun:
    return runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)


def test_a_working_run_records_its_last_sign_of_life(report):
    run = manual_run(report)

    with time_machine.travel(at(2026, 11, 21, 7, 0, 5), tick=False):
        runs.execute_run(run_id=run.pk)

    run.refresh_from_db()
    assert run.heartbeat_at == at(2026, 11, 21, 7, 0, 5) == run.finished_at
    assert run.lease_expires_at is None


def test_a_run_stuck_while_sending_is_retried_once_without_sending_anyone_twice(
    report, use_smtp, django_capture_on_commit_callbacks
):
    run = manual_run(report)
    runs.execute_run(run_id=run.pk)
    # The worker died mid-send: ann was sent, bob's send was in flight, cy not tried yet.
    ReportRun.objects.filter(pk=run.pk).update(recipients=["ann@example.com", "bob@example.com", "cy@example.com"])
    run.deliveries.filter(address="bob@example.com").update(status=Delivery.Status.SENDING)
    stall(run, Status.SENDING)

    result, _ = recover(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert result == sweeps.RecoveryResult(retried=[run.pk])
    assert [len(use_smtp.messages_to(address)) for address in ("ann@example.com", "bob@example.com")] == [1, 1]
    assert len(use_smtp.messages_to("cy@example.com")) == 1
    assert (run.status, run.recoveries, run.lease_expires_at) == (Status.PARTIALLY_SENT, 1, None)
    assert run.error.startswith("1 of 3 addresses did not get the email: bob@example.com: Interrupted while sending")
    assert run.notes == (
        "The worker stopped responding while sending the email (last sign of life 21 November 2026, 07:02:10 GMT); "
        "retrying once."
    )


def test_a_run_that_stalls_again_after_its_retry_is_failed_with_the_reason(report, django_capture_on_commit_callbacks):
    run = manual_run(report)
    stall(run, Status.FETCHING)

    result, queued = recover(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks, execute=False)

    run.refresh_from_db()
    assert result.retried == [run.pk] and len(queued) == 1
    assert (run.status, run.lease_expires_at, run.recoveries) == (Status.QUEUED, None, 1)
    assert run.error == (
        "The worker stopped responding while fetching the data (last sign of life 21 November 2026, 07:02:10 GMT); "
        "retrying once."
    )

    stall(run, Status.FETCHING, recoveries=1)  # the retry's worker went silent too
    result, queued = recover(at(2026, 11, 21, 7, 10), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert result == sweeps.RecoveryResult(failed=[run.pk]) and not queued
    assert (run.status, run.finished_at, run.lease_expires_at) == (Status.FAILED, at(2026, 11, 21, 7, 10), None)
    assert run.error == (
        "The worker stopped responding again while fetching the data (last sign of life 21 November 2026, "
        "07:02:10 GMT); not retried. No address got the email; use Run now to try again."
    )
    assert run.notes.splitlines()[1].startswith("The worker stopped responding again while fetching the data")
    assert not mail.outbox


def test_a_run_that_stalls_again_while_sending_says_who_got_it_and_closes_the_rest(
    report, django_capture_on_commit_callbacks
):
    run = manual_run(report)
    runs.execute_run(run_id=run.pk)
    mail.outbox.clear()
    ReportRun.objects.filter(pk=run.pk).update(recipients=["ann@example.com", "bob@example.com", "cy@example.com"])
    run.deliveries.filter(address="bob@example.com").update(status=Delivery.Status.SENDING)
    Delivery.objects.create(run=run, address="cy@example.com")
    stall(run, Status.SENDING, recoveries=1)

    result, _ = recover(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert result.failed == [run.pk]
    assert run.status == Status.FAILED
    assert run.error.endswith(
        "not retried. 1 of 3 addresses got the email; resend it to the others from this run's page."
    )
    assert dict(run.deliveries.values_list("address", "status")) == {
        "ann@example.com": "sent",
        "bob@example.com": "failed",
        "cy@example.com": "failed",
    }
    assert "Interrupted while sending" in run.deliveries.get(address="bob@example.com").error
    assert not mail.outbox


def test_a_run_with_a_live_lease_is_left_alone(report, django_capture_on_commit_callbacks):
    run = manual_run(report)
    stall(run, Status.SENDING)

    result, queued = recover(at(2026, 11, 21, 7, 4), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert result == sweeps.RecoveryResult() and not queued
    assert (run.status, run.recoveries, run.error) == (Status.SENDING, 0, "")


def test_a_queued_run_is_left_alone_until_a_worker_took_it_and_went_silent(report, django_capture_on_commit_callbacks):
    waiting = manual_run(report)  # queued, no lease: its message waits for a worker
    taken = manual_run(report)
    stall(taken, Status.QUEUED)  # claimed, then the worker died before fetching

    result, _ = recover(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks)

    waiting.refresh_from_db()
    taken.refresh_from_db()
    assert result.retried == [taken.pk]
    assert (waiting.status, waiting.recoveries) == (Status.QUEUED, 0)
    assert taken.status == Status.SENT
    assert taken.notes.startswith("The worker stopped responding while starting the run")
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]


def test_a_stuck_run_is_retried_once_when_two_sweeps_find_it(report, django_capture_on_commit_callbacks):
    run = manual_run(report)
    stall(run, Status.RENDERING)

    first, queued_first = recover(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks, execute=False)
    second, queued_second = recover(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks, execute=False)

    assert first.retried == [run.pk] and len(queued_first) == 1
    assert second == sweeps.RecoveryResult() and not queued_second
