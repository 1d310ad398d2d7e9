"""Every run reaches an end: each state not yet at an end has a deadline, and the deadline sweep
publishes a run past it once more, then fails it with the reason and an alert."""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail

from reporting import alerts, archive, health, overview, runs
from reporting.models import AuditEvent, Delivery, ReportRun
from reporting.services import deadlines
from reporting.services.enqueue import enqueue
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
LONDON = ZoneInfo("Europe/London")
Status = ReportRun.Status
SILENT_SINCE = datetime(2026, 11, 21, 7, 2, 10, tzinfo=LONDON)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)


def stall(run: ReportRun, status: str, *, recoveries: int = 0) -> None:
    """As if the worker holding `run` died at SILENT_SINCE while `status`: its lease ran out at 07:04:10."""
    expiry = SILENT_SINCE + timedelta(minutes=2)
    ReportRun.objects.filter(pk=run.pk).update(
        status=status, heartbeat_at=SILENT_SINCE, lease_expires_at=expiry, deadline_at=expiry, recoveries=recoveries
    )


def lose_message(run: ReportRun, status: str = Status.QUEUED, *, deadline: datetime, recoveries: int = 0) -> None:
    """As if the run's message was lost: it waits, no worker holds it, its deadline is `deadline`."""
    ReportRun.objects.filter(pk=run.pk).update(
        status=status, lease_expires_at=None, deadline_at=deadline, recoveries=recoveries
    )


def sweep(moment: datetime, capture, *, execute: bool = True) -> tuple[deadlines.DeadlineResult, list]:
    with time_machine.travel(moment), capture(execute=execute) as callbacks:
        result = deadlines.enforce_run_deadlines()
    return result, callbacks


def manual_run(report) -> ReportRun:
    return runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)


# --- every state has a deadline -----------------------------------------------------------


def test_a_new_run_gets_the_queue_deadline_and_a_finished_one_none(report, settings):
    settings.REPORTING = {**settings.REPORTING, "RUN_QUEUE_DEADLINE_SECONDS": 600}
    with time_machine.travel(at(2026, 11, 21, 7, 0), tick=False):
        run = manual_run(report)
    assert run.deadline_at == at(2026, 11, 21, 7, 10)

    with time_machine.travel(at(2026, 11, 21, 7, 0, 5), tick=False):
        runs.execute_run(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == Status.SENT
    assert (run.deadline_at, run.lease_expires_at) == (None, None)
    assert run.heartbeat_at == at(2026, 11, 21, 7, 0, 5) == run.finished_at


def test_a_run_waiting_to_retry_has_a_deadline_past_its_retry_time(httpserver, settings):
    settings.REPORTING = {**settings.REPORTING, "RUN_QUEUE_DEADLINE_SECONDS": 600}
    httpserver.expect_request("/api/positions").respond_with_data("busy", status=503, headers={"Retry-After": "120"})
    run = manual_run(factories.report(factories.data_source(httpserver.url_for("/api/"))))

    with time_machine.travel(at(2026, 11, 21, 7, 0), tick=False), pytest.raises(runs.RunRetryLater) as retry:
        runs.execute_run(run_id=run.pk, final_attempt=False)

    run.refresh_from_db()
    assert run.status == Status.RETRYING and run.get_status_display() == "Waiting to retry"
    assert retry.value.retry_in >= 120
    assert run.deadline_at == at(2026, 11, 21, 7, 10) + timedelta(seconds=retry.value.retry_in)
    assert run.error.startswith("Will retry:")


# --- a lost message ------------------------------------------------------------------------


def test_a_queued_run_whose_message_was_lost_is_published_again_and_sent_once(
    report, use_smtp, django_capture_on_commit_callbacks
):
    # The broker was restarted empty while the run waited: no worker will ever see its message.
    waiting = manual_run(report)
    lost = manual_run(report)
    lose_message(waiting, deadline=at(2026, 11, 21, 7, 20))
    lose_message(lost, deadline=at(2026, 11, 21, 7, 10))

    result, _ = sweep(at(2026, 11, 21, 7, 11), django_capture_on_commit_callbacks)

    waiting.refresh_from_db()
    lost.refresh_from_db()
    assert result == deadlines.DeadlineResult(published_again=[lost.pk])
    assert (waiting.status, waiting.recoveries) == (Status.QUEUED, 0)  # within its deadline: its message may come
    assert lost.status == Status.SENT
    assert lost.notes == (
        "At 21 November 2026, 07:11:00 GMT, its message did not reach a worker by its deadline (lost by the broker, "
        "or never published); published again once."
    )
    assert sorted(address for m in use_smtp.messages for address in use_smtp.recipients_of(m)) == [
        "ann@example.com",
        "bob@example.com",
    ]
    event = AuditEvent.objects.get(action=AuditEvent.Action.REPUBLISHED)
    assert (event.run, event.actor_name) == (lost, "system")


def test_a_run_whose_retry_message_was_lost_is_published_again(report, django_capture_on_commit_callbacks):
    run = manual_run(report)
    lose_message(run, Status.RETRYING, deadline=at(2026, 11, 21, 7, 10))

    result, _ = sweep(at(2026, 11, 21, 7, 11), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert result.published_again == [run.pk]
    assert run.status == Status.SENT
    assert "its retry did not start by its deadline (the retry message was lost); published again once" in run.notes


def test_a_message_lost_twice_fails_the_run_in_words_and_alerts_the_owner(
    report, django_user_model, django_capture_on_commit_callbacks
):
    report.owner = django_user_model.objects.create_user("olga", "olga@example.com")
    report.save()
    run = manual_run(report)
    lose_message(run, deadline=at(2026, 11, 21, 7, 10))
    first, queued = sweep(at(2026, 11, 21, 7, 11), django_capture_on_commit_callbacks, execute=False)
    assert first.published_again == [run.pk] and len(queued) == 1  # ... and the broker loses it again

    with time_machine.travel(at(2026, 11, 21, 7, 12)):
        assert overview.report_health(list(overview.enabled_reports()))[0].overdue == 0
    with time_machine.travel(at(2026, 11, 21, 7, 30)):
        assert overview.report_health(list(overview.enabled_reports()))[0].overdue == 1
        healthy, answer = health.health()
    assert answer["checks"]["runs_past_deadline"]["count"] == 1
    assert answer["checks"]["runs_past_deadline"]["ok"] is False  # past it by more than the sweep takes
    assert not healthy

    second, queued = sweep(at(2026, 11, 21, 7, 30), django_capture_on_commit_callbacks)
    run.refresh_from_db()
    assert second == deadlines.DeadlineResult(failed=[run.pk]) and not queued
    assert (run.status, run.deadline_at, run.finished_at) == (Status.FAILED, None, at(2026, 11, 21, 7, 30))
    assert run.error == (
        "Failed at 21 November 2026, 07:30:00 GMT: its message did not reach a worker by its deadline (lost by the "
        "broker, or never published), again after it was published once more. No email was sent; use Run now to "
        "try again."
    )
    with time_machine.travel(at(2026, 11, 21, 7, 31)):
        assert alerts.send_failure_alerts() == 1
    [alert] = mail.outbox
    assert alert.to == ["olga@example.com"]
    assert "Portfolio failed: 20 November 2026" in alert.body and "did not reach a worker" in alert.body


def test_a_publish_that_fails_after_commit_is_logged_and_left_to_the_deadline_sweep(
    django_capture_on_commit_callbacks, caplog
):
    with django_capture_on_commit_callbacks(execute=True):
        enqueue("reporting.tasks.no_such_task", run_id=1)

    assert "could not publish reporting.tasks.no_such_task" in caplog.text
    assert "the deadline sweep will publish it again" in caplog.text


# --- a silent worker -----------------------------------------------------------------------


def test_a_run_stuck_while_sending_is_published_again_once_without_sending_anyone_twice(
    report, use_smtp, django_capture_on_commit_callbacks
):
    run = manual_run(report)
    runs.execute_run(run_id=run.pk)
    # The worker died mid-send: ann was sent, bob's send was in flight, cy not tried yet.
    ReportRun.objects.filter(pk=run.pk).update(recipients=["ann@example.com", "bob@example.com", "cy@example.com"])
    run.deliveries.filter(address="bob@example.com").update(status=Delivery.Status.SENDING)
    stall(run, Status.SENDING)

    result, _ = sweep(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert result == deadlines.DeadlineResult(published_again=[run.pk])
    assert [len(use_smtp.messages_to(address)) for address in ("ann@example.com", "bob@example.com")] == [1, 1]
    assert len(use_smtp.messages_to("cy@example.com")) == 1
    assert (run.status, run.recoveries, run.lease_expires_at, run.deadline_at) == (Status.PARTIALLY_SENT, 1, None, None)
    assert run.error.startswith("1 of 3 addresses did not get the email: bob@example.com: Interrupted while sending")
    assert run.notes == (
        "At 21 November 2026, 07:05:00 GMT, the worker stopped responding while sending the email (last sign of "
        "life 21 November 2026, 07:02:10 GMT); published again once."
    )


def test_a_run_that_stalls_again_is_failed_with_the_reason(report, django_capture_on_commit_callbacks):
    run = manual_run(report)
    stall(run, Status.FETCHING)

    result, queued = sweep(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks, execute=False)

    run.refresh_from_db()
    assert result.published_again == [run.pk] and len(queued) == 1
    assert (run.status, run.lease_expires_at, run.recoveries) == (Status.QUEUED, None, 1)
    assert run.deadline_at is not None

    stall(run, Status.FETCHING, recoveries=1)  # the next worker went silent too
    result, queued = sweep(at(2026, 11, 21, 7, 10), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert result == deadlines.DeadlineResult(failed=[run.pk]) and not queued
    assert (run.status, run.finished_at, run.lease_expires_at) == (Status.FAILED, at(2026, 11, 21, 7, 10), None)
    assert run.error == (
        "Failed at 21 November 2026, 07:10:00 GMT: the worker stopped responding while fetching the data (last sign "
        "of life 21 November 2026, 07:02:10 GMT), again after it was published once more. No email was sent; use "
        "Run now to try again."
    )
    assert run.notes.splitlines()[1].startswith("Failed at 21 November 2026, 07:10:00 GMT: the worker stopped")
    assert not mail.outbox
    assert AuditEvent.objects.filter(run=run, action=AuditEvent.Action.GAVE_UP).count() == 1


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

    result, _ = sweep(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert result.failed == [run.pk]
    assert run.status == Status.FAILED
    assert run.error.endswith(
        "again after it was published once more. 1 of 3 addresses got the email; resend it to the others from this "
        "run's page."
    )
    assert dict(run.deliveries.values_list("address", "status")) == {
        "ann@example.com": "sent",
        "bob@example.com": "failed",
        "cy@example.com": "failed",
    }
    assert "Interrupted while sending" in run.deliveries.get(address="bob@example.com").error
    assert not mail.outbox


def test_a_run_within_its_deadline_is_left_alone(report, django_capture_on_commit_callbacks):
    run = manual_run(report)
    stall(run, Status.SENDING)

    result, queued = sweep(at(2026, 11, 21, 7, 4), django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert result == deadlines.DeadlineResult() and not queued
    assert (run.status, run.recoveries, run.error) == (Status.SENDING, 0, "")


def test_an_overdue_run_is_published_again_once_when_two_sweeps_find_it(report, django_capture_on_commit_callbacks):
    run = manual_run(report)
    stall(run, Status.RENDERING)

    first, queued_first = sweep(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks, execute=False)
    second, queued_second = sweep(at(2026, 11, 21, 7, 5), django_capture_on_commit_callbacks, execute=False)

    assert first.published_again == [run.pk] and len(queued_first) == 1
    assert second == deadlines.DeadlineResult() and not queued_second


# --- a run resumed by a redelivered message says why ---------------------------------------


def test_a_run_taken_over_from_a_dead_worker_says_it_was_resumed(report, use_smtp):
    run = manual_run(report)
    stall(run, Status.FETCHING)
    ReportRun.objects.filter(pk=run.pk).update(attempts=1)

    with time_machine.travel(at(2026, 11, 21, 7, 5), tick=False):
        runs.execute_run(run_id=run.pk)  # the broker delivered the message again to another worker

    run.refresh_from_db()
    assert run.status == Status.SENT and run.attempts == 2
    assert run.notes == (
        "Resumed at 21 November 2026, 07:05:00 GMT (attempt 2): the worker that was fetching the data stopped, and "
        "its message was delivered again. Nothing already sent is sent again."
    )


def test_a_resend_whose_message_was_lost_is_failed_in_words_and_never_sent_late(
    report, settings, use_smtp, django_capture_on_commit_callbacks
):
    from reporting.services import archive as services_archive

    settings.REPORTING = {**settings.REPORTING, "RUN_QUEUE_DEADLINE_SECONDS": 600}
    run = runs.execute_run(run_id=manual_run(report).pk)
    assert run.status == Status.SENT
    with time_machine.travel(at(2026, 11, 21, 7, 0), tick=False), django_capture_on_commit_callbacks(execute=False):
        services_archive.resend(run_ids=[run.pk], addresses=["carol@example.com"], actor=None)  # its message: lost
    [resend] = run.deliveries.filter(kind=Delivery.Kind.RESEND)

    result, _ = sweep(at(2026, 11, 21, 7, 9), django_capture_on_commit_callbacks)  # before the queue deadline
    assert result.lost_resends == 0 and Delivery.objects.get(pk=resend.pk).status == Delivery.Status.QUEUED

    result, _ = sweep(at(2026, 11, 21, 7, 11), django_capture_on_commit_callbacks)
    resend.refresh_from_db()
    assert result.lost_resends == 1 and resend.status == Delivery.Status.FAILED
    assert "did not reach a worker within 600 seconds" in resend.error and "Resend it again" in resend.error

    archive.send_resend(run_id=run.pk, delivery_ids=[resend.pk])  # the message turns up late after all
    assert not use_smtp.messages_to("carol@example.com")
