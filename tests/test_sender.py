"""A sender per report: From, Reply-To and List-Unsubscribe as the mail server receives them, kept for resends."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from django.urls import reverse

from reporting import parts, runs
from reporting.models import Report
from reporting.services import archive as services_archive
from tests import factories
from tests.test_admin import report_form
from tests.test_per_recipient import split_report

pytestmark = pytest.mark.django_db
INSIDE, OUTSIDE = "ann@example.com", "client@acme.test"
UNSUBSCRIBE = "https://example.com/unsubscribe?list=portfolio"


@pytest.fixture(autouse=True)
def _company_domains(settings):
    """The company sends from example.com (and reports.example.com's subdomains); its people are at example.com."""
    settings.REPORTING = {
        **settings.REPORTING,
        "SENDER_DOMAINS": ["example.com", ".reports.example.com"],
        "INTERNAL_DOMAINS": ["example.com"],
    }


def sent_report(source, **fields) -> Report:
    return factories.report(source, addresses=[INSIDE, OUTSIDE], **fields)


def run_now(report: Report):
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    return runs.execute_run(run_id=run.pk)


def received_by(smtp, address: str):
    [message] = smtp.messages_to(address)
    return message


def test_the_reports_sender_reaches_everyone_and_list_unsubscribe_only_those_outside_the_company(source, use_smtp):
    report = sent_report(
        source,
        from_name="Finance team",
        from_address="finance@example.com",
        reply_to="desk@example.com",
        list_unsubscribe=UNSUBSCRIBE,
    )

    run = run_now(report)

    inside, outside = received_by(use_smtp, INSIDE), received_by(use_smtp, OUTSIDE)
    for message in (inside, outside):
        assert message["From"] == "Finance team <finance@example.com>"
        assert message["Reply-To"] == "desk@example.com"
    assert outside["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert outside["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert inside["List-Unsubscribe"] is None and inside["List-Unsubscribe-Post"] is None
    assert (run.from_email, run.reply_to, run.list_unsubscribe) == (
        "Finance team <finance@example.com>",
        "desk@example.com",
        UNSUBSCRIBE,
    )


def test_a_mailto_link_is_sent_without_one_click_post_and_a_name_alone_keeps_the_default_address(source, use_smtp):
    report = sent_report(
        source, from_name="Équipe Finance, Paris", list_unsubscribe="mailto:unsubscribe@example.com?subject=stop"
    )

    run_now(report)

    outside = received_by(use_smtp, OUTSIDE)
    assert outside["From"] == '"Équipe Finance, Paris" <reports@localhost>'
    assert outside["List-Unsubscribe"] == "<mailto:unsubscribe@example.com?subject=stop>"
    assert outside["List-Unsubscribe-Post"] is None
    assert outside["Reply-To"] is None


def test_a_report_without_its_own_sender_comes_from_default_from_email(source, use_smtp, settings):
    run = run_now(sent_report(source))

    for message in use_smtp.messages:
        assert message["From"] == "Scheduled Reports <reports@localhost>" == settings.DEFAULT_FROM_EMAIL
        assert message["Reply-To"] is None and message["List-Unsubscribe"] is None
    assert len(use_smtp.messages) == 2 and run.from_email == settings.DEFAULT_FROM_EMAIL


def test_a_resend_after_the_sender_changed_still_comes_from_the_original_sender(source, use_smtp):
    report = sent_report(
        source, from_name="Finance", from_address="finance@example.com", reply_to="desk@example.com",
        list_unsubscribe=UNSUBSCRIBE,
    )  # fmt: skip
    run = run_now(report)
    report.from_name, report.from_address = "Treasury", "treasury@eu.reports.example.com"
    report.reply_to, report.list_unsubscribe = "treasury@example.com", "mailto:stop@example.com"
    report.save()
    use_smtp.messages.clear()

    services_archive.resend_here(run_id=run.pk, addresses=["carol@partner.test"])
    later = run_now(report)

    resent = received_by(use_smtp, "carol@partner.test")
    assert resent["From"] == "Finance <finance@example.com>"
    assert resent["Reply-To"] == "desk@example.com"
    assert resent["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert received_by(use_smtp, OUTSIDE)["From"] == "Treasury <treasury@eu.reports.example.com>"
    assert later.list_unsubscribe == "mailto:stop@example.com"


def test_each_recipients_own_report_and_its_resend_carry_the_runs_sender(httpserver, use_smtp, statement_template):
    rows = [{"client_id": "C001", "market_value": 1}, {"client_id": "C002", "market_value": 2}]
    httpserver.expect_request("/api/positions").respond_with_json({"positions": rows})
    report = split_report(
        factories.data_source(httpserver.url_for("/api/")),
        statement_template,
        from_name="Client service",
        from_address="clients@example.com",
        list_unsubscribe=UNSUBSCRIBE,
        when_no_rows=Report.WhenNoRows.SKIP,
    )
    run = run_now(report)
    runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))
    report.from_address = "other@example.com"
    report.save()
    part = run.parts.get(recipient_email="alice@example.com")

    services_archive.resend_part(part_id=part.pk, addresses=["alice.assistant@example.org"], actor=None)
    services_archive.send_resend(run_id=run.pk, delivery_ids=list(part.deliveries.values_list("pk", flat=True)))

    for address in ("alice@example.com", "alice.assistant@example.org"):
        assert received_by(use_smtp, address)["From"] == "Client service <clients@example.com>"
    assert received_by(use_smtp, "alice.assistant@example.org")["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert received_by(use_smtp, "bob@example.com")["List-Unsubscribe"] is None  # at the company's own domain


def test_the_form_refuses_a_from_address_outside_the_allowed_domains_and_names_them(staff_client, source):
    url = reverse("admin:reporting_report_add")

    refused = staff_client.post(url, report_form(source, from_address="ceo@example.com.evil.test"))
    subdomain = staff_client.post(url, report_form(source, from_address="ops@eu.reports.example.com"))

    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["from_address"] == [
        "Reports may be sent only from addresses at example.com, reports.example.com and its subdomains; "
        "example.com.evil.test is not one of them (an administrator can add it to REPORTING_SENDER_DOMAINS)."
    ]
    assert "reports.example.com and its subdomains" in refused.content.decode()
    assert subdomain.status_code == 302, subdomain.context["adminform"].form.errors
    assert Report.objects.get(slug="collections").sender() == "ops@eu.reports.example.com"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        (
            "list_unsubscribe",
            "javascript:alert(1)",
            "Give a mailto: address (mailto:unsubscribe@example.com) or an https:",
        ),
        ("list_unsubscribe", "http://example.com/unsubscribe", "or an https: URL"),
        ("list_unsubscribe", "<https://a.example>, <mailto:b@example.com>", "Give one link, without spaces, commas"),
        ("list_unsubscribe", "mailto:not-an-address", "not-an-address is not a valid email address."),
        ("from_name", "Finance\r\nBcc: everyone@example.com", "It contains a line break or another control character."),
        ("reply_to", "desk", "Enter a valid email address."),
    ],
)
def test_the_form_refuses_a_header_it_could_not_send_in_words(staff_client, source, field, value, words):
    response = staff_client.post(reverse("admin:reporting_report_add"), report_form(source, **{field: value}))

    assert response.status_code == 200
    assert any(words in error for error in response.context["adminform"].form.errors[field])
    assert not Report.objects.exists()


def test_the_sender_domains_default_to_default_from_emails_and_a_bad_one_fails_at_start_up():
    code = (
        "from django.conf import settings; "
        "print(settings.REPORTING['SENDER_DOMAINS'], settings.REPORTING['INTERNAL_DOMAINS'])"
    )

    def read(**env: str) -> str:
        names = ("REPORTING_SENDER_DOMAINS", "REPORTING_INTERNAL_DOMAINS", "DEFAULT_FROM_EMAIL")
        clean = {key: value for key, value in os.environ.items() if key not in names}
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
            cwd=Path(__file__).resolve().parents[1],
            env={**clean, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return (result.stdout + result.stderr).strip()

    assert read(DEFAULT_FROM_EMAIL="Reports <reports@Bank.example>") == "['bank.example'] ['bank.example']"
    assert (
        read(REPORTING_SENDER_DOMAINS="bank.example, .mail.bank.example", REPORTING_INTERNAL_DOMAINS="bank.example")
        == "['bank.example', '.mail.bank.example'] ['bank.example']"
    )
    assert (
        "REPORTING_SENDER_DOMAINS must list email domains (example.com, or .example.com for it and its subdomains), "
        "not 'reports@bank.example'." in read(REPORTING_SENDER_DOMAINS="reports@bank.example")
    )
