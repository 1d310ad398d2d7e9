"""Observability: JSON log lines that name their run, the Prometheus endpoint, Sentry errors and check-ins."""

import itertools
import json
import logging
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
import sentry_sdk
from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from django.utils import timezone
from sentry_sdk.transport import Transport

from reporting import logs, observability, runs
from reporting.models import DataSource, Delivery, ReportRun
from reporting.services import runs as services_runs
from tests import factories

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok_live_0bs3rv4b1l1ty_42"
SECRET_VAR = "REPORTING_SECRET_OBSERVED_API"
_DAYS = itertools.count(1)  # each archived run its own period


def manual_run(report, day=date(2026, 11, 20)):
    return runs.create_manual_run(report_id=report.pk, period_day=day, requested_by_id=None)


@pytest.fixture
def json_log():
    """What the console handler of settings.LOGGING writes, formatted as REPORTING_LOG_FORMAT=json does."""
    import io

    handler = logging.getLogger("reporting").handlers[0]
    stream = io.StringIO()
    previous_stream = handler.setStream(stream)
    previous_formatter = handler.formatter
    handler.setFormatter(logs.JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    handler.setFormatter(previous_formatter)
    handler.setStream(previous_stream)


@pytest.fixture
def secret_source(httpserver, monkeypatch):
    """A data source read with a bearer token; /api/denied echoes the token it was sent."""
    monkeypatch.setenv(SECRET_VAR, TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    httpserver.expect_request("/api/positions", headers=auth).respond_with_json(factories.POSITIONS)
    httpserver.expect_request("/api/denied").respond_with_data(f"bad token {TOKEN}", status=401)
    return factories.data_source(
        httpserver.url_for("/api/"), auth_scheme=DataSource.AuthScheme.BEARER, secret_env_var=SECRET_VAR
    )


# --- logs -----------------------------------------------------------------------------------


def test_each_json_line_of_a_run_carries_its_run_and_report_ids_and_never_the_secret(secret_source, use_smtp, json_log):
    good = factories.report(secret_source, slug="good")
    denied = factories.report(secret_source, slug="denied", path="denied")

    sent = runs.execute_run(run_id=manual_run(good).pk)
    failed = runs.execute_run(run_id=manual_run(denied).pk)
    logging.getLogger("reporting.runs").info("after the runs")

    assert [sent.status, failed.status] == ["sent", "failed"]
    lines = json_log()
    in_runs = [line for line in lines if line["message"] != "after the runs"]
    assert any(line["message"].startswith(f"run {failed.pk} failed") for line in in_runs)
    ids = {(sent.pk, good.pk), (failed.pk, denied.pk)}
    assert all((line["run_id"], line["report_id"]) in ids for line in in_runs), in_runs
    [after] = [line for line in lines if line["message"] == "after the runs"]
    assert "run_id" not in after and "report_id" not in after
    assert {"asctime", "levelname", "name"} <= set(lines[0])
    assert TOKEN not in json.dumps(lines)


def test_a_recipients_part_logs_its_part_id_beside_the_run_and_report(
    httpserver, use_smtp, statement_template, json_log, monkeypatch
):
    from reporting import parts
    from tests.test_per_recipient import ROWS, run_everything, split_report

    monkeypatch.setenv(SECRET_VAR, TOKEN)
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    render_part = parts._render

    def render_or_fail_for_bob(part, run, report):
        if part.address == "bob@example.com":
            raise RuntimeError(f"bob's template echoed {TOKEN}")
        return render_part(part, run, report)

    monkeypatch.setattr(parts, "_render", render_or_fail_for_bob)

    run = run_everything(report)

    assert run.status == ReportRun.Status.PARTIALLY_SENT
    bob = run.parts.get(recipient_email="bob@example.com")
    [line] = [line for line in json_log() if "failed unexpectedly" in line["message"]]
    assert (line["run_id"], line["report_id"], line["part_id"]) == (run.pk, report.pk, bob.pk)
    assert "RuntimeError: bob's template echoed [secret]" in line["exc_info"]
    assert TOKEN not in json.dumps(json_log())


def test_a_scheduled_report_that_cannot_start_logs_its_report_id(json_log):
    services_runs.run_scheduled_batch(report_ids=[987654], fired_at=timezone.now())

    [line] = json_log()
    assert line["message"] == "report 987654: the scheduled run could not be started"
    assert line["report_id"] == 987654 and "run_id" not in line


def test_a_json_traceback_is_redacted_and_names_the_run_and_part(monkeypatch, json_log):
    monkeypatch.setenv(SECRET_VAR, TOKEN)

    with logs.log_context(run_id=7, report_id=3), logs.log_context(part_id=11):
        try:
            raise ValueError(f"echoed {TOKEN}")
        except ValueError:
            logging.getLogger("reporting.parts").exception("part failed with %s", TOKEN)

    [line] = json_log()
    assert (line["run_id"], line["report_id"], line["part_id"]) == (7, 3, 11)
    assert line["message"] == "part failed with [secret]"
    assert "ValueError: echoed [secret]" in line["exc_info"]
    assert TOKEN not in json.dumps(line)


def test_reporting_log_format_json_configures_the_console_for_json_lines_with_the_secret_redacted():
    code = (
        "import logging; from reporting import logs\n"
        "with logs.log_context(run_id=5, report_id=2):\n"
        "    logging.getLogger('reporting.runs').warning('token %s', 'tok_live_0bs3rv4b1l1ty_42')"
    )
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_"))}
    env = {**clean, "DJANGO_SETTINGS_MODULE": "project.settings", "REPORTING_LOG_FORMAT": "json", SECRET_VAR: TOKEN}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )

    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert (line["message"], line["levelname"]) == ("token [secret]", "WARNING")
    assert (line["run_id"], line["report_id"]) == (5, 2)
    assert TOKEN not in result.stderr


def test_a_log_format_other_than_plain_or_json_fails_loudly():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "REPORTING_LOG_FORMAT": "xml"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)

    assert result.returncode != 0
    assert "REPORTING_LOG_FORMAT must be one of ['plain', 'json'], not 'xml'." in result.stderr


# --- metrics --------------------------------------------------------------------------------


def scrape(client, **headers) -> dict[str, float]:
    response = client.get(reverse("metrics"), headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for line in response.content.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def archived_run(report, *, status, age, stages=(2, 1, 3), trigger=ReportRun.Trigger.SCHEDULE, day=None):
    """A run made `age` ago that fetched, rendered and sent in `stages` seconds."""
    made = timezone.now() - age
    fetch, render, send = (timedelta(seconds=s) for s in stages)
    run = manual_run(report, day=day or (date(2025, 1, 1) + timedelta(days=next(_DAYS))))
    ReportRun.objects.filter(pk=run.pk).update(
        status=status,
        trigger=trigger,
        created_at=made,
        started_at=made,
        fetched_at=made + fetch,
        rendered_at=made + fetch + render,
        finished_at=made + fetch + render + send,
    )
    return run


def test_the_metrics_need_the_bearer_token_or_a_staff_user_who_may_view_runs(client, settings, django_user_model):
    settings.METRICS_TOKEN = "scrape-me-please"
    metrics = reverse("metrics")

    assert client.get(metrics).status_code == 401
    assert client.get(metrics).headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert client.get(metrics, headers={"Authorization": "Bearer scrape-me-not"}).status_code == 401
    assert client.get(metrics, headers={"Authorization": "Bearer scrape-me-please"}).status_code == 200
    staff = django_user_model.objects.create_user("sam", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(metrics).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_reportrun"))
    client.force_login(django_user_model.objects.get(pk=staff.pk))
    assert client.get(metrics).status_code == 200


def test_without_a_token_the_metrics_are_not_found_except_by_staff(client, settings, admin_client):
    settings.METRICS_TOKEN = ""

    assert client.get(reverse("metrics")).status_code == 404
    assert client.get(reverse("metrics"), headers={"Authorization": "Bearer "}).status_code == 404
    assert admin_client.get(reverse("metrics")).status_code == 200


def test_a_report_that_has_not_succeeded_for_a_day_shows_in_the_metrics_alone(client, settings, source):
    settings.METRICS_TOKEN = "t"
    stale = factories.report(source, slug="stale", name="Stale")
    fresh = factories.report(source, slug="fresh", name="Fresh")
    never = factories.report(source, slug="never", name="Never")
    for report in (stale, fresh, never):
        factories.schedule(report, minute="0", hour="7")
    archived_run(stale, status="sent", age=timedelta(days=2))
    archived_run(stale, status="failed", age=timedelta(hours=2))
    archived_run(fresh, status="sent", age=timedelta(hours=1), stages=(20, 4, 200))
    archived_run(fresh, status="held", age=timedelta(hours=3), stages=(1, 1, 1))
    Report = type(never)
    Report.objects.filter(pk=never.pk).update(created_at=timezone.now() - timedelta(days=3))

    samples = scrape(client, Authorization="Bearer t")

    assert samples['reporting_report_last_success_age_seconds{report="stale"}'] > 2 * 86400 - 60
    assert samples['reporting_report_last_success_age_seconds{report="fresh"}'] < 3600 + 60
    assert samples['reporting_report_last_success_age_seconds{report="never"}'] > 3 * 86400 - 60
    assert 'reporting_report_last_success_timestamp_seconds{report="never"}' not in samples
    stale_at = samples['reporting_report_last_success_timestamp_seconds{report="stale"}']
    assert abs(stale_at - (timezone.now() - timedelta(days=2)).timestamp()) < 60
    assert samples['reporting_report_consecutive_failures{report="stale"}'] == 1
    assert samples['reporting_report_held{report="fresh"}'] == 1
    assert samples['reporting_report_held{report="stale"}'] == 0
    assert samples['reporting_runs{report="stale",status="failed"}'] == 1
    assert 'reporting_runs{report="stale",status="sent"}' not in samples  # two days ago: outside the window
    assert samples['reporting_runs{report="fresh",status="sent"}'] == 1
    assert {name for name in samples if name.startswith("reporting_report_late{")} == {
        'reporting_report_late{report="stale"}',
        'reporting_report_late{report="fresh"}',
        'reporting_report_late{report="never"}',
    }
    assert {name for name in samples if name.startswith("reporting_report_missed{")} == {
        f'reporting_report_missed{{report="{slug}"}}' for slug in ("stale", "fresh", "never")
    }
    # Stage durations over the last day's runs: the failed, the held and the fresh sent one.
    assert samples['reporting_run_stage_duration_seconds_bucket{le="+Inf",stage="fetch"}'] == 3
    assert samples['reporting_run_stage_duration_seconds_bucket{le="10.0",stage="fetch"}'] == 2
    assert samples['reporting_run_stage_duration_seconds_gsum{stage="send"}'] == pytest.approx(3 + 1 + 200)
    assert samples['reporting_run_stage_duration_seconds_bucket{le="120.0",stage="send"}'] == 2


def test_the_late_missed_and_held_gauges_say_what_the_overview_says(client, settings, source):
    settings.METRICS_TOKEN = "t"
    report = factories.report(source, slug="daily")
    factories.schedule(report, minute="0", hour="7")
    type(report).objects.filter(pk=report.pk).update(created_at=timezone.now() - timedelta(days=3))
    missed = archived_run(report, status="missed", age=timedelta(days=1), day=date(2026, 1, 5))
    ReportRun.objects.filter(pk=missed.pk).update(trigger=ReportRun.Trigger.CATCH_UP)

    samples = scrape(client, Authorization="Bearer t")

    assert samples['reporting_report_late{report="daily"}'] == 1  # today's slot at 07:00 has no run
    assert samples['reporting_report_missed{report="daily"}'] == 1


def test_deliveries_are_counted_by_channel_and_status(client, settings, report, use_smtp):
    settings.METRICS_TOKEN = "t"
    run = runs.execute_run(run_id=manual_run(report).pk)
    Delivery.objects.filter(run=run, address="bob@example.com").update(status=Delivery.Status.FAILED)

    samples = scrape(client, Authorization="Bearer t")

    assert samples['reporting_deliveries_total{channel="email",status="sent"}'] == 1
    assert samples['reporting_deliveries_total{channel="email",status="failed"}'] == 1


def test_a_scrape_takes_the_same_few_queries_for_any_number_of_reports(
    client, settings, source, django_assert_max_num_queries
):
    settings.METRICS_TOKEN = "t"
    for number in range(12):
        report = factories.report(source, slug=f"report-{number}", name=f"Report {number}")
        factories.schedule(report, minute="0", hour=str(number))
        archived_run(report, status="sent", age=timedelta(hours=number + 1))
        archived_run(report, status="failed", age=timedelta(minutes=30))

    with django_assert_max_num_queries(6):
        samples = scrape(client, Authorization="Bearer t")

    assert len([name for name in samples if name.startswith("reporting_report_last_success_age_seconds")]) == 12


# --- Sentry ---------------------------------------------------------------------------------


class RecordingTransport(Transport):
    """Keeps what the SDK would send, instead of sending it."""

    def __init__(self):
        super().__init__()
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)

    def items(self, kind: str) -> list[dict]:
        return [item.payload.json for envelope in self.envelopes for item in envelope.items if item.type == kind]


@pytest.fixture
def sentry():
    transport = RecordingTransport()
    observability.init_sentry("https://public@sentry.example.invalid/1", transport=transport)
    yield transport
    sentry_sdk.init()  # no DSN: the SDK sends nothing for the tests that follow


def test_a_scheduled_run_checks_in_to_sentry_at_its_start_and_its_end(sentry, report, use_smtp):
    factories.schedule(report, minute="30", hour="6")

    services_runs.run_scheduled(report_id=report.pk, fired_at=None)
    sentry_sdk.flush()

    run = ReportRun.objects.get(report=report)
    assert run.status == "sent"
    check_ins = sentry.items("check_in")
    assert [c["status"] for c in check_ins] == ["in_progress", "ok"]
    assert {c["monitor_slug"] for c in check_ins} == {"report-portfolio"}
    assert {c["check_in_id"] for c in check_ins} == {observability.check_in_id(run.pk)}
    assert check_ins[0]["monitor_config"]["schedule"] == {"type": "crontab", "value": "30 6 * * *"}
    assert check_ins[0]["monitor_config"]["timezone"] == "Europe/London"


def test_a_failed_scheduled_run_checks_in_as_an_error_and_a_manual_run_not_at_all(sentry, secret_source, use_smtp):
    denied = factories.report(secret_source, slug="denied", path="denied")
    factories.schedule(denied, minute="0", hour="7")

    runs.execute_run(run_id=manual_run(denied).pk)
    services_runs.run_scheduled(report_id=denied.pk, fired_at=None)
    sentry_sdk.flush()

    assert [c["status"] for c in sentry.items("check_in")] == ["in_progress", "error"]


def test_an_error_event_reaches_sentry_with_the_secret_redacted(sentry, monkeypatch):
    monkeypatch.setenv(SECRET_VAR, TOKEN)

    try:
        raise RuntimeError(f"the source answered {TOKEN}")
    except RuntimeError as exc:
        sentry_sdk.capture_exception(exc)
    logging.getLogger("reporting.runs").error("fetching with %s failed", TOKEN)
    sentry_sdk.flush()

    events = sentry.items("event")
    assert len(events) == 2
    assert "the source answered [secret]" in json.dumps(events)
    assert TOKEN not in json.dumps(events)
    assert all("user" not in event or "ip_address" not in event["user"] for event in events)
    frames = events[0]["exception"]["values"][0]["stacktrace"]["frames"]
    assert frames and not any("vars" in frame for frame in frames)  # locals may hold a report's data


def test_the_groups_that_may_view_runs_may_read_the_metrics(client, settings, permission_groups, django_user_model):
    settings.METRICS_TOKEN = ""
    viewer = django_user_model.objects.create_user("vic", password="pw", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Report viewers"))
    client.force_login(viewer)

    assert client.get(reverse("metrics")).status_code == 200
