"""A finance user's day in the admin, in a real browser: define a report, preview it, run it,
watch it, read the archived email, resend it, and see who may do what.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group

from reporting.models import Delivery, Recipient, Report, ReportRun
from tests.browser.conftest import log_in, shoot, shoot_element
from tests.test_tasks import wait_for

PAYLOAD = {
    "data": {
        "positions": [
            {"instrument": "Acme Corp", "asset_class": "Equity", "market_value": 125000.5},
            {"instrument": "Globex 4.25% 2032", "asset_class": "Bond", "market_value": 98000},
            {"instrument": "Initech ETF", "asset_class": "ETF", "market_value": 40500.25},
        ]
    }
}
CHARTS = [{"kind": "bar", "x": "asset_class", "y": "market_value", "title": "Allocation"}]


@pytest.fixture
def positions_api(httpserver):
    httpserver.expect_request("/api/positions").respond_with_json(PAYLOAD)
    return httpserver.url_for("/api/")


def test_a_staff_user_defines_previews_runs_reads_and_resends_a_report(
    page, admin_user, positions_api, worker, use_smtp
):
    Recipient.objects.create(email="ann@example.com", name="Ann")
    Recipient.objects.create(email="bob@example.com", name="Bob")
    page.context.clear_cookies()
    log_in(page, "admin", "password")

    # A data source.
    page.goto("/admin/reporting/datasource/add/")
    page.fill("#id_name", "Positions API")
    page.fill("#id_base_url", positions_api)
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/reporting/datasource/")

    # A report with recipients, a schedule and a chart.
    page.goto("/admin/reporting/report/add/")
    page.fill("#id_name", "Daily positions")
    page.select_option("#id_data_source", label="Positions API")
    page.fill("#id_path", "positions")
    page.fill("#id_records_path", "data.positions")
    page.select_option("#id_timezone", "Europe/London")
    page.select_option("#id_template", "reports/table.html")
    page.fill("#id_subject_template", "Daily positions — {{ period.label }}")
    # The chart is picked from fields, not typed as JSON: the field names as suggested, rows added and removed.
    assert page.locator(".field-charts [data-chart-row]").count() == 2  # empty rows to fill
    page.get_by_role("button", name="Add a chart").click()
    assert page.locator(".field-charts [data-chart-row]").count() == 3
    assert page.locator("[name=charts-count]").input_value() == "3"
    page.locator(".field-charts [data-chart-row]").nth(0).get_by_role("button", name="Remove").click()
    page.select_option("#id_charts-1-kind", label="Bars by category")
    page.fill("#id_charts-1-x", CHARTS[0]["x"])
    page.fill("#id_charts-1-y", CHARTS[0]["y"])
    page.fill("#id_charts-1-title", CHARTS[0]["title"])
    page.fill("#id_charts-2-x", "asset_class")  # the added row, begun and then removed
    page.locator(".field-charts [data-chart-row]").nth(1).get_by_role("button", name="Remove").click()
    assert page.locator(".field-charts [data-chart-row]").count() == 1
    page.fill("#id_minute", "0")
    page.fill("#id_hour", "7")
    page.fill("#id_day_of_week", "mon-fri")
    page.fill("#id_recipient_addresses", "ann@example.com, bob at example")  # checked as typed
    assert "Not an email address: bob at example" in page.locator(".typed-addresses").inner_text()
    page.fill("#id_recipient_addresses", "ann@example.com\nBob@Example.com")  # Bob's recipient is reused
    assert page.locator(".typed-addresses").inner_text() == "2 addresses"
    page.click("input[name=_continue]")
    page.wait_for_selector("text=was added successfully")

    # The schedule in words, the next five runs in London time and in the viewer's own.
    assert "At 07:00" in page.locator(".field-schedule_in_words").inner_text()
    assert page.locator("ol.next-runs time.local-time").count() == 5
    assert page.locator("ol.next-runs .viewer-time").count() == 5  # the browser is in New York
    assert "your time:" in page.locator("ol.next-runs li").first.inner_text()
    shoot(page, "1-report-page")
    report = Report.objects.get(name="Daily positions")
    assert report.charts == CHARTS

    # Preview: the email as it would be sent, nothing sent or archived.
    page.get_by_role("link", name="Preview…").click()
    page.wait_for_selector("#preview")
    assert page.locator("#preview-subject").inner_text().startswith("Daily positions — ")
    frame = page.frame_locator("iframe[title='Email HTML (preview)']")
    assert frame.locator("text=Acme Corp").count() == 1
    assert frame.locator("img[alt^='Allocation']").count() == 1
    assert "(a chart inside the email)" in page.locator("#preview-files").inner_text()
    shoot(page, "2-preview")
    shoot_element(page.locator("iframe[title='Email HTML (preview)']"), "2b-previewed-email")
    assert not ReportRun.objects.exists() and not use_smtp.messages

    # Run it now, and follow the run until it has been sent.
    page.goto(f"/admin/reporting/report/{report.pk}/change/")
    page.get_by_role("link", name="Run now…").click()
    page.click("input[type=submit][value='Run now']")
    page.get_by_role("link", name=re.compile(r"follow run #\d+")).click()
    # On the run's page (not still the page before it, which has no progress panel either):
    page.wait_for_url(re.compile(r"/admin/reporting/reportrun/\d+/change/"))
    # While the run works, its page shows a progress panel and reloads itself once the run has finished.
    page.wait_for_function(
        "() => !document.getElementById('run-progress')", timeout=30_000
    )  # a function: CSP forbids eval
    page.wait_for_selector("text=The email as sent")
    assert "Sent" in page.locator("div.form-row.field-status").inner_text()
    frame = page.frame_locator("iframe[title='Email HTML']")
    assert frame.locator("text=Globex 4.25% 2032").count() == 1
    shoot(page, "3-run-page")
    run = ReportRun.objects.get(report=report)
    assert sorted(address for m in use_smtp.messages for address in use_smtp.recipients_of(m)) == [
        "ann@example.com",
        "bob@example.com",
    ]
    for message in use_smtp.messages:  # the chart picked on the form, inside each email
        [chart] = [part for part in message.walk() if part.get_content_type() == "image/png"]
        html = next(part for part in message.walk() if part.get_content_type() == "text/html").get_content()
        assert re.search(rf'<img[^>]*src="cid:{re.escape(chart["Content-ID"].strip("<>"))}"[^>]*alt="Allocation', html)

    # Resend it to a typed address.
    page.get_by_role("link", name="Resend…").click()
    page.wait_for_url("**/resend/")
    page.check("input[name=target][value=typed]")
    page.fill("#id_addresses", "carol@example.com")
    page.click("input[type=submit][value='Review the recipients…']")
    # The confirmation lists exactly who will get it, and nothing is sent before it is confirmed.
    assert page.locator("#resend-plan .resend-addresses li").all_inner_texts() == ["carol@example.com"]
    assert not Delivery.objects.filter(run=run, kind="resend").exists()
    shoot(page, "4-resend-check-recipients")
    page.click("button[name=step][value=send]")
    page.wait_for_selector("text=is queued")
    shoot(page, "4-resend-queued")
    wait_for(lambda: use_smtp.messages_to("carol@example.com"), timeout=20)
    [resent] = use_smtp.messages_to("carol@example.com")
    assert resent["Subject"] == run.subject
    assert Delivery.objects.get(run=run, kind="resend").address == "carol@example.com"
    page.goto(f"/admin/reporting/reportrun/{run.pk}/change/")
    shoot_element(page.locator("iframe[title='Email HTML']"), "3b-archived-email")

    # Back on the report's page, the chart stands in its row, and the latest run's fields are suggested.
    page.goto(f"/admin/reporting/report/{report.pk}/change/")
    assert page.locator("#id_charts-0-kind").input_value() == "bar"
    assert page.locator("#id_charts-0-x").input_value() == "asset_class"
    suggested = page.locator("#id_charts-columns option").evaluate_all("options => options.map(o => o.value)")
    assert suggested == ["instrument", "asset_class", "market_value"]
    shoot_element(page.locator(".field-charts"), "1b-chart-fields")


def test_a_viewer_reads_the_archive_but_is_offered_no_resend(page, report, django_user_model):
    from reporting import runs

    _install_groups()  # a live server's test empties the tables the data migration filled
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    viewer = django_user_model.objects.create_user("vera", "vera@example.com", "pw", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Report viewers"))

    log_in(page, "vera", "pw")
    page.goto(f"/admin/reporting/reportrun/{run.pk}/change/")

    assert page.locator("text=The email as sent").count() == 1
    assert page.get_by_role("link", name="Resend…").count() == 0
    assert page.goto(f"/admin/reporting/reportrun/{run.pk}/resend/").status == 403
    shoot(page, "5-viewer-run-page")


def _install_groups() -> None:
    import importlib

    from django.apps import apps

    importlib.import_module("reporting.migrations.0006_permission_groups").install_groups(apps, None)
