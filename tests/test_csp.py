"""The archived email's HTML is shown inert: escaped data, its own URL, restrictive headers, a sandboxed frame."""

import re

import pytest
from django.urls import reverse

from reporting import runs
from reporting.models import ReportRun
from tests import factories
from tests.test_permissions import ADMIN_URLS, archived_run, held_run, objects, url  # noqa: F401  (their fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("permission_groups")]
HOSTILE = {
    "data": {
        "positions": [
            {"instrument": "<script>alert('x')</script>", "quantity": 1, "market_value": 1.0},
            {"instrument": "javascript:alert(document.cookie)", "quantity": 2, "market_value": 2.0},
            {"instrument": '<a href="javascript:alert(1)">click</a>', "quantity": 3, "market_value": 3.0},
        ]
    }
}


@pytest.fixture
def hostile_run(httpserver, mailoutbox) -> ReportRun:
    httpserver.expect_request("/api/positions").respond_with_json(HOSTILE)
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    return runs.execute_run(run_id=run.pk)


def assert_inert(html: str) -> None:
    assert not re.search(r"<\s*script", html, re.IGNORECASE)
    assert not re.search(r"""href\s*=\s*["']?\s*javascript:""", html, re.IGNORECASE)
    assert "&lt;script&gt;" in html
    assert "javascript:alert(document.cookie)" in html  # shown as text, not as a link


def test_data_with_a_script_or_a_javascript_link_is_escaped_in_the_email(hostile_run, mailoutbox):
    assert hostile_run.status == ReportRun.Status.SENT
    assert_inert(hostile_run.body_html)
    html_part = mailoutbox[0].alternatives[0].content
    assert_inert(html_part)


def test_the_email_html_is_served_with_restrictive_headers(staff_client, hostile_run):
    response = staff_client.get(reverse("admin:reporting_reportrun_email_html", args=[hostile_run.pk]))

    assert response.status_code == 200
    assert response.content.decode() == hostile_run.body_html
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Security-Policy"] == (
        "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; sandbox"
    )
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert response["Referrer-Policy"] == "no-referrer"
    assert "no-cache" in response["Cache-Control"]  # an admin page: not kept by shared caches
    assert_inert(response.content.decode())


def test_the_run_page_frames_the_email_from_its_url_in_a_sandbox_without_scripts(staff_client, hostile_run):
    page = staff_client.get(reverse("admin:reporting_reportrun_change", args=[hostile_run.pk])).content.decode()

    frame = re.search(r"<iframe[^>]*>", page).group(0)
    assert 'sandbox=""' in frame
    assert "allow-" not in frame
    assert f'src="{reverse("admin:reporting_reportrun_email_html", args=[hostile_run.pk])}"' in frame
    assert "srcdoc" not in frame
    assert not re.search(r"<\s*script[^>]*>\s*alert", page, re.IGNORECASE)


def test_a_run_without_an_archived_email_has_no_email_page(staff_client, report):
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)

    response = staff_client.get(reverse("admin:reporting_reportrun_email_html", args=[run.pk]))

    assert response.status_code == 404


# --- the site-wide Content Security Policy: scripts only from our static files ------------------------------------


def policy(response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as {directive: [sources]}."""
    header = response.headers.get("Content-Security-Policy", "")
    return {name: sources for name, *sources in (part.split() for part in header.split(";") if part.strip())}


def test_every_admin_page_forbids_inline_script(staff_client, objects):  # noqa: F811
    """Every admin URL (the admin's own patterns, as a superuser): a policy whose scripts come from 'self' only."""
    answers = {name: staff_client.get(url(name, objects)) for name in ADMIN_URLS}

    scripts = {name: policy(response).get("script-src") for name, response in answers.items()}
    archived_emails = ["reporting_reportrun_email_html", "reporting_runpart_email_html"]
    for name in archived_emails:
        del scripts[name]  # its own stricter policy: no script at all (above)
    assert {name: value for name, value in scripts.items() if value != ["'self'"]} == {}
    for name in archived_emails:
        assert policy(answers[name])["default-src"] == ["'none'"]
        assert "script-src" not in policy(answers[name])  # falls back to 'none'


def test_no_page_we_serve_has_an_inline_script_or_event_handler(staff_client, objects):  # noqa: F811
    """What the policy would block must not be there: every script has a src (JSON data aside), no on…= handler."""
    pages = {name: staff_client.get(url(name, objects)) for name in ADMIN_URLS}
    html = {name: r.content.decode() for name, r in pages.items() if r["Content-Type"].startswith("text/html")}

    inline = {
        name
        for name, text in html.items()
        if re.search(r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>", text)
    }
    handlers = {name for name, text in html.items() if re.search(r"<[a-z][^>]*\son[a-z]+\s*=", text, re.IGNORECASE)}
    assert (inline, handlers) == (set(), set())


def test_the_policy_is_the_configured_one(client):
    response = client.get(reverse("admin:login"))

    assert policy(response) == {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "frame-src": ["'self'"],
        "frame-ancestors": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
    }
