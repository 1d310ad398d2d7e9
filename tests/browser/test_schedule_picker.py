"""The schedule picker in a real browser: picking "weekdays at 07:00" writes the cron fields and
the next runs follow without a reload; typing a cron field shows the kind it matches.
"""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.conftest import log_in, shoot


def test_picking_weekdays_updates_the_cron_fields_and_the_next_runs_without_a_reload(page, admin_user):
    log_in(page, "admin", "password")
    page.goto("/admin/reporting/report/add/")
    page.evaluate("window.notReloaded = true")
    # A new report shows its default schedule's next runs at once, each also in the viewer's time.
    page.locator(".field-next_runs ol.next-runs li").nth(4).wait_for()
    page.select_option("#id_timezone", "Europe/London")

    page.select_option("#id_schedule_kind", "weekdays")
    page.fill("#id_schedule_time", "07:00")

    cron = [
        page.input_value(f"#id_{field}") for field in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    ]
    assert cron == ["0", "7", "*", "*", "mon-fri"]
    runs = page.locator(".field-next_runs ol.next-runs li")
    expect(page.locator(".field-schedule_in_words .readonly")).to_contain_text("Monday through Friday")
    expect(runs).to_have_count(5)
    assert all(text.split()[0] in {"Mon", "Tue", "Wed", "Thu", "Fri"} for text in runs.all_inner_texts())
    assert "07:00" in runs.first.inner_text()
    assert page.locator(".field-next_runs ol.next-runs .viewer-time").count() == 5  # the browser is in New York
    assert "your time:" in runs.first.inner_text()
    assert "Monday through Friday" in page.locator(".field-schedule_in_words .readonly").inner_text()
    assert page.locator(".fieldBox.field-schedule_weekday").is_hidden()  # weekdays need no day chosen
    shoot(page, "schedule-picker-weekdays")

    # Typing in the cron fields: the picker shows the kind they match, and the runs follow.
    page.fill("#id_day_of_week", "1")
    expect(page.locator("#id_schedule_kind")).to_have_value("weekly")  # (the page's CSP allows no eval)
    assert page.input_value("#id_schedule_weekday") == "1"
    expect(runs).to_have_text([re.compile(r"^Mon ")] * 5)
    page.fill("#id_minute", "*/15")
    expect(page.locator("#id_schedule_kind")).to_have_value("custom")

    # A cron that cannot run says why, in words.
    page.fill("#id_hour", "25")
    expect(page.locator(".field-schedule_in_words .readonly")).to_contain_text("Hour (0-23)")
    assert page.evaluate("window.notReloaded") is True
