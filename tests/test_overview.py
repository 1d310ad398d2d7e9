"""The overview page: what needs attention, per report, in a fixed number of queries."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reporting import overview
from reporting.models import Report, ReportRun
from tests import factories

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # a Tuesday; London is on UTC
Status = ReportRun.Status


def report_with_runs(source, slug: str, statuses: list[str], *, scheduled: bool = True) -> Report:
    """A daily 07:00 London report created a week ago, with runs of these statuses, oldest first."""
    with time_machine.travel(NOW - timedelta(days=7), tick=False):
        report = factories.report(source, slug=slug, name=slug.title())
        if scheduled:
            factories.schedule(report, minute="0", hour="7")
    for age, status in enumerate(reversed(statuses), start=1):
        ReportRun.objects.create(
            report=report,
            period_start="2026-11-01",
            period_end="2026-11-01",
            period_key=f"{slug}-{age}",
            trigger=ReportRun.Trigger.MANUAL,
            status=status,
            created_at=NOW - timedelta(hours=age),
        )
    return report


def scheduled_run_for_today(report: Report) -> None:
    """The run of today's 07:00 slot (yesterday's period), older than the runs report_with_runs made."""
    ReportRun.objects.create(
        report=report,
        period_start="2026-11-23",
        period_end="2026-11-23",
        period_key="2026-11-23..2026-11-23",
        trigger=ReportRun.Trigger.SCHEDULE,
        status=Status.SENT,
        created_at=NOW - timedelta(hours=5),
    )


def rows_by_slug():
    with time_machine.travel(NOW, tick=False):
        return {row.report.slug: row for row in overview.report_health(list(overview.enabled_reports()))}


def test_it_tells_what_needs_attention_per_report(source):
    healthy = report_with_runs(source, "healthy", [Status.FAILED, Status.SENT])
    scheduled_run_for_today(healthy)
    failing = report_with_runs(source, "failing", [Status.SENT, Status.FAILED, Status.FAILED])
    scheduled_run_for_today(failing)
    missed = report_with_runs(source, "missed", [Status.SENT, Status.MISSED])
    scheduled_run_for_today(missed)
    held = report_with_runs(source, "held", [Status.SENT, Status.HELD])
    scheduled_run_for_today(held)
    report_with_runs(source, "late", [Status.SENT])  # today's 07:00 slot passed with no run
    report_with_runs(source, "by-hand", [], scheduled=False)

    rows = rows_by_slug()

    assert not rows["healthy"].needs_attention and rows["healthy"].consecutive_failures == 0
    assert rows["healthy"].next_run == datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    assert rows["failing"].consecutive_failures == 2 and not rows["failing"].late
    assert rows["missed"].missed == 1 and rows["held"].held == 1
    assert rows["late"].late and rows["late"].last_success_at == NOW - timedelta(hours=1)
    assert rows["by-hand"].next_run is None and not rows["by-hand"].late and rows["by-hand"].last_success_id is None


def test_a_report_created_after_its_slot_is_not_late(source):
    with time_machine.travel(NOW - timedelta(hours=1), tick=False):
        report = factories.report(source, slug="new")
        factories.schedule(report, minute="0", hour="7")

    assert not rows_by_slug()["new"].late


def test_the_page_lists_them_with_a_fixed_number_of_queries(staff_client, source):
    def queries_for(count: int) -> int:
        for number in range(count - Report.objects.count()):
            report_with_runs(source, f"r{Report.objects.count()}-{number}", [Status.SENT, Status.FAILED])
        with time_machine.travel(NOW, tick=False), CaptureQueriesContext(connection) as queries:
            response = staff_client.get(reverse("admin:reporting_report_overview"))
        assert response.status_code == 200
        return len(queries)

    assert queries_for(3) == queries_for(30)
    page = staff_client.get(reverse("admin:reporting_report_overview")).content.decode()
    assert page.count('class="needs-attention"') == 30
    assert 'class="local-time"' in page


def test_the_report_list_links_to_it_and_viewers_may_see_it(client, source):
    report_with_runs(source, "one", [Status.SENT])
    client.force_login(factories.staff_user("vera", "view_report"))

    listing = client.get(reverse("admin:reporting_report_changelist")).content.decode()
    response = client.get(reverse("admin:reporting_report_overview"))

    assert reverse("admin:reporting_report_overview") in listing
    assert response.status_code == 200 and "One" in response.content.decode()
    client.force_login(factories.staff_user("nobody"))
    assert client.get(reverse("admin:reporting_report_overview")).status_code == 403


def test_a_report_that_only_fails_says_so_in_its_attention_cell(staff_client, source):
    report_with_runs(source, "failing", [Status.SENT, Status.FAILED, Status.FAILED])
    scheduled_run_for_today(Report.objects.get(slug="failing"))

    with time_machine.travel(NOW, tick=False):
        page = staff_client.get(reverse("admin:reporting_report_overview")).content.decode()

    row = page[page.index('data-report="failing"') :]
    cell = row[row.index('<td class="flags">') : row.index("</td>", row.index('<td class="flags">'))]
    assert "2 failed in a row" in cell
