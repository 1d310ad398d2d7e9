"""The first step of every browser test: logging in to the admin and reaching the reports."""

from tests.browser.conftest import log_in, shoot


def test_a_staff_user_logs_in_and_sees_the_reports(page, admin_user):
    log_in(page, "admin", "password")

    page.get_by_role("link", name="Reports", exact=True).click()
    page.wait_for_url("**/admin/reporting/report/")
    assert page.locator("h1").inner_text() == "Select report to change"
    shoot(page, "report-list-empty")
