"""The audit trail: who created, changed or deleted a report, and who ran, tested or resent what."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django import forms
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reporting import audit
from reporting.models import AuditEvent, Recipient, Report
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
Action = AuditEvent.Action


def report_form(client, report: Report | None, source, **overrides) -> dict:
    """The report form as the admin page fills it (new: a daily report for ann@), with `overrides`."""
    page = (
        reverse("admin:reporting_report_change", args=[report.pk]) if report else reverse("admin:reporting_report_add")
    )
    form = client.get(page).context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(form.fields[name], forms.ModelMultipleChoiceField):
            data[name] = [str(item.pk if hasattr(item, "pk") else item) for item in value or []]
        else:
            data[name] = "" if value is None else str(value)
    if report is None:
        ann, _ = Recipient.objects.get_or_create(email="ann@example.com")
        data.update(
            name="Collections",
            slug="collections",
            data_source=str(source.pk),
            path="positions",
            records_path="data.positions",
            timezone="Europe/London",
            template="reports/table.html",
            subject_template="Collections — {{ period.label }}",
            recipient_addresses=ann.email,
        )
    return {**data, **overrides}


def save(client, report: Report | None, data: dict):
    url = (
        reverse("admin:reporting_report_change", args=[report.pk]) if report else reverse("admin:reporting_report_add")
    )
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    return response


# --- definitions ---------------------------------------------------------------------------------


def test_it_records_who_created_a_report(staff_client, source):
    save(staff_client, None, report_form(staff_client, None, source))

    event = AuditEvent.objects.get()
    report = Report.objects.get(slug="collections")
    assert (event.action, event.actor_name, event.report, event.summary) == (
        Action.CREATED,
        "kim",
        report,
        "Created the report.",
    )
    assert event.changes["recipients"] == ["", "ann@example.com"]
    assert event.changes["schedule"] == ["", "0 7 * * * (Europe/London)"]


def test_it_records_each_changed_field_with_before_and_after(staff_client, source):
    save(staff_client, None, report_form(staff_client, None, source))
    report = Report.objects.get(slug="collections")
    other_source = factories.data_source("http://localhost:9/v2/", name="Ledger API")
    bob = Recipient.objects.create(email="bob@example.com")
    finance = factories.recipient_list("Finance", ["cfo@example.com"])

    save(
        staff_client,
        report,
        report_form(
            staff_client,
            report,
            source,
            hour="8",
            day_of_week="mon-fri",
            recipient_addresses=bob.email,
            recipient_lists=[str(finance.pk)],
            subject_template="Daily collections — {{ period.label }}",
            data_source=other_source.pk,
            path="ledger",
        ),
    )

    event = AuditEvent.objects.filter(action=Action.CHANGED).get()
    assert event.actor_name == "kim"
    assert event.changes == {
        "data_source": [str(source), "Ledger API"],
        "path": ["positions", "ledger"],
        "recipient_lists": ["", "Finance"],
        "recipients": ["ann@example.com", "bob@example.com"],
        "schedule": ["0 7 * * * (Europe/London)", "0 8 * * mon-fri (Europe/London)"],
        "subject_template": ["Collections — {{ period.label }}", "Daily collections — {{ period.label }}"],
    }
    assert event.summary == "Changed data source, path, recipient lists, recipients, schedule, subject template."


def test_it_records_a_changed_template_and_nothing_for_a_save_without_changes(staff_client, source):
    save(staff_client, None, report_form(staff_client, None, source))
    report = Report.objects.get(slug="collections")

    save(staff_client, report, report_form(staff_client, report, source))
    save(staff_client, report, report_form(staff_client, report, source, template="reports/portfolio_summary.html"))

    changed = AuditEvent.objects.filter(action=Action.CHANGED)
    assert [event.changes for event in changed] == [
        {"template": ["reports/table.html", "reports/portfolio_summary.html"]}
    ]


def test_it_records_who_deleted_a_report_and_keeps_its_name(staff_client, source):
    save(staff_client, None, report_form(staff_client, None, source))
    report = Report.objects.get(slug="collections")

    staff_client.post(reverse("admin:reporting_report_delete", args=[report.pk]), {"post": "yes"})

    assert not Report.objects.exists()
    event = AuditEvent.objects.get(action=Action.DELETED)
    assert (event.actor_name, event.report, event.report_name, event.summary) == (
        "kim",
        None,
        "Collections",
        "Deleted the report Collections.",
    )


# --- sends ---------------------------------------------------------------------------------------------


def test_it_records_who_ran_a_report_now_and_for_whom(staff_client, report, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:reporting_report_run_now", args=[report.pk]), {"confirm": "yes"})

    event = AuditEvent.objects.get()
    run = report.runs.get()
    assert (event.action, event.actor_name, event.report, event.run) == (Action.RAN, "kim", report, run)
    assert event.summary == f"Ran #{run.pk} now ({run.period_label}) for ann@example.com, bob@example.com."


def test_it_records_who_sent_a_test_and_to_which_address(staff_client, report, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            reverse("admin:reporting_report_changelist"),
            {"action": "send_test", "_selected_action": [report.pk], "confirm": "yes"},
        )

    event = AuditEvent.objects.get()
    run = report.runs.get()
    assert (event.action, event.actor_name, event.run) == (Action.TEST_SENT, "kim", run)
    assert event.summary == f"Sent a test of run #{run.pk} ({run.period_label}) to kim@example.com."


def test_it_records_who_resent_a_run_to_which_addresses(staff_client, report, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(reverse("admin:reporting_report_run_now", args=[report.pk]), {"confirm": "yes"})
    run = report.runs.get()

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            reverse("admin:reporting_reportrun_resend", args=[run.pk]),
            {"step": "send", "target": "typed", "addresses": "eve@example.com, Dan@example.com"},
        )

    event = AuditEvent.objects.get(action=Action.RESENT)
    assert (event.actor_name, event.report, event.run) == ("kim", report, run)
    assert event.summary == f"Resent run #{run.pk} ({run.period_label}) to eve@example.com, Dan@example.com."


# --- the report's page ---------------------------------------------------------------------------------


def test_the_report_page_shows_the_latest_twenty_events_with_one_query(staff_client, staff, report):
    started = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    for minute in range(25):
        with time_machine.travel(started + timedelta(minutes=minute), tick=False):
            audit.record(actor=staff, action=Action.CHANGED, summary=f"Change number {minute}.", report=report)
    audit.record(actor=None, action=Action.CHANGED, summary="Another report's change.", report=None)

    with CaptureQueriesContext(connection) as queries:
        page = staff_client.get(reverse("admin:reporting_report_change", args=[report.pk])).content.decode()

    assert len([q for q in queries.captured_queries if "reporting_auditevent" in q["sql"]]) == 1
    trail = page[page.index('id="audit-trail"') :]
    shown = [f"Change number {minute}." for minute in range(24, 4, -1)]
    assert [trail.index(summary) for summary in shown] == sorted(trail.index(summary) for summary in shown)
    assert "Change number 4." not in trail
    assert "Another report" not in trail
    assert "02 Nov 2026 09:24" in trail
    assert "<td>kim</td>" in trail
