"""Celery tasks run by a real worker (in a thread) against the real database."""

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from celery.contrib.testing.worker import start_worker
from django.core import mail

from project.celery import app as celery_app
from reporting import tasks
from reporting.models import ReportRun
from tests import factories

LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def worker(transactional_db):
    """A real Celery worker thread consuming from the in-memory broker of tests/settings.py."""
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as running:
        yield running


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the worker")


def test_a_worker_runs_a_scheduled_report_end_to_end(worker, httpserver):
    httpserver.expect_request("/api/positions").respond_with_json(factories.POSITIONS)
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))
    factories.schedule(report, minute="0", hour="7")

    with time_machine.travel(datetime(2026, 11, 21, 7, 0, 1, tzinfo=LONDON), tick=True):
        tasks.run_scheduled_report.delay(report_id=report.pk)
        wait_for(lambda: ReportRun.objects.filter(status=ReportRun.Status.SENT).exists())

    run = ReportRun.objects.get()
    assert run.period_label == "20 November 2026"
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]
    assert "Acme Corp" in mail.outbox[0].alternatives[0][0]


def test_a_worker_retries_a_transient_failure_then_succeeds(worker, httpserver, settings):
    settings.REPORTING = {**settings.REPORTING, "FETCH_RETRY_BASE_SECONDS": 1, "FETCH_RETRY_MAX_SECONDS": 1}
    httpserver.expect_ordered_request("/api/positions").respond_with_data("down", status=502)
    httpserver.expect_ordered_request("/api/positions").respond_with_json(factories.POSITIONS)
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))
    run = ReportRun.objects.create(
        report=report,
        period_start="2026-11-20",
        period_end="2026-11-20",
        period_key="k",
        trigger="manual",
        recipients=["ann@example.com"],
    )

    tasks.execute_run.delay(run_id=run.pk)
    wait_for(lambda: ReportRun.objects.get(pk=run.pk).status == ReportRun.Status.SENT)

    run.refresh_from_db()
    assert run.attempts == 2
    assert [m.to for m in mail.outbox] == [["ann@example.com"]]


def test_a_scheduled_run_that_fails_transiently_is_handed_to_a_retry_and_sent_once(worker, httpserver, settings):
    settings.REPORTING = {**settings.REPORTING, "FETCH_RETRY_BASE_SECONDS": 1, "FETCH_RETRY_MAX_SECONDS": 1}
    httpserver.expect_ordered_request("/api/positions").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/api/positions").respond_with_json(factories.POSITIONS)
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))
    factories.schedule(report, minute="*", hour="*")

    tasks.run_scheduled_report.delay(report_id=report.pk)
    wait_for(lambda: ReportRun.objects.filter(status=ReportRun.Status.SENT).exists())

    run = ReportRun.objects.get()
    assert (run.trigger, run.attempts) == ("schedule", 2)
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]


def test_a_worker_runs_a_burst_message_each_report_once_despite_one_that_is_gone(worker, httpserver, caplog):
    httpserver.expect_request("/api/positions").respond_with_json(factories.POSITIONS)
    source = factories.data_source(httpserver.url_for("/api/"))
    finance = factories.report(source, slug="finance", addresses=["ann@example.com"])
    board = factories.report(source, slug="board", addresses=["bob@example.com"])
    for report in (finance, board):
        factories.schedule(report, minute="0", hour="7")
    fired_at = datetime(2026, 11, 21, 7, 0, 1, tzinfo=LONDON)

    # Delivered late, after the next day's slot: the run is still the one beat fired.
    with time_machine.travel(datetime(2026, 11, 22, 7, 0, 30, tzinfo=LONDON), tick=True):
        gone = finance.pk + board.pk + 1000
        tasks.run_scheduled_reports.delay(report_ids=[gone, finance.pk, board.pk], fired_at=fired_at.isoformat())
        wait_for(lambda: ReportRun.objects.filter(status=ReportRun.Status.SENT).count() == 2)

    assert sorted((run.report.slug, run.period_label) for run in ReportRun.objects.all()) == [
        ("board", "20 November 2026"),
        ("finance", "20 November 2026"),
    ]
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]
    assert f"report {gone}: the scheduled run could not be started" in caplog.text
