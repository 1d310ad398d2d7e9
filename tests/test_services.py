"""The service layer: each verb in one transaction, with its own audit event, publishing after commit."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import ValidationError

from reporting import runs, tasks
from reporting.models import AuditEvent, ReportRun
from reporting.services import archive as services_archive
from reporting.services import runs as services_runs
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
LONDON = ZoneInfo("Europe/London")
Action = AuditEvent.Action


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)


def test_run_now_audits_and_publishes_only_after_commit(report, staff, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as published:
        [run] = services_runs.run_now(report_ids=[report.pk], period_day=date(2026, 11, 20), actor=staff)

    assert len(published) == 1 and not mail.outbox  # nothing goes out before the transaction commits
    event = AuditEvent.objects.get(action=Action.RAN)
    assert (event.run, event.actor, event.report) == (run, staff, report)
    published[0]()
    assert sorted(message.to[0] for message in mail.outbox) == ["ann@example.com", "bob@example.com"]


def test_run_now_refuses_a_report_without_recipients_and_writes_nothing(source, staff):
    lonely = factories.report(source, addresses=[], slug="lonely", name="Lonely")

    with pytest.raises(ValidationError, match="No active recipients: Lonely"):
        services_runs.run_now(report_ids=[lonely.pk], period_day=None, actor=staff)

    assert not ReportRun.objects.exists() and not AuditEvent.objects.exists()


def test_a_rerun_of_an_archived_run_is_audited(report, staff, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        [first] = services_runs.run_now(report_ids=[report.pk], period_day=date(2026, 11, 20), actor=staff)
        [again] = services_runs.rerun(run_ids=[first.pk], actor=staff)

    event = AuditEvent.objects.get(action=Action.RERAN)
    assert (event.run, event.actor) == (again, staff)
    assert event.summary == f"Re-ran run #{first.pk} (20 November 2026) as run #{again.pk}."
    assert ReportRun.objects.get(pk=again.pk).status == ReportRun.Status.SENT


def test_a_resend_that_fails_validation_writes_nothing(report, staff):
    run = services_runs.run_now_here(report_id=report.pk, period_day=date(2026, 11, 20))

    with pytest.raises(ValidationError, match="not-an-address"):
        services_archive.resend(run_ids=[run.pk], addresses=["ok@example.com", "not-an-address"], actor=staff)

    assert not run.deliveries.filter(kind="resend").exists()
    assert not AuditEvent.objects.filter(action=Action.RESENT).exists()


def test_legal_hold_is_audited_per_run_and_only_for_runs_it_changes(report, staff):
    run = services_runs.run_now_here(report_id=report.pk, period_day=date(2026, 11, 20))

    assert services_archive.set_legal_hold(run_ids=[run.pk], held=True, actor=staff) == 1
    assert services_archive.set_legal_hold(run_ids=[run.pk], held=True, actor=staff) == 0

    assert AuditEvent.objects.filter(action=Action.LEGAL_HOLD, run=run).count() == 1
    assert ReportRun.objects.get(pk=run.pk).legal_hold


# --- late and punctual scheduled runs ---------------------------------------------------


@pytest.fixture
def daily_at_7(report):
    factories.schedule(report, minute="0", hour="7")
    return report


def test_a_run_beat_fired_late_says_how_late_and_why(daily_at_7):
    # Beat was down at 07:00 and, restarted at 07:04:30, fired the missed slot itself.
    with time_machine.travel(at(2026, 11, 21, 7, 4, 30), tick=False):
        tasks.run_scheduled_report(report_id=daily_at_7.pk)

    run = ReportRun.objects.get()
    assert (run.status, run.trigger, run.scheduled_for) == (ReportRun.Status.SENT, "schedule", at(2026, 11, 21, 7, 0))
    assert run.notes == (
        "Ended 4 min 30 s after its slot (21 November 2026, 07:00:00 GMT): beat was down or behind and fired it "
        "4 min 30 s late."
    )
    assert AuditEvent.objects.get(action=Action.SCHEDULED).run == run


def test_a_run_on_time_has_no_lateness_note(daily_at_7):
    with time_machine.travel(at(2026, 11, 21, 7, 0, 2), tick=False):
        tasks.run_scheduled_report(report_id=daily_at_7.pk)

    assert ReportRun.objects.get().notes == ""


def test_a_run_that_waited_for_a_worker_says_so(daily_at_7):
    with time_machine.travel(at(2026, 11, 21, 7, 0, 1), tick=False):
        run = runs.start_scheduled_run(report_id=daily_at_7.pk)
    with time_machine.travel(at(2026, 11, 21, 7, 12), tick=False):
        services_runs.work_on_run(run_id=run.pk)

    run.refresh_from_db()
    assert run.notes.startswith("Ended 12 min after its slot (21 November 2026, 07:00:00 GMT): it waited for a worker")


def test_a_slot_beat_fires_late_is_not_mistaken_for_the_next_one(report):
    # Hourly; a beat that took over at 08:59:40 fires the 08:00 slot the old leader never did.
    report.period_kind = "none"
    report.save()
    factories.schedule(report, minute="0", hour="*")
    fired_at = at(2026, 11, 21, 8, 59, 40)

    with time_machine.travel(fired_at, tick=False):
        tasks.run_scheduled_reports(report_ids=[report.pk], fired_at=fired_at.isoformat())

    run = ReportRun.objects.get()
    assert run.scheduled_for == at(2026, 11, 21, 8, 0)
    assert run.period_label == "21 November 2026, 08:00 GMT"


def test_a_slot_fired_twice_is_run_sent_and_audited_once(daily_at_7):
    # The second message finds the period's run made: its INSERT fails inside the transaction
    # that would audit it, and the run is looked up again outside it.
    with time_machine.travel(at(2026, 11, 21, 7, 0, 2), tick=False):
        tasks.run_scheduled_report(report_id=daily_at_7.pk)
        tasks.run_scheduled_report(report_id=daily_at_7.pk)

    run = ReportRun.objects.get()
    assert run.status == ReportRun.Status.SENT
    assert sorted(to for message in mail.outbox for to in message.to) == ["ann@example.com", "bob@example.com"]
    assert AuditEvent.objects.filter(action=Action.SCHEDULED).count() == 1


def test_a_slot_fired_again_while_its_run_waits_for_a_worker_works_on_that_run(daily_at_7):
    with time_machine.travel(at(2026, 11, 21, 7, 0, 1), tick=False):
        waiting = runs.start_scheduled_run(report_id=daily_at_7.pk)
    with time_machine.travel(at(2026, 11, 21, 7, 0, 30), tick=False):
        tasks.run_scheduled_report(report_id=daily_at_7.pk)

    assert list(ReportRun.objects.values_list("pk", "status")) == [(waiting.pk, ReportRun.Status.SENT)]
    assert len(mail.outbox) == 2
    assert AuditEvent.objects.filter(action=Action.SCHEDULED).count() == 0  # made outside the service, by the test
