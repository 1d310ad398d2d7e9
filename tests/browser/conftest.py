"""The admin in a real browser: headless Chromium (Debian's package) driven by Playwright.

Playwright's own browser download does not work here, so Chromium is the system one
(CHROMIUM_PATH, default /usr/bin/chromium; `make test` installs it when missing). The
site is pytest-django's live server (a thread of this process, on the test database);
a real Celery worker thread runs what the admin queues; data sources are real HTTP
servers on loopback and email goes to a real SMTP server on loopback. Screenshots of
the key pages go to var/test-artifacts/browser/ (BROWSER_ARTIFACTS to change it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from project.celery import app as celery_app

# Playwright's sync API runs an event loop in this thread; the test's own database calls
# (fixtures, assertions) are still plain synchronous code, which Django would refuse.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", Path(settings.BASE_DIR) / "var" / "test-artifacts" / "browser"))
# Chromium as root in a container, without the background traffic a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server, request):
    """A fresh browser page (its own cookies) on the live server; a screenshot if the test fails."""
    # The viewer is in New York, the reports mostly in London: both times show.
    context = chromium.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}, timezone_id="America/New_York"
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    # Whatever the site's Content Security Policy blocked (an inline script, a handler, eval) is a broken page.
    blocked = []
    page.on("console", lambda message: "Content Security Policy" in message.text and blocked.append(message.text))
    yield page
    if getattr(request.node, "failed", False):
        shoot(page, f"FAILED-{request.node.name}")
    context.close()
    assert blocked == [], "the Content Security Policy blocked something on a page"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        item.failed = True
    return report


def shoot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def shoot_element(locator, name: str) -> Path:
    """A screenshot of one element, e.g. the archived email's frame (full-page shots leave frames blank)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    locator.scroll_into_view_if_needed()
    path = ARTIFACTS / f"{name}.png"
    locator.screenshot(path=str(path))
    return path


@pytest.fixture
def worker(transactional_db) -> Iterator[object]:
    """A real Celery worker thread for what the admin queues (run now, resend)."""
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as running:
        yield running


def log_in(page, username: str, password: str) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
