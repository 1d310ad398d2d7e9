"""The five-minute journey, in a real browser: a staff member builds a presentable report from an
API nobody here wrote (labelled columns, amounts in each row's currency, totals, a headline and a
chart), previews it live, schedules it a minute ahead, and it goes out at its minute with exactly
those figures. The test prints the clicks and seconds it took; screenshots of each step are kept.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from reporting.models import Report, ReportRun
from tests import beatkit
from tests.browser.conftest import log_in, shoot, shoot_element
from tests.test_tasks import wait_for

# An API shaped its own way: rows under result.holdings, amounts as text, the currency per row.
PORTFOLIO = {
    "meta": {"as_of": "2026-11-30", "nav": "1281400.75", "book": "Growth"},
    "result": {
        "holdings": [
            {"ticker": "ACME", "asset_class": "Equity", "qty": 1200, "mv": "612400.50", "ccy": "EUR",
             "pnl_day": "-1830.25", "weight_pct": 47.8},
            {"ticker": "BND29", "asset_class": "Bond", "qty": 400, "mv": "401000.00", "ccy": "EUR",
             "pnl_day": "220.00", "weight_pct": 31.3},
            {"ticker": "GLBX", "asset_class": "Equity", "qty": 300, "mv": "268000.25", "ccy": "EUR",
             "pnl_day": "905.10", "weight_pct": 20.9},
        ]
    },
}  # fmt: skip


class Steps:
    """Counts what the staff member does: clicks, fields filled, options chosen."""

    def __init__(self, page):
        self.page, self.clicks, self.typed = page, 0, 0

    def click(self, locator):
        self.clicks += 1
        locator.click()

    def fill(self, selector: str, value: str):
        self.typed += 1
        self.page.fill(selector, value)

    def choose(self, locator, **option):
        self.clicks += 1
        locator.select_option(**option)


@pytest.fixture
def portfolio_api(httpserver):
    httpserver.expect_request("/v2/books/growth/holdings").respond_with_json(PORTFOLIO)
    return httpserver.url_for("/v2/")


def test_a_staff_member_builds_a_good_looking_report_from_a_new_api_in_minutes(
    page, admin_user, portfolio_api, worker, use_smtp
):
    page.context.clear_cookies()
    log_in(page, "admin", "password")
    steps = Steps(page)
    started = time.monotonic()

    # The data source.
    page.goto("/admin/reporting/datasource/add/")
    steps.fill("#id_name", "Portfolio API")
    steps.fill("#id_base_url", portfolio_api)
    steps.click(page.locator("input[name=_save]"))
    page.wait_for_url("**/admin/reporting/datasource/")

    # The report: its data, then a sample of the live answer.
    page.goto("/admin/reporting/report/add/")
    steps.fill("#id_name", "Growth book")
    steps.choose(page.locator("#id_data_source"), label="Portfolio API")
    steps.fill("#id_path", "books/growth/holdings")
    steps.click(page.get_by_role("button", name="Fetch a sample"))
    page.wait_for_selector("[data-records-choice]")
    shoot(page, "designer-1-sample-lists")
    steps.choose(page.locator("[data-records-choice]"), value="result.holdings")
    page.wait_for_selector("[data-column=mv]")
    assert page.locator("#id_records_path").input_value() == "result.holdings"
    assert "3 rows" in page.locator("[data-sample-status]").inner_text()
    # Suggested from the answer: every field a column, amounts in the row's currency (ccy), totalled.
    assert page.locator("[data-column=mv] select[aria-label='Format of mv']").input_value() == "currency"
    assert page.locator("[data-column=mv] select[aria-label='Currency of mv from']").input_value() == "ccy"
    shoot(page, "designer-2-suggested")

    # Labels, a column left out, the order, a headline.
    for field, label in (("ticker", "Instrument"), ("asset_class", "Class"), ("qty", "Units"),
                         ("mv", "Market value"), ("pnl_day", "Day P&L"), ("weight_pct", "Weight")):  # fmt: skip
        steps.fill(f"[data-column={field}] input[aria-label='Label of {field}']", label)
    steps.click(page.locator("[data-column=ccy] input[aria-label='Show ccy']"))
    steps.fill("[data-column=qty] input[aria-label='Decimals of qty']", "0")
    steps.click(page.locator("[data-column=pnl_day] input[aria-label='pnl_day red if negative']"))
    steps.choose(page.locator("select[aria-label='Sort rows by']"), value="mv")
    steps.click(page.locator("input[aria-label='Largest first']"))
    steps.click(page.get_by_role("button", name="Add a headline figure"))
    steps.choose(page.locator("select[aria-label='Headline figure 1: value']"), value="path:meta.nav")
    steps.fill("input[aria-label='Headline figure 1: label']", "Net asset value")
    steps.choose(page.locator("select[aria-label='Headline figure 1: format']"), value="currency")
    steps.click(page.get_by_role("button", name="Add a headline figure"))
    steps.choose(page.locator("select[aria-label='Headline figure 2: value']"), value="total:pnl_day")
    steps.fill("input[aria-label='Headline figure 2: label']", "Day P&L")
    steps.fill("#id_layout-intro", "Holdings of the {{ data.meta.book }} book at {{ data.meta.as_of }}.")

    # A chart, picked from fields.
    steps.choose(page.locator("#id_charts-0-kind"), label="Bars by category")
    steps.fill("#id_charts-0-x", "asset_class")
    steps.fill("#id_charts-0-y", "mv")
    steps.fill("#id_charts-0-title", "Allocation")

    # The live preview shows the email as it will be sent.
    frame = page.frame_locator("iframe[title='Email HTML (live preview)']")
    frame.get_by_text("Net asset value", exact=True).wait_for()
    page.wait_for_function(
        "() => document.querySelector('[data-preview-status]').dataset.state === 'ok'"
        " && document.querySelector('[data-preview-frame]').srcdoc.includes('Holdings of the Growth book')"
    )
    srcdoc = page.locator("[data-preview-frame]").get_attribute("srcdoc")
    assert "€1,281,400.75" in srcdoc and "-€705.15" in srcdoc  # the headline figures: meta.nav, the P&L total
    assert 'alt="Allocation' in srcdoc  # the chart
    shoot(page, "designer-3-live-preview")
    shoot_element(page.locator("iframe[title='Email HTML (live preview)']"), "designer-3b-previewed-email")

    # Who gets it, and when: a minute ahead, daily.
    slot = _next_slot()
    steps.fill("#id_recipient_addresses", "finance@example.com")
    steps.choose(page.locator("#id_timezone"), value="UTC")
    steps.choose(page.locator("#id_schedule_kind"), value="daily")
    steps.fill("#id_schedule_time", slot.strftime("%H:%M"))
    steps.click(page.locator("input[name=_continue]"))
    page.wait_for_selector("text=was added successfully")
    seconds = time.monotonic() - started
    shoot(page, "designer-4-saved")
    print(f"\nFive-minute journey: {steps.clicks} clicks and {steps.typed} fields typed in {seconds:.0f} s")
    report = Report.objects.get(name="Growth book")
    assert [column["field"] for column in report.layout["columns"]] == [
        "ticker", "asset_class", "qty", "mv", "pnl_day", "weight_pct"]  # fmt: skip
    assert report.layout["columns"][3] == {
        "field": "mv", "label": "Market value", "format": "currency", "currency_field": "ccy", "total": True,
    }  # fmt: skip

    # At its minute, beat publishes it and the worker sends it: exactly those figures. The clock is
    # moved on to the minute rather than waited for (the end-to-end tests wait for real minutes).
    scheduler = beatkit.start_beat()
    assert not beatkit.entries_by_report(scheduler)[report.pk].is_due()[0]  # not before its minute
    with time_machine.travel(slot + timedelta(seconds=1), tick=True):
        beatkit.run_due(scheduler)
        wait_for(lambda: use_smtp.messages_to("finance@example.com"), timeout=60)
    [email] = use_smtp.messages_to("finance@example.com")
    html = email.get_body(("html",)).get_content()
    assert ">Instrument</th>" in html and ">Market value</th>" in html and ">ccy</th>" not in html
    assert html.index("ACME") < html.index("BND29") < html.index("GLBX")  # by market value, largest first
    assert "€612,400.50" in html and "€1,281,400.75" in html  # a row, and the total (= the NAV here)
    assert "-€1,830.25" in html and "color:#b42318" in html  # a loss, in red
    headline = html[html.index("Day P&amp;L</div>") :][:400]
    assert "-€705.15" in headline and "#b42318" in headline  # the P&L headline: the column's total, its format
    assert "Holdings of the Growth book at 2026-11-30." in html
    assert "Total (3 rows)" in html
    assert any(part.get_content_type() == "image/png" for part in email.walk())
    # The email is out; the run is marked sent just after (the worker records each send once it is done).
    wait_for(lambda: ReportRun.objects.get(report=report).status == ReportRun.Status.SENT, timeout=30)
    run = ReportRun.objects.get(report=report)
    assert run.trigger == ReportRun.Trigger.SCHEDULE
    page.goto(f"/admin/reporting/reportrun/{run.pk}/change/")
    shoot_element(page.locator("iframe[title='Email HTML']"), "designer-5-sent-email")


def _next_slot() -> datetime:
    """The next whole minute at least 8 s away (UTC): the schedule the staff member picks."""
    soon = datetime.now(UTC) + timedelta(seconds=8)
    return soon.replace(second=0, microsecond=0) + timedelta(minutes=1)
