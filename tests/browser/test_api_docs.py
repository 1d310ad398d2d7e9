"""The REST API's docs page (Swagger UI, from django-ninja's static files) under the site's Content Security Policy."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_api_docs_page_shows_the_schema_without_breaking_the_csp(page):
    page.goto("/api/v1/docs")

    page.get_by_text("Scheduled Reports API").first.wait_for()
    assert page.locator(".opblock-summary-path", has_text="/api/v1/runs/{run_id}/resend").count() == 1
    # the page fixture fails the test if the Content Security Policy blocked anything
