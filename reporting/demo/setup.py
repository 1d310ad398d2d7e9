"""Demo data: the demo API as a data source, reports on real schedules, a staff user.

Two reports go to the finance team and the board; a monthly statement goes to each of the
demo API's clients, every contact with their own client's figures only.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from reporting import schedules
from reporting.demo import data
from reporting.models import DataSource, Recipient, RecipientList, Report

DEMO_USERNAME = "demo"
CLIENTS_LIST = "Clients"
# The contact at each demo client: address, full name, first name.
CLIENT_CONTACTS = {
    "C001": ("harriet.ashdown@example.com", "Harriet Ashdown", "Harriet"),
    "C002": ("tomas.brennan@example.com", "Tomás Brennan", "Tomás"),
    "C003": ("maya.calloway@example.com", "Maya Calloway", "Maya"),
    "C004": ("elodie.dubois@example.com", "Élodie Dubois", "Élodie"),
    "C005": ("samuel.eastgate@example.com", "Samuel Eastgate", "Samuel"),
    "C006": ("ingrid.fairlie@example.com", "Ingrid Fairlie", "Ingrid"),
}


@dataclass(frozen=True)
class DemoSetup:
    username: str
    password: str
    reports: list[Report]  # to the same people: the finance team, the board
    client_reports: list[Report]  # each client's contact their own


@transaction.atomic
def install_demo(*, base_url: str, password: str | None = None) -> DemoSetup:
    """Create or refresh the demo objects; idempotent. Returns the staff login."""
    password = password or secrets.token_urlsafe(9)
    user = _staff_user(password)
    source, _ = DataSource.objects.update_or_create(
        name="Demo portfolio API", defaults={"base_url": base_url, "auth_scheme": DataSource.AuthScheme.NONE}
    )
    finance = _recipient_list(
        "Finance team", [("finance@example.com", "Finance team"), ("controller@example.com", "Financial controller")]
    )
    board = _recipient_list("Board", [("cfo@example.com", "Chief financial officer"), ("chair@example.com", "Chair")])
    daily = _report(
        slug="daily-portfolio-summary",
        name="Daily portfolio summary",
        description="Positions and day P&L of the model portfolio at the close of the previous day.",
        source=source,
        owner=user,
        path="portfolio/daily",
        query_params={"date": "{{ period.end|date:'Y-m-d' }}"},
        period_kind=Report.PeriodKind.DAILY,
        template="reports/portfolio_summary.html",
        subject_template="Portfolio summary — {{ period.label }}",
        cron=schedules.CronSpec(minute="0", hour="7", day_of_week="mon-fri", timezone="Europe/London"),
        lists=[finance],
        charts=[{"kind": "bar", "x": "asset_class", "y": "market_value", "title": "Allocation by asset class"}],
    )
    monthly = _report(
        slug="monthly-performance",
        name="Monthly performance",
        description="Performance of the model portfolio over the month, by asset class and position.",
        source=source,
        owner=user,
        path="portfolio/performance",
        query_params={"from": "{{ period.start|date:'Y-m-d' }}", "to": "{{ period.end|date:'Y-m-d' }}"},
        period_kind=Report.PeriodKind.MONTHLY,
        template="reports/monthly_performance.html",
        subject_template="Monthly performance — {{ period.label }}",
        cron=schedules.CronSpec(minute="0", hour="7", day_of_month="1", timezone="Europe/London"),
        lists=[finance, board],
        charts=[
            {"kind": "line", "x": "date", "y": "value", "title": "Portfolio value", "rows": "daily"},
            {
                "kind": "bar",
                "x": "asset_class",
                "y": "end_value",
                "title": "Allocation by asset class",
                "rows": "by_asset_class",
            },
        ],
        attach_xlsx=True,
    )
    clients = _clients_list()
    statement = _client_statement_report(source=source, owner=user, clients=clients)
    positions = _client_positions_report(source=source, owner=user, clients=clients)
    return DemoSetup(
        username=user.username, password=password, reports=[daily, monthly], client_reports=[statement, positions]
    )


def _clients_list() -> RecipientList:
    """The list "Clients": a contact at each demo client, with the attributes their statement reads."""
    recipient_list, _ = RecipientList.objects.get_or_create(name=CLIENTS_LIST)
    for client in data.CLIENTS:
        email, name, first_name = CLIENT_CONTACTS[client.client_id]
        recipient, _ = Recipient.objects.update_or_create(
            email=email,
            defaults={
                "name": name,
                "attributes": {
                    "client_id": client.client_id,
                    "client_name": client.name,
                    "currency": client.currency,
                    "first_name": first_name,
                },
            },
        )
        recipient_list.recipients.add(recipient)
    return recipient_list


def _client_statement_report(*, source: DataSource, owner, clients: RecipientList) -> Report:
    """Each client's month: one fetch per contact, of their own client's statement only."""
    return _report(
        slug="client-statement",
        name="Client statement",
        description="Your portfolio over the month: its value at the start and the end, and what it holds.",
        source=source,
        owner=owner,
        path="clients/{{ recipient.client_id }}/statement",
        query_params={"from": "{{ period.start|date:'Y-m-d' }}", "to": "{{ period.end|date:'Y-m-d' }}"},
        period_kind=Report.PeriodKind.MONTHLY,
        template="reports/client_statement.html",
        subject_template="Your statement for {{ period.label }} — {{ recipient.client_name }}",
        cron=schedules.CronSpec(minute="0", hour="7", day_of_month="1", timezone="Europe/London"),
        lists=[clients],
        audience=Report.Audience.EACH,
        per_recipient_data=Report.PerRecipientData.FETCH,
        split_field="",
        split_attribute="",
        when_no_rows=Report.WhenNoRows.HOLD,
        charts=[
            {"kind": "bar", "x": "asset_class", "y": "market_value", "title": "Your allocation by asset class"},
            {"kind": "line", "x": "date", "y": "value", "title": "Your portfolio value", "rows": "daily"},
        ],
    )


def _client_positions_report(*, source: DataSource, owner, clients: RecipientList) -> Report:
    """Each client's positions every weekday: one fetch of every client's rows, split by client_id."""
    return _report(
        slug="client-positions",
        name="Client positions",
        description="Your positions at the close of the previous business day.",
        source=source,
        owner=owner,
        path="clients/positions",
        query_params={"date": "{{ period.end|date:'Y-m-d' }}"},
        period_kind=Report.PeriodKind.DAILY,
        template="reports/table.html",
        subject_template="Your positions on {{ period.label }} — {{ recipient.client_name }}",
        cron=schedules.CronSpec(minute="30", hour="7", day_of_week="tue-sat", timezone="Europe/London"),
        lists=[clients],
        audience=Report.Audience.EACH,
        per_recipient_data=Report.PerRecipientData.SPLIT,
        split_field="client_id",
        split_attribute="client_id",
        when_no_rows=Report.WhenNoRows.SKIP,
        charts=[{"kind": "bar", "x": "asset_class", "y": "market_value", "title": "Your allocation by asset class"}],
        layout=CLIENT_POSITIONS_LAYOUT,
    )


# Laid out with the report form's designer (no template written): labels, amounts in each
# client's own currency, the largest first, totals, two headline figures and a greeting.
CLIENT_POSITIONS_LAYOUT = {
    "columns": [
        {"field": "instrument", "label": "Instrument"},
        {"field": "isin", "label": "ISIN"},
        {"field": "asset_class", "label": "Asset class"},
        {"field": "quantity", "label": "Quantity", "format": "number", "decimals": 0},
        {"field": "price", "label": "Price", "format": "currency", "currency_field": "currency"},
        {"field": "market_value", "label": "Market value", "format": "currency", "currency_field": "currency",
         "total": True},
        {"field": "weight_pct", "label": "Weight", "format": "percent", "decimals": 1, "percent_points": True,
         "total": True},
    ],
    "sort": [{"field": "market_value", "descending": True}],
    "headline": [
        {"label": "Portfolio value", "total_of": "market_value", "format": "currency", "currency_field": "currency"},
        {"label": "Positions", "row_count": True},
    ],
    "intro": "{{ recipient.client_name }}, your positions at the close of {{ period.label }}.",
}  # fmt: skip


def _staff_user(password: str):
    user, _ = get_user_model().objects.get_or_create(username=DEMO_USERNAME)
    user.email = "demo@example.com"
    user.first_name = "Demo"
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return user


def _recipient_list(name: str, people: list[tuple[str, str]]) -> RecipientList:
    recipient_list, _ = RecipientList.objects.get_or_create(name=name)
    for email, person in people:
        recipient, _ = Recipient.objects.get_or_create(email=email, defaults={"name": person})
        recipient_list.recipients.add(recipient)
    return recipient_list


def _report(*, slug: str, cron: schedules.CronSpec, lists: list[RecipientList], source: DataSource, **fields) -> Report:
    report, _ = Report.objects.update_or_create(
        slug=slug, defaults={"data_source": source, "timezone": cron.timezone, "records_path": "positions", **fields}
    )
    report.recipient_lists.set(lists)
    schedules.save_schedule(report=report, spec=cron)
    return report
