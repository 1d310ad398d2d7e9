"""The catch-up sweep: a slot beat never started is run late once, or recorded as missed."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django_celery_beat.models import PeriodicTask

from project.celery import app as celery_app
from reporting import runs, tasks
from reporting.models import Delivery, ReportRun
from reporting.periods import period_for_slot
from reporting.services import catch_up as sweeps
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

    # The reports; their runs, 200 reports a query; and creating the one late run with its audit event.
    with (
        time_machine.travel(at(2026, 11, 21, 7, 10)),
        django_capture_on_commit_callbacks() as queued,
        django_assert_max_num_queries(11),
    ):
        result = sweeps.catch_up_missed_runs()

    assert [ReportRun.objects.get(pk=run_id).report for run_id in result.caught_up] == [reports[0]]
    assert len(queued) == 1


def test_the_sweeps_are_installed_as_periodic_tasks_beat_can_send():
    installed = dict(PeriodicTask.objects.filter(name__startswith="Reporting: ").values_list("task", "enabled"))

    assert installed["reporting.tasks.catch_up_missed_runs"] is True
    assert installed["reporting.tasks.enforce_run_deadlines"] is True
    assert "reporting.tasks.recover_stuck_runs" not in installed
    assert {"reporting.tasks.catch_up_missed_runs", "reporting.tasks.enforce_run_deadlines"} <= set(celery_app.tasks)
