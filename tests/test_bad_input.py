"""Bad input, table-driven: each case ends in a clear message on the run or the form, the
worker goes on serving the next run, and nothing already stored is lost.

Run-level cases go through a real Celery worker (a thread consuming the tests' in-memory
broker), a real HTTP server on loopback for the data source and a real SMTP server on
loopback; before each, the report already has an archived, sent run that must survive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from celery.contrib.testing.worker import start_worker
from django.urls import reverse
from werkzeug import Response

from project.celery import app as celery_app
from reporting import runs, tasks
from reporting.models import Delivery, Recipient, Report, ReportRun
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker):
    """One real worker thread for the whole table: it must keep serving after every case."""
    with (
        django_db_blocker.unblock(),
        start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as running,
    ):
        yield running


def manual_run(report: Report) -> ReportRun:
    return runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)


def run_through_worker(run: ReportRun, timeout: float = 30.0) -> ReportRun:
    tasks.execute_run.delay(run_id=run.pk)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status in (*ReportRun.FINISHED, ReportRun.Status.HELD) or (
            run.status == ReportRun.Status.QUEUED and run.error.startswith("Will retry")
        ):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run.pk} still {run.status} after {timeout} s")


@dataclass
class Case:
    name: str
    expected_status: str
    expected_error: str
    serve: Callable | None = None  # (httpserver) -> None: what the data source answers
    prepare: Callable | None = None  # (report, settings, smtp_server, httpserver) -> None
    sent_to: list[str] = field(default_factory=list)  # who still gets the email


def answer(body, *, status: int = 200, content_type: str = "application/json"):
    def serve(httpserver):
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        httpserver.expect_request("/api/positions").respond_with_data(data, status=status, content_type=content_type)

    return serve


def edit(**fields):
    def prepare(report, settings, smtp_server, httpserver):
        Report.objects.filter(pk=report.pk).update(**fields)

    return prepare


def refuse(*addresses: str, code: int):
    def prepare(report, settings, smtp_server, httpserver):
        for address in addresses:
            smtp_server.refuse(address, code=code, message="Mailbox unavailable")

    return prepare


def limit_response_bytes(report, settings, smtp_server, httpserver):
    settings.REPORTING = {**settings.REPORTING, "MAX_RESPONSE_BYTES": 2048}


def slow_source(report, settings, smtp_server, httpserver):
    def handler(request):
        time.sleep(1.5)
        return Response(json.dumps(factories.POSITIONS), content_type="application/json")

    httpserver.expect_request("/api/positions").respond_with_handler(handler)
    report.data_source.__class__.objects.filter(pk=report.data_source_id).update(read_timeout=0.3)


def unresolvable_source(report, settings, smtp_server, httpserver):
    report.data_source.__class__.objects.filter(pk=report.data_source_id).update(
        base_url="http://no-such-host.invalid/api/"
    )


def closed_port_source(report, settings, smtp_server, httpserver):
    report.data_source.__class__.objects.filter(pk=report.data_source_id).update(base_url="http://127.0.0.1:9/api/")


def missing_secret(report, settings, smtp_server, httpserver, monkeypatch=None):
    report.data_source.__class__.objects.filter(pk=report.data_source_id).update(
        auth_scheme="bearer", secret_env_var="REPORTING_TEST_SECRET_THAT_IS_NOT_SET"
    )


def esp_api_error(report, settings, smtp_server, httpserver):
    httpserver.expect_request("/email").respond_with_json(
        {
            "ErrorCode": 10,
            "Message": "The Server Token you provided in the X-Postmark-Server-Token request header was invalid.",
        },
        401,
    )
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-token", "POSTMARK_API_URL": httpserver.url_for("/")}


ANN_AND_BOB = ["ann@example.com", "bob@example.com"]
FAILED, SENT, PARTIAL, HELD = "failed", "sent", "partially_sent", "held"

CASES = [
    Case("malformed JSON", FAILED, "not valid JSON", answer('{"data": {"positions": [1,')),
    Case("empty body", FAILED, "not valid JSON", answer("")),
    Case("HTML error page, status 200", FAILED, "answered with 'text/html', not JSON", answer("<h1>Oops</h1>", content_type="text/html")),
    Case("HTML page labelled JSON", FAILED, "not valid JSON", answer("<html>Login</html>")),
    Case("payload over the size cap", FAILED, "answer is too large", answer({"data": {"positions": [{"x": "y" * 5000}]}}), limit_response_bytes),
    Case("non-UTF-8 bytes", FAILED, "not valid UTF-8", answer(b'{"data": {"positions": [{"name": "Caf\xe9"}]}}')),
    Case("records path missing", FAILED, "was not found in the data", answer({"data": {"other": []}})),
    Case("records path not a list", FAILED, "not to a list of rows", answer({"data": {"positions": {"a": 1}}})),
    Case("a bare number as the answer", FAILED, "not to a list of rows", answer("42"), edit(records_path="")),
    Case("rows of mixed types", SENT, "", answer({"data": {"positions": [{"name": "A", "value": 1}, 7, ["x", "y"], None]}}), sent_to=ANN_AND_BOB),
    Case("no rows", HELD, "The data has 0 rows", answer({"data": {"positions": []}})),
    Case("HTTP 500", FAILED, "unavailable right now (HTTP 500", answer("boom", status=500, content_type="text/plain")),
    Case("HTTP 404", FAILED, "HTTP 404", answer("nope", status=404, content_type="text/plain")),
    Case("HTTP 401", FAILED, "HTTP 401", answer("who are you", status=401, content_type="text/plain")),
    Case("data source times out", FAILED, "did not answer in time", None, slow_source),
    Case("DNS fails", FAILED, "no-such-host.invalid", None, unresolvable_source),
    Case("connection refused", FAILED, "Could not connect to the data source at http://127.0.0.1:9", None, closed_port_source),
    Case("secret not set on the worker", FAILED, "REPORTING_TEST_SECRET_THAT_IS_NOT_SET' is not set", None, missing_secret),
    Case("template syntax error", FAILED, "template has an error", answer(factories.POSITIONS), edit(template="reports/broken_syntax.html")),
    Case("template does not exist", FAILED, "does not exist", answer(factories.POSITIONS), edit(template="reports/nope.html")),
    Case("template names a missing variable", FAILED, "refers to 'totals.grand'", answer(factories.POSITIONS), edit(template="reports/missing_variable.html")),
    Case("subject template syntax error", FAILED, "subject template has an error", answer(factories.POSITIONS), edit(subject_template="{% if %}")),
    Case("subject with a newline from the data", FAILED, "line break", answer({"title": "A\nBcc: x@evil.test", **factories.POSITIONS}), edit(subject_template="{{ data.title }}")),
    Case("path template error", FAILED, "path has a template error", None, edit(path="{% now %}")),
    Case("SMTP 4xx for one address", PARTIAL, "bob@example.com", answer(factories.POSITIONS), refuse("bob@example.com", code=451), sent_to=["ann@example.com"]),
    Case("SMTP 5xx for one address", PARTIAL, "550", answer(factories.POSITIONS), refuse("bob@example.com", code=550), sent_to=["ann@example.com"]),
    Case("every recipient refused", FAILED, "No address got the email", answer(factories.POSITIONS), refuse(*ANN_AND_BOB, code=550)),
    Case("ESP API error", FAILED, "The email service refused the message: Postmark API response 401 (UNAUTHORIZED): The Server Token you provided", answer(factories.POSITIONS), esp_api_error),
]  # fmt: skip


BROKEN_TEMPLATES = {
    "reports/broken_syntax.html": '{% extends "reporting/email/base.html" %}{% block content %}{% if %}{% endblock %}',
    "reports/missing_variable.html": (
        '{% extends "reporting/email/base.html" %}{% block content %}Total {{ totals.grand }}{% endblock %}'
    ),
}


@pytest.fixture(autouse=True)
def broken_templates(settings, tmp_path):
    """Report templates with mistakes, in a folder searched before the project's own."""
    folder = tmp_path / "templates"
    for name, text in BROKEN_TEMPLATES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    settings.TEMPLATES = [{**engine, "DIRS": [folder, *engine["DIRS"]]} for engine in settings.TEMPLATES]


@pytest.fixture
def report_with_history(httpserver, use_smtp, settings):
    """A report whose earlier run was sent and archived, with the copy of that run as it was.

    No retries: a transient error (timeout, refused connection, HTTP 5xx) ends the run on its
    first attempt, in words (retrying them is tested in test_runs and test_tasks).
    """
    settings.REPORTING = {**settings.REPORTING, "FETCH_MAX_RETRIES": 0}
    httpserver.expect_oneshot_request("/api/positions").respond_with_json(factories.POSITIONS)
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))
    earlier = runs.execute_run(run_id=manual_run(report).pk)
    earlier.refresh_from_db()
    assert earlier.status == ReportRun.Status.SENT
    use_smtp.messages.clear()
    return report, earlier, _stored(earlier)


def _stored(run: ReportRun) -> dict:
    run.refresh_from_db()
    files = {a.filename: a.file.open("rb").read() for a in run.attachments.all()}
    snapshot = run.data_snapshot.open("rb").read()
    deliveries = sorted(run.deliveries.values_list("address", "status"))
    return {"status": run.status, "html": run.body_html, "files": files, "snapshot": snapshot, "deliveries": deliveries}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_ends_in_words_and_the_worker_serves_the_next_run(
    case, worker, report_with_history, httpserver, use_smtp, settings
):
    report, earlier, stored_before = report_with_history
    if case.serve:
        case.serve(httpserver)
    if case.prepare:
        case.prepare(report, settings, use_smtp, httpserver)

    run = run_through_worker(manual_run(report))

    assert run.status == case.expected_status, run.error
    assert case.expected_error in run.error
    assert "Traceback" not in run.error  # words; the traceback is kept apart, in error_detail
    got = sorted(address for message in use_smtp.messages for address in use_smtp.recipients_of(message)) + sorted(
        m.to[0] for m in _outbox()
    )
    assert got == sorted(case.sent_to)
    assert sorted(run.deliveries.filter(status__in=Delivery.ACCEPTED).values_list("address", flat=True)) == sorted(
        case.sent_to
    )
    assert _stored(earlier) == stored_before  # nothing already archived is lost

    _the_worker_still_serves_the_next_run(httpserver, use_smtp, settings)


def _outbox():
    from django.core import mail

    return getattr(mail, "outbox", [])


def _the_worker_still_serves_the_next_run(httpserver, use_smtp, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    httpserver.clear()
    httpserver.expect_request("/next/positions").respond_with_json(factories.POSITIONS)
    source = factories.data_source(httpserver.url_for("/next/"), name="Next source")
    following = factories.report(source, slug="next-report", addresses=["carol@example.com"])
    use_smtp.messages.clear()

    run = run_through_worker(manual_run(following))

    assert run.status == ReportRun.Status.SENT, run.error
    assert [use_smtp.recipients_of(m) for m in use_smtp.messages] == [["carol@example.com"]]


# --- bad input on the forms: refused in words, nothing saved --------------------------------


def report_form(source, **overrides) -> dict:
    form = {
        "name": "Weekly positions",
        "slug": "weekly-positions",
        "data_source": source.pk,
        "path": "positions",
        "records_path": "data.positions",
        "query_params": "{}",
        "period_kind": "weekly",
        "timezone": "Europe/London",
        "template": "reports/table.html",
        "subject_template": "{{ report.name }} — {{ period.label }}",
        "attach_csv": "on",
        "email_max_rows": "100",
        "enabled": "on",
        "schedule_enabled": "on",
        "minute": "0",
        "hour": "7",
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "1",
        "catch_up_hours": "24",
        "check_min_rows": "1",
        "recipients": [Recipient.objects.get_or_create(email="ann@example.com")[0].pk],
    }
    return {**form, **overrides}


FORM_CASES = [
    ("minute out of range", {"minute": "61"}, "Minute (0-59)"),
    ("hour out of range", {"hour": "24"}, "Hour (0-23)"),
    ("day of week out of range", {"day_of_week": "9"}, "Day of week"),
    ("a day that never comes", {"day_of_month": "31", "month_of_year": "2"}, "never fires"),
    ("unknown timezone", {"timezone": "Mars/Olympus_Mons"}, "Select a valid choice"),
    ("subject with a newline", {"subject_template": "Positions\nBcc: x@evil.test"}, "line break"),
    ("query parameters not JSON", {"query_params": "{from: 1"}, "Enter a valid JSON"),
    ("no active recipient", {"recipients": []}, "recipient"),
]


@pytest.mark.parametrize(("overrides", "message"), [case[1:] for case in FORM_CASES], ids=[c[0] for c in FORM_CASES])
def test_a_bad_report_form_is_refused_in_words_and_nothing_is_saved(admin_client, source, overrides, message):
    response = admin_client.post(reverse("admin:reporting_report_add"), report_form(source, **overrides))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Report.objects.exists()


@pytest.mark.parametrize(
    ("addresses", "message"),
    [("ann@example.com, not-an-address", "Not a valid email address: not-an-address."), ("  ", "address")],
    ids=["invalid address", "empty list"],
)
def test_a_bad_resend_is_refused_in_words_and_nothing_is_queued(admin_client, source, addresses, message):
    report = factories.report(source)
    run = runs.execute_run(run_id=manual_run(report).pk)
    before = list(run.deliveries.values_list("pk", "status"))

    response = admin_client.post(
        reverse("admin:reporting_reportrun_resend", args=[run.pk]),
        {"target": "typed", "addresses": addresses, "step": "send"},
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert list(run.deliveries.values_list("pk", "status")) == before


def test_a_duplicate_address_in_a_resend_gets_one_email(admin_client, source, use_smtp):
    report = factories.report(source)
    run = runs.execute_run(run_id=manual_run(report).pk)
    use_smtp.messages.clear()

    admin_client.post(
        reverse("admin:reporting_reportrun_resend", args=[run.pk]),
        {"target": "typed", "addresses": "dora@example.com, DORA@example.com", "step": "send"},
    )

    assert list(run.deliveries.filter(kind="resend").values_list("address", flat=True)) == ["dora@example.com"]


# --- admin hardening (issue 11): bad settings, bad codes, a locked-out login ----------------------------------------

HARDENING_SETTINGS_CASES = [
    (
        "login limit not a number",
        {"AXES_FAILURE_LIMIT": "five"},
        "AXES_FAILURE_LIMIT must be a whole number, not 'five'.",
    ),
    ("login limit zero", {"AXES_FAILURE_LIMIT": "0"}, "AXES_FAILURE_LIMIT must be at least 1, not 0."),
    ("cool-off negative", {"AXES_COOLOFF_MINUTES": "-5"}, "AXES_COOLOFF_MINUTES must be at least 1, not -5."),
    ("2FA switch not a yes/no", {"REPORTING_REQUIRE_2FA": "maybe"}, "REPORTING_REQUIRE_2FA must be one of"),
]


@pytest.mark.parametrize(
    ("env", "message"), [case[1:] for case in HARDENING_SETTINGS_CASES], ids=[c[0] for c in HARDENING_SETTINGS_CASES]
)
def test_a_bad_hardening_setting_stops_the_start_in_words(tmp_path, env, message):
    from tests.test_settings import manage

    result = manage("check", REPORTING_VAR_DIR=str(tmp_path), **env)

    assert result.returncode != 0
    assert message in result.stderr


TWO_FACTOR_CODE_CASES = [
    ("empty code", "", "Enter the 6-digit code your authenticator app shows."),
    ("wrong code", "WRONG", "That code is not right, or it was already used. Enter the code your app shows now."),
    ("letters", "abcdef", "That code is not right, or it was already used. Enter the code your app shows now."),
    (
        "too long",
        "1234567890" * 10,
        "That code is not right, or it was already used. Enter the code your app shows now.",
    ),
]


@pytest.mark.parametrize(
    ("code", "message"), [case[1:] for case in TWO_FACTOR_CODE_CASES], ids=[c[0] for c in TWO_FACTOR_CODE_CASES]
)
def test_a_bad_two_factor_code_is_refused_in_words_and_the_admin_stays_closed(
    client, django_user_model, settings, code, message
):
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    settings.REPORTING_REQUIRE_2FA = True
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    device = TOTPDevice.objects.create(user=root, name="Authenticator", confirmed=True)
    right = f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}"
    client.force_login(root)

    response = client.post(
        reverse("reporting_verify_2fa"),
        {"otp_device": device.persistent_id, "otp_token": "WRONG" if code == right else code, "next": "/admin/"},
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert client.get(reverse("admin:index")).status_code == 302  # still sent to the code page
    assert TOTPDevice.objects.get() == device  # the enrolment is untouched


def test_a_locked_out_login_says_so_in_words_and_the_password_is_unchanged(client, django_user_model, settings):
    settings.AXES_FAILURE_LIMIT = 2
    user = django_user_model.objects.create_user("ann", "ann@example.com", "right-password", is_staff=True)
    stored = user.password
    for _ in range(2):
        response = client.post(reverse("admin:login"), {"username": "ann", "password": "guess"})

    assert response.status_code == 429
    assert "after 2 wrong passwords, logging in is blocked for 15 minutes" in " ".join(
        response.content.decode().split()
    )
    user.refresh_from_db()
    assert user.password == stored and user.is_active
