"""Demo data: the demo API as a data source, two reports on real schedules, a staff user."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from reporting import schedules
from reporting.models import DataSource, Recipient, RecipientList, Report

DEMO_USERNAME = "demo"


@dataclass(frozen=True)
class DemoSetup:
    username: str
    password: str
    reports: list[Report]


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
    return DemoSetup(username=user.username, password=password, reports=[daily, monthly])


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
