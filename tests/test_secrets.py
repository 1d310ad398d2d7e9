"""A data source's secret lives only in the environment: never in the database, a file, a log or a page."""

import io
import logging
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from reporting import runs
from reporting.models import DataSource, ReportRun
from tests import factories

pytestmark = pytest.mark.django_db
TOKEN = "tok_live_9f8e7d6c5b4a39281706"


def run_now(report):
    return runs.execute_run(
        run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk
    )


def test_the_secret_appears_nowhere_after_runs_that_succeed_and_fail(
    httpserver, monkeypatch, settings, caplog, admin_client
):
    monkeypatch.setenv("REPORTING_SECRET_PORTFOLIO_API", TOKEN)
    caplog.set_level(logging.DEBUG)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    httpserver.expect_request("/api/positions", headers=auth).respond_with_json(factories.POSITIONS)
    httpserver.expect_request("/api/broken", headers=auth).respond_with_data("<html>Login</html>", status=200)
    httpserver.expect_request("/api/denied").respond_with_data(f"bad token {TOKEN}", status=401)
    source = factories.data_source(
        httpserver.url_for("/api/"),
        auth_scheme=DataSource.AuthScheme.BEARER,
        secret_env_var="REPORTING_SECRET_PORTFOLIO_API",
    )
    good = run_now(factories.report(source, slug="good"))
    broken = run_now(factories.report(source, slug="broken", path="broken"))
    denied = run_now(factories.report(source, slug="denied", path="denied"))

    assert [good.status, broken.status, denied.status] == ["sent", "failed", "failed"]
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert TOKEN not in dump.getvalue()
    for path in Path(settings.MEDIA_ROOT).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in caplog.text
    pages = [reverse("admin:reporting_datasource_change", args=[source.pk])]
    pages += [reverse("admin:reporting_reportrun_change", args=[run.pk]) for run in ReportRun.objects.all()]
    pages += [reverse("admin:reporting_reportrun_changelist"), reverse("admin:reporting_report_changelist")]
    for page in pages:
        assert TOKEN not in admin_client.get(page).content.decode(), page
    assert "REPORTING_SECRET_PORTFOLIO_API" in admin_client.get(pages[0]).content.decode()
