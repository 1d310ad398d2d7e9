"""The admin's pages make a fixed number of queries, however many reports, runs and deliveries there are.

Each page is requested with 3 reports × 3 runs (2 deliveries each) and again with 30 reports ×
30 runs (with deliveries, one run with 30): the count must be the same, and at most the
page's budget. Runs span two years in both, so that the date hierarchy takes the same path.
The benchmark (bench/bench_admin.py) times the same pages on 10,000 reports and 200,000 runs.
"""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reporting.models import Delivery, ReportRun
from tests import factories

pytestmark = pytest.mark.django_db
FIRST_RUN = datetime(2025, 1, 6, 7, 0, tzinfo=UTC)
ARCHIVE_SPAN = timedelta(days=600)


class Archive:
    """Reports with schedules, their runs spread over two years, and a delivery per address."""

    def __init__(self, source):
        self.source = source
        self.reports = []

    def grow(self, *, reports: int, runs_per_report: int) -> None:
        for index in range(len(self.reports), reports):
            report = factories.report(
                self.source, name=f"Report {index:02d}", slug=f"report-{index:02d}", addresses=["ann@example.com"]
            )
            factories.schedule(report, minute=str(index % 60), hour="7")
            self.reports.append(report)
        for report in self.reports:
            self._add_runs(report, runs_per_report - report.runs.count())

    def _add_runs(self, report, count: int) -> None:
        step = ARCHIVE_SPAN / max(count - 1, 1)
        created = ReportRun.objects.bulk_create(
            ReportRun(
                report=report,
                period_start=date(2025, 1, 1) + timedelta(days=number),
                period_end=date(2025, 1, 1) + timedelta(days=number),
                period_key=f"manual-{number}",
                trigger=ReportRun.Trigger.MANUAL,
                status=[ReportRun.Status.SENT, ReportRun.Status.FAILED][number % 2],
                recipients=["ann@example.com", "bob@example.com"],
                created_at=FIRST_RUN + step * number,
                subject=f"{report.name} — day {number}",
                body_html="<p>Archived</p>",
                body_text="Archived",
                rendered_at=FIRST_RUN + step * number,
            )
            for number in range(count)
        )
        Delivery.objects.bulk_create(
            Delivery(run=run, address=address, status=Delivery.Status.DELIVERED)
            for run in created
            for address in run.recipients
        )

    def busiest_run(self, deliveries: int) -> ReportRun:
        """The first report's latest run, with `deliveries` deliveries in all."""
        run = self.reports[0].runs.latest()
        Delivery.objects.bulk_create(
            Delivery(run=run, address=f"extra{number}@example.com", status=Delivery.Status.SENT)
            for number in range(run.deliveries.count(), deliveries)
        )
        return run


@pytest.fixture
def archive(source):
    return Archive(source)


def queries_for(client, method: str, url: str, data: dict) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = getattr(client, method)(url, data)
    assert response.status_code == 200, response.status_code
    return len(captured.captured_queries)


CHANGELIST = "admin:reporting_reportrun_changelist"
# (page, method, URL name, query string or form, most queries allowed: session, user and the
# page's own). A value "report" stands for the first report's id, "all" for every run's id;
# a run's own pages are those of the busiest run.
PAGES = [
    ("report list", "get", "admin:reporting_report_changelist", {}, 6),
    ("run list", "get", CHANGELIST, {}, 5),
    ("run list by status", "get", CHANGELIST, {"status__exact": "failed"}, 5),
    ("run list by report", "get", CHANGELIST, {"report__id__exact": "report"}, 6),
    ("run list of a month", "get", CHANGELIST, {"created_at__year": "2025", "created_at__month": "3"}, 5),
    ("run list searched by address", "get", CHANGELIST, {"q": "ann@example.com"}, 5),
    ("run list searched by report name", "get", CHANGELIST, {"q": "Report 01"}, 5),
    ("run page", "get", "admin:reporting_reportrun_change", {}, 6),
    ("resend confirmation, posted", "post", CHANGELIST, {"action": "resend", "_selected_action": "all"}, 4),
    ("resend confirmation page", "get", "admin:reporting_reportrun_resend", {}, 3),
]


def request_args(archive: Archive, run: ReportRun, url_name: str, params: dict) -> tuple[str, dict]:
    url = reverse(url_name, args=[run.pk]) if url_name.endswith(("_change", "_resend")) else reverse(url_name)
    values = {
        "report": str(archive.reports[0].pk),
        "all": [str(pk) for pk in ReportRun.objects.values_list("pk", flat=True)],
    }
    return url, {name: values.get(value, value) for name, value in params.items()}


@pytest.mark.parametrize(("page", "method", "url_name", "params", "budget"), PAGES, ids=[page[0] for page in PAGES])
def test_the_page_makes_the_same_queries_for_3_and_30_reports(
    staff_client, archive, django_assert_max_num_queries, page, method, url_name, params, budget
):
    archive.grow(reports=3, runs_per_report=3)
    run = archive.busiest_run(deliveries=3)
    url, data = request_args(archive, run, url_name, params)
    queries_for(staff_client, method, url, data)  # once to warm per-process caches (content types, …)
    small = queries_for(staff_client, method, url, data)

    archive.grow(reports=30, runs_per_report=30)
    run = archive.busiest_run(deliveries=30)
    url, data = request_args(archive, run, url_name, params)
    with django_assert_max_num_queries(budget):
        large = queries_for(staff_client, method, url, data)

    assert large == small


def test_the_report_list_shows_each_reports_latest_runs_oldest_first(staff_client, archive):
    archive.grow(reports=2, runs_per_report=12)

    page = staff_client.get(reverse("admin:reporting_report_changelist")).content.decode()

    history = page.split('class="run-history"')[1].split("</a>")[0]
    assert history.count("run-mark") == 10
    assert history.count('title="Failed"') == 5 and history.count('title="Sent"') == 5
    assert history.index('title="Sent"') < history.index('title="Failed"')  # run 2 (sent) before run 11 (failed)


def test_the_run_list_filters_by_a_report_without_listing_every_report(staff_client, archive):
    archive.grow(reports=3, runs_per_report=2)
    chosen, other = archive.reports[0], archive.reports[1]
    url = reverse(CHANGELIST)

    unfiltered = staff_client.get(url).content.decode()
    filtered = staff_client.get(url, {"report__id__exact": chosen.pk}).content.decode()

    assert f"?report__id__exact={other.pk}" in unfiltered  # the report column links to its runs
    assert "By report" not in unfiltered  # no list of every report in the sidebar
    assert "By report" in filtered and "2 report runs" in filtered
    assert f"{other.name} ·" not in filtered


def test_the_run_list_links_the_years_between_the_first_and_the_last_run(staff_client, archive):
    archive.grow(reports=1, runs_per_report=3)  # 6 January 2025, 2 November 2025, 29 August 2026

    years = staff_client.get(reverse(CHANGELIST)).content.decode()
    months = staff_client.get(reverse(CHANGELIST), {"created_at__year": "2025"}).content.decode()

    assert "?created_at__year=2025" in years and "?created_at__year=2026" in years
    assert "created_at__month=1&" in months and "created_at__month=11&" in months
    assert "created_at__month=6&" in months  # in between, without a run: listed, and empty when chosen
    assert "created_at__month=12&" not in months
