"""Each archived run stands on its own, and a resend goes to exactly the addresses the staff member saw."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django.urls import reverse

from reporting import runs, tasks
from reporting.models import AuditEvent, Delivery, Report, ReportRun
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
LONDON = ZoneInfo("Europe/London")


def scheduled_run(report, moment: datetime) -> ReportRun:
    """Beat's task for `report`, run by a worker at `moment`; the run it made."""
    with time_machine.travel(moment, tick=False):
        tasks.run_scheduled_report(report_id=report.pk)
    return ReportRun.objects.get(report=report)


@pytest.fixture
def daily_at_7(report):
    factories.schedule(report, minute="0", hour="7")
    return report


def test_a_scheduled_run_names_its_attachments_after_its_period_not_the_firing_time(daily_at_7):
    run = scheduled_run(daily_at_7, datetime(2026, 11, 25, 7, 0, 3, tzinfo=LONDON))

    assert list(run.attachments.values_list("filename", flat=True)) == ["portfolio_2026-11-24.csv"]
    [email] = mail.outbox[:1]
    assert [name for name, _content, _type in email.attachments] == ["portfolio_2026-11-24.csv"]


def test_editing_the_report_does_not_change_how_an_archived_run_reads_or_resends(
    daily_at_7, staff_client, django_capture_on_commit_callbacks
):
    run = scheduled_run(daily_at_7, datetime(2026, 11, 25, 7, 0, 3, tzinfo=LONDON))
    original = mail.outbox[0]
    page_before = staff_client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()
    assert "24 November 2026" in page_before

    # The report is edited afterwards: another name, period and timezone.
    Report.objects.filter(pk=daily_at_7.pk).update(
        name="Book of record", period_kind=Report.PeriodKind.NONE, timezone="America/New_York"
    )
    run = ReportRun.objects.get(pk=run.pk)

    assert (run.report_name, run.period_kind, run.period_timezone) == ("Portfolio", "daily", "Europe/London")
    assert run.period_label == run.period.label == "24 November 2026"
    assert str(run) == "Portfolio · 24 November 2026 · Sent"
    page = staff_client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()
    assert "24 November 2026" in page and "25 November 2026" not in page
    listing = staff_client.get(reverse("admin:reporting_reportrun_changelist")).content.decode()
    assert "Portfolio · 24 November 2026 · Sent" in listing

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            reverse("admin:reporting_reportrun_resend", args=[run.pk]),
            {"step": "send", "target": "typed", "addresses": "carol@example.com"},
        )
    [resent] = mail.outbox
    assert (resent.subject, resent.body, resent.attachments) == (original.subject, original.body, original.attachments)


def test_typed_addresses_beside_the_original_recipients_choice_are_refused_and_nothing_is_sent(report, staff_client):

    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    mail.outbox.clear()

    for step in ("review", "send"):
        page = staff_client.post(
            reverse("admin:reporting_reportrun_resend", args=[run.pk]),
            {"step": step, "target": "original", "addresses": "carol@example.com"},
        )
        assert "You typed addresses but chose the original recipients" in page.content.decode()

    assert not mail.outbox
    assert not run.deliveries.filter(kind=Delivery.Kind.RESEND).exists()


def test_the_confirmation_lists_exactly_who_will_get_it_and_the_audit_names_them(
    report, staff_client, django_capture_on_commit_callbacks
):

    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    mail.outbox.clear()

    review = staff_client.post(
        reverse("admin:reporting_reportrun_resend", args=[run.pk]), {"step": "review", "target": "original"}
    ).content.decode()
    assert review.count("<li>ann@example.com</li>") == 1 and review.count("<li>bob@example.com</li>") == 1
    assert "Send to 2 addresses" in review
    assert not mail.outbox and not run.deliveries.filter(kind=Delivery.Kind.RESEND).exists()

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            reverse("admin:reporting_reportrun_resend", args=[run.pk]), {"step": "send", "target": "original"}
        )

    assert sorted(message.to[0] for message in mail.outbox) == ["ann@example.com", "bob@example.com"]
    event = AuditEvent.objects.get(action=AuditEvent.Action.RESENT)
    assert event.summary == f"Resent run #{run.pk} ({run.period_label}) to ann@example.com, bob@example.com."
