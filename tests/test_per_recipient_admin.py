"""Per-recipient reports in the admin: the run's recipient reports, finding what a client got, resending one alone,
preview and test send for one chosen recipient."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.urls import reverse

from reporting import parts
from reporting.models import AuditEvent, Delivery, Recipient, Report, ReportRun, RunPart
from tests import factories
from tests.test_per_recipient import ROWS, run_everything, split_report

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent_run(httpserver, use_smtp, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    Recipient.objects.filter(email="cleo@example.com").update(attributes={"region": "EU"})  # fails: no client_id
    return run_everything(report)


def test_the_run_page_lists_its_recipient_reports_those_needing_attention_first(admin_client, sent_run):
    page = admin_client.get(sent_run.get_absolute_url()).content.decode()

    assert "Recipient reports" in page
    assert "2 sent" in page and "1 failed" in page
    assert page.index("cleo@example.com") < page.index("alice@example.com")
    assert "has no &#x27;client_id&#x27; attribute" in page
    for part in sent_run.parts.all():
        assert reverse("admin:reporting_runpart_change", args=[part.pk]) in page


def test_a_recipient_report_page_shows_their_email_and_data_only(admin_client, sent_run):
    alice = sent_run.parts.get(address="alice@example.com")

    page = admin_client.get(alice.get_absolute_url()).content.decode()
    html = admin_client.get(reverse("admin:reporting_runpart_email_html", args=[alice.pk]))

    assert "Statement C001" in page and "Acme Corp" in page and "Initech" not in page
    assert html["Content-Security-Policy"].startswith("default-src 'none'")
    assert "Dear Alice Archer (C001)" in html.content.decode()
    [attachment] = alice.attachments.all()
    download = admin_client.get(reverse("admin:reporting_runpart_attachment", args=[alice.pk, attachment.pk]))
    assert b"Acme Corp" in b"".join(download.streaming_content)
    bob = sent_run.parts.get(address="bob@example.com")
    other = admin_client.get(reverse("admin:reporting_runpart_attachment", args=[bob.pk, attachment.pk]))
    assert other.status_code == 404  # one recipient's page never serves another's file


@pytest.mark.parametrize(
    "search, expected",
    [
        ("C001 November 2026", ["alice@example.com"]),
        ("c001", ["alice@example.com"]),
        ("Bob Statement", ["bob@example.com"]),
        ("alice@example.com", ["alice@example.com"]),
        ("C001 October", []),
    ],
)
def test_what_did_client_x_get_for_a_month_is_one_search(admin_client, sent_run, search, expected):
    response = admin_client.get(reverse("admin:reporting_runpart_changelist"), {"q": search})

    shown = [part.address for part in response.context["cl"].result_list]
    assert shown == expected


def test_the_run_list_finds_the_runs_a_client_got(admin_client, sent_run):
    response = admin_client.get(reverse("admin:reporting_reportrun_changelist"), {"q": "C002 November"})
    assert [run.pk for run in response.context["cl"].result_list] == [sent_run.pk]
    response = admin_client.get(reverse("admin:reporting_reportrun_changelist"), {"q": "C999"})
    assert list(response.context["cl"].result_list) == []


def test_one_recipients_report_is_resent_alone_to_exactly_whom_was_confirmed(
    admin_client, sent_run, use_smtp, eager_celery
):
    alice = sent_run.parts.get(address="alice@example.com")
    url = reverse("admin:reporting_runpart_resend", args=[alice.pk])
    before = len(use_smtp.messages)

    review = admin_client.post(url, {"step": "review", "target": "typed", "addresses": "auditor@example.com"})
    assert "auditor@example.com" in review.content.decode() and "Alice Archer" in review.content.decode()
    assert len(use_smtp.messages) == before  # nothing sent on review
    with django_capture_on_commit():
        admin_client.post(url, {"step": "send", "target": "typed", "addresses": "auditor@example.com"})

    [message] = use_smtp.messages_to("auditor@example.com")
    html = message.get_body(("html",)).get_content()
    assert "Dear Alice Archer (C001)" in html and "Initech" not in html
    assert len(use_smtp.messages) == before + 1
    resend = alice.deliveries.get(kind=Delivery.Kind.RESEND)
    assert (resend.address, resend.status, resend.run_id) == ("auditor@example.com", Delivery.Status.SENT, sent_run.pk)
    event = AuditEvent.objects.get(action=AuditEvent.Action.RESENT)
    assert "Alice Archer" in event.summary and "auditor@example.com" in event.summary


def django_capture_on_commit():
    from django.test import TestCase

    return TestCase.captureOnCommitCallbacks(execute=True)


def test_a_per_recipient_run_as_a_whole_cannot_be_resent(admin_client, sent_run):
    response = admin_client.post(
        reverse("admin:reporting_reportrun_resend", args=[sent_run.pk]), {"step": "review", "target": "original"}
    )
    assert "sent each recipient their own report" in response.content.decode()


def test_a_failed_recipient_report_cannot_be_resent(admin_client, sent_run):
    cleo = sent_run.parts.get(address="cleo@example.com")
    response = admin_client.post(
        reverse("admin:reporting_runpart_resend", args=[cleo.pk]), {"step": "review", "target": "original"}
    )
    assert "has no archived email to resend" in response.content.decode()


def test_a_viewer_sees_recipient_reports_but_cannot_resend_them(client, sent_run):
    client.force_login(factories.staff_user("viewer", "view_reportrun"))
    alice = sent_run.parts.get(address="alice@example.com")

    assert client.get(alice.get_absolute_url()).status_code == 200
    assert client.get(reverse("admin:reporting_runpart_resend", args=[alice.pk])).status_code == 403


def test_without_the_archive_permission_recipient_reports_are_hidden(client, sent_run):
    client.force_login(factories.staff_user("editor", "change_report", "view_report"))
    alice = sent_run.parts.get(address="alice@example.com")

    assert client.get(alice.get_absolute_url()).status_code == 403
    assert client.get(reverse("admin:reporting_runpart_email_html", args=[alice.pk])).status_code == 403


@time_machine.travel(datetime(2026, 11, 21, 8, 0, tzinfo=UTC), tick=True)
def test_preview_shows_the_chosen_recipients_report(admin_client, httpserver, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    bob = Recipient.objects.get(email="bob@example.com")

    response = admin_client.get(reverse("admin:reporting_report_preview", args=[report.pk]), {"recipient": bob.pk})

    shown = response.context["preview"]
    assert shown.recipient == "Bob Baker <bob@example.com>"
    assert "Total 777 over 1 positions" in shown.html and "Acme" not in shown.html
    assert shown.subject == "Statement C002 — 20 November 2026"
    assert not ReportRun.objects.exists() and not Delivery.objects.exists()


@time_machine.travel(datetime(2026, 11, 21, 8, 0, tzinfo=UTC), tick=True)
def test_preview_says_when_the_recipient_would_be_skipped(admin_client, httpserver, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS[:3]})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    cleo = Recipient.objects.get(email="cleo@example.com")

    response = admin_client.get(reverse("admin:reporting_report_preview", args=[report.pk]), {"recipient": cleo.pk})

    assert "they would be skipped" in response.content.decode()


def test_a_test_send_of_a_chosen_recipient_from_the_admin(
    admin_client,
    admin_user,
    httpserver,
    use_smtp,
    statement_template,
    eager_celery,
):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    cleo = Recipient.objects.get(email="cleo@example.com")
    form = admin_client.get(reverse("admin:reporting_report_send_test", args=[report.pk]))
    assert "As received by" in form.content.decode()

    with django_capture_on_commit():
        admin_client.post(
            reverse("admin:reporting_report_send_test", args=[report.pk]),
            {"confirm": "yes", "period_day": "2026-11-20", "recipient": cleo.pk},
        )

    [message] = use_smtp.messages
    assert use_smtp.recipients_of(message) == [admin_user.email]
    assert "Dear Cleo Cole (C003)" in message.get_body(("html",)).get_content()
    run = ReportRun.objects.get(trigger=ReportRun.Trigger.TEST)
    assert run.status == ReportRun.Status.SENT
    assert [part.recipient_email for part in run.parts.all()] == ["cleo@example.com"]


def test_the_report_form_refuses_a_fetch_per_recipient_that_does_not_use_the_recipient(admin_client, httpserver):
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))
    report.audience, report.per_recipient_data = Report.Audience.EACH, Report.PerRecipientData.FETCH
    with pytest.raises(Exception) as refused:
        report.full_clean()
    assert "must use the recipient in the path" in str(refused.value)


def test_parts_are_kept_with_their_run_and_leave_with_it(sent_run):
    assert RunPart.objects.filter(run=sent_run).count() == 3
    sent_run.delete()
    assert not RunPart.objects.exists() and not Delivery.objects.exists()


def test_a_recipient_report_held_with_no_rows_is_sent_anyway_by_staff_once(
    admin_client, httpserver, use_smtp, statement_template, eager_celery
):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS[:3]})  # nothing for C003
    report = split_report(
        factories.data_source(httpserver.url_for("/api/")), statement_template, when_no_rows=Report.WhenNoRows.HOLD
    )
    run = run_everything(report)
    cleo = run.parts.get(address="cleo@example.com")
    assert (run.status, cleo.status) == (ReportRun.Status.PARTIALLY_SENT, RunPart.Status.HELD)
    page = admin_client.get(cleo.get_absolute_url()).content.decode()
    assert "Send anyway" in page

    url = reverse("admin:reporting_runpart_send_anyway", args=[cleo.pk])
    with django_capture_on_commit():
        admin_client.post(url)
    with django_capture_on_commit():
        second = admin_client.post(url, follow=True)

    assert "no longer held" in second.content.decode()
    [message] = use_smtp.messages_to("cleo@example.com")
    assert "over 0 positions" in message.get_body(("html",)).get_content()
    cleo.refresh_from_db()
    run.refresh_from_db()
    assert cleo.status == RunPart.Status.SENT and cleo.released_by is not None
    assert run.status == ReportRun.Status.SENT and run.error == ""
    assert AuditEvent.objects.filter(action=AuditEvent.Action.RELEASED, run=run).count() == 1


def test_those_who_did_not_get_theirs_are_sent_it_in_a_new_run_and_nobody_else(
    admin_client, httpserver, use_smtp, statement_template, eager_celery
):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    use_smtp.refuse("bob@example.com", code=550)
    run = run_everything(report)
    alice = run.parts.get(address="alice@example.com")
    # Alice's email was interrupted while sending: she may have it, and is left out.
    RunPart.objects.filter(pk=alice.pk).update(status=RunPart.Status.FAILED)
    alice.deliveries.update(status=Delivery.Status.FAILED, error=parts.INTERRUPTED)
    assert run.status == ReportRun.Status.PARTIALLY_SENT
    page = admin_client.get(run.get_absolute_url()).content.decode()
    assert "Send to those who did not get theirs" in page
    url = reverse("admin:reporting_reportrun_send_to_the_rest", args=[run.pk])
    confirm = admin_client.get(url).content.decode()
    assert "Bob Baker" in confirm and "Perhaps got it (1)" in confirm
    use_smtp._refusals.clear()
    before = {address: len(use_smtp.messages_to(address)) for address in ("alice@example.com", "cleo@example.com")}

    with django_capture_on_commit():
        response = admin_client.post(url)

    new = ReportRun.objects.exclude(pk=run.pk).get()
    assert response.url == new.get_absolute_url()
    assert new.recipients == ["bob@example.com"] and new.status == ReportRun.Status.SENT
    [message] = use_smtp.messages_to("bob@example.com")
    assert "Total 777 over 1 positions" in message.get_body(("html",)).get_content()
    assert {address: len(use_smtp.messages_to(address)) for address in before} == before


def test_a_working_per_recipient_runs_progress_counts_its_recipient_reports(
    admin_client, httpserver, use_smtp, statement_template
):
    from datetime import date

    from reporting import runs

    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    runs.execute_run(run_id=run.pk)
    runs.execute_parts(run_id=run.pk, part_ids=[run.parts.get(key="C001").pk])

    progress = admin_client.get(reverse("admin:reporting_reportrun_progress", args=[run.pk])).json()

    assert progress["step"] == "sending" and not progress["finished"]
    assert progress["recipient_reports"] == "Recipient reports (3): 2 waiting, 1 sent."
    assert [each["address"] for each in progress["deliveries"]] == ["alice@example.com"]


def test_sending_to_the_rest_twice_sends_them_theirs_once(httpserver, use_smtp, statement_template, staff):
    from django.core.exceptions import ValidationError

    from reporting.services import runs as services_runs

    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    use_smtp.refuse("bob@example.com", code=550)
    run = run_everything(report)
    assert run.status == ReportRun.Status.PARTIALLY_SENT

    first = services_runs.send_to_the_rest(run_id=run.pk, actor=staff)
    with pytest.raises(ValidationError, match="being sent it by a later run"):
        services_runs.send_to_the_rest(run_id=run.pk, actor=staff)  # the second click

    assert ReportRun.objects.exclude(pk=run.pk).get() == first
    assert first.recipients == ["bob@example.com"]


def test_each_word_of_the_run_list_search_names_a_report_a_period_or_a_recipient(admin_client, httpserver):
    source = factories.data_source(httpserver.url_for("/api/"))
    ledger = factories.report(source, name="Collections ledger", slug="coll-ledger")
    desk = factories.report(source, name="Desk summary", slug="desk-1")

    def run(report: Report, label: str, day: int, **fields) -> ReportRun:
        return ReportRun.objects.create(
            report=report,
            period_start=datetime(2026, 11, day, tzinfo=UTC).date(),
            period_end=datetime(2026, 11, day, tzinfo=UTC).date(),
            period_key=f"{report.slug}-{day}",
            period_label=label,
            trigger=ReportRun.Trigger.MANUAL,
            status=ReportRun.Status.SENT,
            recipients=["ann@example.com"],
            **fields,
        )

    october, november = run(ledger, "October 2026", 1), run(ledger, "November 2026", 2)
    statements = run(desk, "November 2026", 3, per_recipient=True)
    RunPart.objects.create(
        run=statements, address="ann@example.com", recipient_email="ann@example.com", key="C001",
        recipient_name="Alice Archer",
    )  # fmt: skip
    searches = {
        "ledger": {october, november},  # the report's name
        "COLL-LEDGER": {october, november},  # its slug, in any case
        "november": {november, statements},  # the period
        "ledger november": {november},  # every word matching
        "c001": {statements},  # the value a recipient's rows were matched on, whole
        "C00": set(),  # … not part of it
        "archer november desk": {statements},  # a recipient's name, the period and the report
        "archer october": set(),
        "100%": set(),  # a wildcard of SQL's LIKE is a character like any other
    }

    for search, expected in searches.items():
        response = admin_client.get(reverse("admin:reporting_reportrun_changelist"), {"q": search})
        assert set(response.context["cl"].result_list) == expected, search
