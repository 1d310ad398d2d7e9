"""The demo's clients: their recipients and statement report, and the statement rendered for one client."""

from datetime import UTC, date, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from reporting.demo import data
from reporting.demo.setup import CLIENT_CONTACTS, install_demo
from reporting.models import Recipient, RecipientList, Report
from reporting.periods import period_containing
from reporting.pipeline import fetch
from reporting.pipeline.render import (
    RenderedEmail,
    RenderError,
    RenderRequest,
    chart_specs,
    period_values,
    render,
    render_string,
)

BASE_URL = "http://127.0.0.1:8000/demo-api/"
MARCH = period_containing("monthly", date(2025, 3, 14))
GENERATED_AT = datetime(2025, 4, 1, 6, 0, tzinfo=UTC)


def _money(amount: float) -> str:
    """What floatformat:"2g" shows under the project's en-gb locale."""
    return f"{amount:,.2f}"


def _recipient_context(recipient: Recipient) -> dict[str, str]:
    """What a per-recipient run gives templates as `recipient`: email, name and each attribute."""
    return {"email": recipient.email, "name": recipient.name, **recipient.attributes}


def _totals(rows: list[dict[str, Any]]) -> dict[str, float]:
    """As the per-recipient run sums them: the int and float values (not bools) of each column."""
    totals: dict[str, float] = {}
    for row in rows:
        for column, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                totals[column] = totals.get(column, 0) + value
    return totals


def _statement_of(client, recipient: Recipient, report: Report) -> dict[str, Any]:
    """The statement the recipient's fetch would get: the report's path and query rendered for them."""
    context = {"recipient": _recipient_context(recipient), "period": period_values(MARCH)}
    path = render_string(report.path, context, what="path")
    query = {key: render_string(value, context, what=key) for key, value in report.query_params.items()}
    response = client.get(f"/demo-api/{path}?{urlencode(query)}")
    assert response.status_code == 200, response.content
    return response.json()


def _render_statement(report: Report, recipient: Recipient, statement: dict[str, Any]) -> RenderedEmail:
    rows = fetch.select_rows(statement, report.records_path)
    return render(
        RenderRequest(
            template_name=report.template,
            subject_template=report.subject_template,
            report={"name": report.name, "slug": report.slug, "description": report.description},
            period=MARCH,
            data=statement,
            rows=rows,
            generated_at=GENERATED_AT,
            timezone=report.timezone,
            attach_csv=report.attach_csv,
            charts=chart_specs(report.charts),
            max_rows=report.email_max_rows,
            context_extra={
                "recipient": _recipient_context(recipient),
                "totals": _totals(rows),
                "row_count": len(rows),
            },
        )
    )


@pytest.fixture
def demo(db):
    return install_demo(base_url=BASE_URL)


def test_it_gives_each_client_a_contact_with_the_attributes_of_its_statement(demo):
    clients_list = RecipientList.objects.get(name="Clients")

    contacts = {recipient.attributes["client_id"]: recipient for recipient in clients_list.recipients.all()}

    assert set(contacts) == {client.client_id for client in data.CLIENTS}
    for client in data.CLIENTS:
        recipient = contacts[client.client_id]
        email, name, first_name = CLIENT_CONTACTS[client.client_id]
        assert (recipient.email, recipient.name, recipient.active) == (email, name, True)
        assert recipient.email.endswith("@example.com")
        assert recipient.attributes == {
            "client_id": client.client_id,
            "client_name": client.name,
            "currency": client.currency,
            "first_name": first_name,
        }
        recipient.full_clean()  # the attributes pass the model's own validation


def test_it_installs_a_monthly_statement_fetched_for_each_client(demo):
    statement, _positions = demo.client_reports

    assert statement.slug == "client-statement"
    assert statement.audience == Report.Audience.EACH
    assert statement.per_recipient_data == Report.PerRecipientData.FETCH
    assert statement.path == "clients/{{ recipient.client_id }}/statement"
    assert statement.records_path == "positions"
    assert statement.period_kind == Report.PeriodKind.MONTHLY
    assert statement.template == "reports/client_statement.html"
    assert list(statement.recipient_lists.values_list("name", flat=True)) == ["Clients"]
    assert statement.recipient_addresses() == sorted(email for email, _name, _first in CLIENT_CONTACTS.values())
    crontab = statement.periodic_task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_month, str(crontab.timezone)) == (
        "0",
        "7",
        "1",
        "Europe/London",
    )
    assert statement.periodic_task.enabled


def test_it_keeps_the_finance_reports_as_they_were(demo):
    assert [report.slug for report in demo.reports] == ["daily-portfolio-summary", "monthly-performance"]
    for report in demo.reports:
        assert report.audience == Report.Audience.EVERYONE
        assert "Clients" not in report.recipient_lists.values_list("name", flat=True)


def test_installing_twice_makes_nothing_twice(demo):
    counts = (Recipient.objects.count(), RecipientList.objects.count(), Report.objects.count())
    Recipient.objects.filter(email="maya.calloway@example.com").update(attributes={"client_id": "C999"})

    again = install_demo(base_url=BASE_URL)

    assert (Recipient.objects.count(), RecipientList.objects.count(), Report.objects.count()) == counts
    assert RecipientList.objects.get(name="Clients").recipients.count() == len(data.CLIENTS)
    assert Report.objects.filter(slug="client-statement").count() == 1
    assert again.client_reports[0].pk == demo.client_reports[0].pk
    assert Recipient.objects.get(email="maya.calloway@example.com").attributes["client_id"] == "C003"


@pytest.mark.parametrize("client_id", [client.client_id for client in data.CLIENTS])
def test_each_contacts_fetch_reads_their_own_clients_statement(client, demo, client_id):
    recipient = Recipient.objects.get(attributes__client_id=client_id)

    statement = _statement_of(client, recipient, demo.client_reports[0])

    assert statement["client_id"] == client_id
    assert (statement["from"], statement["to"]) == ("2025-03-01", "2025-03-31")
    assert {row["client_id"] for row in statement["positions"]} == {client_id}


def test_the_statement_names_the_client_and_shows_its_figures(client, demo):
    report = demo.client_reports[0]
    recipient = Recipient.objects.get(attributes__client_id="C004")
    statement = _statement_of(client, recipient, report)

    email = _render_statement(report, recipient, statement)

    summary = statement["summary"]
    assert email.subject == "Your statement for March 2025 — Dubois Holdings SA"
    for part in (email.html, email.text):
        assert "Dear Élodie," in part
        assert "Dubois Holdings SA" in part
        assert "C004" in part
        assert _money(summary["start_value"]) in part
        assert _money(summary["end_value"]) in part
        assert _money(abs(summary["change"])) in part
        assert f"{abs(summary['change_pct']):.2f}" in part
        assert "EUR" in part
        assert "GBP" not in part
        for position in statement["positions"]:
            assert _money(position["market_value"]) in part
        for allocation in statement["by_asset_class"]:
            assert allocation["asset_class"] in part
        assert "elodie.dubois@example.com" in part
    for position in statement["positions"]:
        assert position["isin"] in email.html
        assert position["instrument"][:27] in email.text
    assert f"Total of {len(statement['positions'])} positions (EUR)" in email.html
    assert f"{len(statement['positions'])} positions." in email.text


def test_the_statement_totals_are_the_sums_of_the_clients_rows(client, demo):
    report = demo.client_reports[0]
    recipient = Recipient.objects.get(attributes__client_id="C001")
    statement = _statement_of(client, recipient, report)
    totals = _totals(statement["positions"])

    email = _render_statement(report, recipient, statement)

    assert totals["market_value"] == pytest.approx(statement["summary"]["end_value"], abs=0.005)
    assert totals["change"] == pytest.approx(statement["summary"]["change"], abs=0.005)
    for part in (email.html, email.text):
        assert part.count(_money(totals["market_value"])) >= 2  # the headline and the total row
    # No other client's holdings: every instrument shown is one of theirs.
    theirs = {position["isin"] for position in statement["positions"]}
    others = {instrument.isin for instrument in data.INSTRUMENTS} - theirs
    assert others and not any(isin in email.html for isin in others)


def test_the_statement_draws_its_charts_from_the_clients_own_data(client, demo):
    report = demo.client_reports[0]
    recipient = Recipient.objects.get(attributes__client_id="C003")

    email = _render_statement(report, recipient, _statement_of(client, recipient, report))

    assert [image.filename for image in email.inline_images] == ["chart-1.png", "chart-2.png"]
    assert 'alt="Your allocation by asset class — March 2025"' in email.html
    assert 'alt="Your portfolio value — March 2025"' in email.html
    assert "- Your portfolio value — March 2025" in email.text
    assert [file.filename for file in email.files] == ["client-statement_2025-03-01_2025-03-31.csv"]


def test_the_statement_escapes_the_clients_name_in_the_html_part_only(client, demo):
    report = demo.client_reports[0]
    recipient = Recipient.objects.get(attributes__client_id="C002")

    email = _render_statement(report, recipient, _statement_of(client, recipient, report))

    assert "Brennan &amp; Okafor Pension Scheme" in email.html
    assert "Brennan & Okafor" not in email.html
    assert "Brennan & Okafor Pension Scheme" in email.text
    assert "Dear Tomás," in email.text


def test_the_statement_greets_a_contact_without_a_first_name_by_name(client, demo):
    report = demo.client_reports[0]
    recipient = Recipient.objects.get(attributes__client_id="C005")
    statement = _statement_of(client, recipient, report)
    recipient.attributes = {"client_id": "C005", "client_name": "Eastgate Endowment"}

    email = _render_statement(report, recipient, statement)

    assert "Dear Samuel Eastgate," in email.html
    assert "Dear Samuel Eastgate," in email.text


def test_the_statement_path_is_refused_for_a_recipient_without_a_client(client, demo):
    report = demo.client_reports[0]
    context = {"recipient": {"email": "someone@example.com", "name": ""}, "period": period_values(MARCH)}

    with pytest.raises(RenderError, match=r"recipient\.client_id"):
        render_string(report.path, context, what="path")


def test_the_demo_urls_name_the_client_endpoints():
    assert reverse("demo-client-statement", args=["C001"]) == "/demo-api/clients/C001/statement"
    assert reverse("demo-clients-positions") == "/demo-api/clients/positions"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("slug", ["client-statement", "client-positions"])
def test_the_demo_sends_each_client_contact_their_own_clients_figures_only(live_server, use_smtp, slug):
    """The demo's per-client reports, run against the demo API served for real: one email per contact, theirs."""
    from reporting import parts, runs

    demo = install_demo(base_url=live_server.url + "/demo-api/")
    report = next(each for each in demo.client_reports if each.slug == slug)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 10, 15), requested_by_id=None)
    runs.execute_run(run_id=run.pk)
    runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))

    run.refresh_from_db()
    assert run.status == "sent", run.error
    assert len(use_smtp.messages) == len(data.CLIENTS)
    for client in data.CLIENTS:
        email, _name, _first = CLIENT_CONTACTS[client.client_id]
        [message] = use_smtp.messages_to(email)
        html = message.get_body(("html",)).get_content()
        assert message["Subject"].endswith(f"— {client.name}")
        own = _isins_of(client)
        others = {isin for other in data.CLIENTS if other is not client for isin in _isins_of(other)} - own
        assert own and all(isin in html for isin in own)
        assert not [isin for isin in others if isin in html], f"{email} got another client's position"
        if slug == "client-positions":  # laid out by its designed layout: labels, totals, headline
            assert ">Market value</th>" in html and "Portfolio value" in html and "Total (" in html
            assert f"{escape(client.name)}, your positions at the close of" in html


def _isins_of(client: data.Client) -> set[str]:
    return {instrument.isin for instrument, _quantity in data.client_holdings(client)}


@pytest.mark.parametrize(
    "backend, words",
    [
        ("reporting.mail.EmlFileBackend", "sent emails are written to"),
        ("django.core.mail.backends.smtp.EmailBackend", "emails are sent through the SMTP server mail.example.com:587"),
        ("anymail.backends.postmark.EmailBackend", "emails are sent through Postmark (django-anymail)"),
    ],
)
def test_the_demo_banner_says_where_emails_really_go(settings, backend, words):
    from reporting.management.commands.setup_demo import where_emails_go

    settings.EMAIL_BACKEND, settings.EMAIL_HOST, settings.EMAIL_PORT = backend, "mail.example.com", 587

    assert where_emails_go().startswith(words)
