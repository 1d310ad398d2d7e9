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
from reporting.models import Delivery, Report, ReportRun
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
        auth_scheme="bearer", secret_env_var="REPORTING_SECRET_THAT_IS_NOT_SET"
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
    Case("secret not set on the worker", FAILED, "REPORTING_SECRET_THAT_IS_NOT_SET' is not set", None, missing_secret),
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
        "owner": str(factories.owner().pk),
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
        "audience": "everyone",
        "per_recipient_data": "split",
        "when_no_rows": "skip",
        "check_min_rows": "1",
        "recipient_addresses": "ann@example.com",
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
    ("no active recipient", {"recipient_addresses": ""}, "recipient"),
    ("a typed address that is not one", {"recipient_addresses": "ann@example.com\nbob at example"}, "bob at example"),
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


# --- issue 11: exports that cannot execute, bounded subjects, URLs and forms, no 500s ------


FORMULA_ROWS = [
    {"instrument": '=HYPERLINK("http://evil.test","Click")', "quantity": -5, "note": "@SUM(A1)"},
    {"instrument": "+1+cmd|' /C calc'!A0", "quantity": 3, "note": "-2+3"},
]
LONG_TITLE = "Positions " + "x" * 1500


def redirect_to_a_long_url(httpserver):
    long_path = "/api/positions/" + "r" * 2100
    redirect = Response(status=302, headers={"Location": httpserver.url_for(long_path)})
    httpserver.expect_request("/api/positions").respond_with_response(redirect)
    httpserver.expect_request(long_path).respond_with_json(factories.POSITIONS)


EXPORT_CASES = [
    Case("rendered subject over 998 characters", FAILED, "The rendered subject is 1,510 characters long; at most 998 are allowed", answer({"title": LONG_TITLE, **factories.POSITIONS}), edit(subject_template="{{ data.title }}")),
    Case("request URL over 2,000 characters", FAILED, "The request URL is 2,", None, edit(query_params={"q": "x" * 2100})),
    Case("redirected to a URL over 2,000 characters: kept cut", SENT, "", redirect_to_a_long_url, sent_to=ANN_AND_BOB),
]  # fmt: skip


@pytest.mark.parametrize("case", EXPORT_CASES, ids=[case.name for case in EXPORT_CASES])
def test_a_value_too_long_to_keep_ends_in_words_not_as_an_unexpected_error(
    case, worker, report_with_history, httpserver, use_smtp, settings
):
    test_bad_input_ends_in_words_and_the_worker_serves_the_next_run(
        case, worker, report_with_history, httpserver, use_smtp, settings
    )
    following = ReportRun.objects.latest("pk")  # the next report's run; the case's run is the one before it
    run = ReportRun.objects.filter(pk__lt=following.pk).latest("pk")
    assert "Unexpected error" not in run.error
    assert len(run.subject) <= 998 and len(run.request_url) <= 2000


def _attachment(message, suffix: str) -> bytes:
    [part] = [part for part in message.iter_attachments() if part.get_filename().endswith(suffix)]
    return part.get_payload(decode=True)


def test_formulas_in_the_data_reach_the_emailed_files_as_text(
    worker, report_with_history, httpserver, use_smtp, settings
):
    import csv
    import io

    from openpyxl import load_workbook

    report, earlier, stored_before = report_with_history
    Report.objects.filter(pk=report.pk).update(attach_xlsx=True)
    answer({"data": {"positions": FORMULA_ROWS}})(httpserver)

    run = run_through_worker(manual_run(report))

    assert run.status == SENT, run.error
    assert sorted(address for m in use_smtp.messages for address in use_smtp.recipients_of(m)) == ANN_AND_BOB
    message = use_smtp.messages_to("ann@example.com")[0]
    rows = list(csv.reader(io.StringIO(_attachment(message, ".csv").decode("utf-8-sig"), newline="")))
    assert rows[1:] == [
        ['\'=HYPERLINK("http://evil.test","Click")', "-5", "'@SUM(A1)"],
        ["'+1+cmd|' /C calc'!A0", "3", "'-2+3"],
    ]
    sheet = load_workbook(io.BytesIO(_attachment(message, ".xlsx"))).active
    cells = [(cell.value, cell.data_type) for row in sheet.iter_rows(min_row=2) for cell in row]
    assert cells == [
        ('=HYPERLINK("http://evil.test","Click")', "s"),
        (-5, "n"),
        ("@SUM(A1)", "s"),
        ("+1+cmd|' /C calc'!A0", "s"),
        (3, "n"),
        ("-2+3", "s"),
    ]
    assert _stored(earlier) == stored_before

    _the_worker_still_serves_the_next_run(httpserver, use_smtp, settings)


EXPORT_FORM_CASES = [
    ("rows shown in the email over 1,000", {"email_max_rows": "100000"}, "Show at most 1,000 rows in the email"),
    ("subject template over 300 characters", {"subject_template": "x" * 301}, "at most 300 characters"),
    ("path over 500 characters", {"path": "p" * 501}, "at most 500 characters"),
    ("a query parameter value over 500 characters", {"query_params": json.dumps({"q": "x" * 501})}, "is 501 characters long; at most 500 are allowed."),
    ("a query parameter name over 100 characters", {"query_params": json.dumps({"n" * 101: "1"})}, "at most 100 are allowed"),
    ("over 50 query parameters", {"query_params": json.dumps({f"p{i}": "1" for i in range(51)})}, "Give at most 50 query parameters; there are 51."),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"), [case[1:] for case in EXPORT_FORM_CASES], ids=[c[0] for c in EXPORT_FORM_CASES]
)
def test_a_report_form_over_a_bound_is_refused_in_words_and_the_report_is_unchanged(
    admin_client, source, overrides, message
):
    test_a_bad_report_form_is_refused_in_words_and_nothing_is_saved(admin_client, source, overrides, message)
    report = factories.report(source, slug="kept")
    before = Report.objects.filter(pk=report.pk).values().get()
    form = report_form(source, slug="kept", **overrides)

    response = admin_client.post(reverse("admin:reporting_report_change", args=[report.pk]), form)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert Report.objects.filter(pk=report.pk).values().get() == before


@pytest.mark.parametrize("url_name", ["admin:reporting_report_run_now", "admin:reporting_report_send_test"])
def test_a_day_past_the_calendar_is_refused_on_the_form_and_the_worker_serves_the_next_run(
    url_name, worker, report_with_history, admin_client, admin_user, httpserver, use_smtp, settings
):
    report, earlier, stored_before = report_with_history
    Report.objects.filter(pk=report.pk).update(period_kind="weekly")
    runs_before = ReportRun.objects.count()

    response = admin_client.post(reverse(url_name, args=[report.pk]), {"confirm": "yes", "period_day": "9999-12-31"})

    assert response.status_code == 200
    assert "This day is too far in the future" in response.content.decode()
    assert ReportRun.objects.count() == runs_before and use_smtp.messages == []
    assert _stored(earlier) == stored_before

    _the_worker_still_serves_the_next_run(httpserver, use_smtp, settings)


def test_preview_of_a_day_past_the_calendar_is_refused_in_words(admin_client, source):
    report = factories.report(source, period_kind="weekly")

    response = admin_client.get(
        reverse("admin:reporting_report_preview", args=[report.pk]), {"period_day": "9999-12-31"}
    )

    assert response.status_code == 200
    assert "This day is too far in the future" in response.content.decode()


# --- staff templates run in a sandbox (issue 11): past the data or the bounds, refused in words ---

BROKEN_TEMPLATES.update(
    {
        "reports/explosive.html": "".join(f'{{% for x{n} in "0123456789" %}}' for n in range(4))
        + "{% lorem 1000 w %}"
        + "{% endfor %}" * 4,
        "reports/mutating.html": (
            '{% extends "reporting/email/base.html" %}{% block content %}{{ rows.clear }}{% endblock %}'
        ),
    }
)


def owned_and_edited(**fields):
    """The report gets an owner (whose password hash a template must not reach), then `fields`."""

    def prepare(report, settings, smtp_server, httpserver):
        from django.contrib.auth import get_user_model

        owner = get_user_model().objects.create_user("owner-of-the-report", password="owner-password")
        Report.objects.filter(pk=report.pk).update(owner=owner, **fields)

    return prepare


SLOW_SUBJECT = "Report " + "".join(f"{{% for x{n} in data.as_of %}}" for n in range(7)) + "{% endfor %}" * 7

SANDBOX_CASES = [
    Case("path reaching for the owner's password", FAILED, "not found in the data or the report", None, owned_and_edited(path="{{ report.owner.password }}")),
    Case("subject with {% debug %}", FAILED, "is not a tag report templates may use", answer(factories.POSITIONS), edit(subject_template="{% debug %}")),
    Case("query parameter loading a tag library", FAILED, "cannot load tag libraries", None, edit(query_params={"q": "{% load log %}"})),
    Case("body writing over 5 MB", FAILED, "output is larger than 5 MB", answer(factories.POSITIONS), edit(template="reports/explosive.html")),
    Case("body emptying its rows", FAILED, "refers to 'rows.clear'", answer(factories.POSITIONS), edit(template="reports/mutating.html")),
    Case("subject looping for ever", FAILED, "took longer than 2 s", answer(factories.POSITIONS), edit(subject_template=SLOW_SUBJECT)),
]  # fmt: skip


@pytest.mark.parametrize("case", SANDBOX_CASES, ids=[case.name for case in SANDBOX_CASES])
def test_a_template_past_its_data_or_its_bounds_ends_in_words_and_the_worker_serves_the_next_run(
    case, worker, report_with_history, httpserver, use_smtp, settings
):
    test_bad_input_ends_in_words_and_the_worker_serves_the_next_run(
        case, worker, report_with_history, httpserver, use_smtp, settings
    )


SANDBOX_FORM_CASES = [
    ("path reaching past its data", {"path": "{{ report.owner.password }}"}, "not found in the data or the report"),
    ("subject with debug", {"subject_template": "{% debug %}{{ report.name }}"}, "is not a tag report templates may use"),
    ("query parameter loading a library", {"query_params": json.dumps({"q": "{% load log %}"})}, "cannot load tag libraries"),
    ("subject with a huge lorem", {"subject_template": "{% lorem 100000 w %}"}, "may write at most 1,000 words"),
    ("path including a file outside the layouts", {"path": '{% include "project/settings.py" %}'}, "which is not one of the layouts under reporting/email/ or reports/"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"), [case[1:] for case in SANDBOX_FORM_CASES], ids=[c[0] for c in SANDBOX_FORM_CASES]
)
def test_a_report_form_with_a_template_past_its_data_is_refused_in_words_and_nothing_is_saved(
    admin_client, source, overrides, message
):
    test_a_bad_report_form_is_refused_in_words_and_nothing_is_saved(admin_client, source, overrides, message)


# --- issue 11: secrets bound to their data source, a fetch whose every resource is bounded -----

# Imported here so that this block stays one contiguous addition to the table.
from reporting.models import DataSource  # noqa: E402


def source_fields(**fields):
    def prepare(report, settings, smtp_server, httpserver):
        report.data_source.__class__.objects.filter(pk=report.data_source_id).update(**fields)

    return prepare


def trickling_source(report, settings, smtp_server, httpserver):
    def handler(request):
        def body():
            for byte in json.dumps(factories.POSITIONS).encode() + b" " * 100:
                time.sleep(0.2)
                yield bytes([byte])

        return Response(body(), content_type="application/json")

    httpserver.expect_request("/api/positions").respond_with_handler(handler)
    settings.REPORTING = {**settings.REPORTING, "FETCH_TOTAL_SECONDS": 1}


def few_values_allowed(report, settings, smtp_server, httpserver):
    settings.REPORTING = {**settings.REPORTING, "MAX_JSON_VALUES": 1000}


SECRETS_AND_LIMITS_CASES = [
    Case("secret in a variable not meant for data sources", FAILED, "The environment variable 'SECRET_KEY' may not hold a data source's secret", None, source_fields(auth_scheme="bearer", secret_env_var="SECRET_KEY")),
    Case("base URL with user:password saved before the rule", FAILED, "must not carry a user name or password", None, source_fields(base_url="http://who:pw@localhost/api/")),
    Case("ftp base URL", FAILED, "must start with http:// or https://, not ftp://", None, source_fields(base_url="ftp://localhost/api/")),
    Case("connect timeout 0", FAILED, "The connect timeout must be more than 0", None, source_fields(connect_timeout=0)),
    Case("header name with CRLF", FAILED, "is not a valid HTTP header name", None, source_fields(auth_scheme="header", auth_header_name="X-Key\r\nX-Evil: 1", secret_env_var="REPORTING_SECRET_THAT_IS_NOT_SET")),
    Case("a source that trickles its answer", FAILED, "did not send its whole answer within 1 seconds", None, trickling_source),
    Case("JSON nested 100,000 deep", FAILED, "nests deeper than 64 levels", answer("[" * 100_000 + "]" * 100_000)),
    Case("a number of 5,000 digits", FAILED, "a number longer than 4,300 digits", answer('{"data": {"positions": [' + "7" * 5000 + "]}}")),
    Case("more values than allowed", FAILED, "more than 1,000 values", answer({"data": {"positions": list(range(2000))}}), few_values_allowed),
]  # fmt: skip


@pytest.mark.parametrize("case", SECRETS_AND_LIMITS_CASES, ids=[case.name for case in SECRETS_AND_LIMITS_CASES])
def test_bad_secrets_urls_and_answers_end_in_words_and_the_worker_serves_the_next_run(
    case, worker, report_with_history, httpserver, use_smtp, settings
):
    test_bad_input_ends_in_words_and_the_worker_serves_the_next_run(
        case, worker, report_with_history, httpserver, use_smtp, settings
    )


def data_source_form(**overrides) -> dict:
    form = {"name": "Positions", "base_url": "http://localhost/v1/", "auth_scheme": "none"}
    return {**form, "connect_timeout": "5", "read_timeout": "30", **overrides}


DATA_SOURCE_FORM_CASES = [
    ("secret variable SECRET_KEY", {"auth_scheme": "bearer", "secret_env_var": "SECRET_KEY"}, "may not hold a data source&#x27;s secret"),
    ("user:password in the URL", {"base_url": "http://who:pw@localhost/v1/"}, "must not carry a user name or password"),
    ("ftp URL", {"base_url": "ftp://localhost/v1/"}, "must start with http:// or https://, not ftp://."),
    ("connect timeout 0", {"connect_timeout": "0"}, "The connect timeout must be more than 0 and at most 300 seconds, not 0."),
    ("connect timeout -1", {"connect_timeout": "-1"}, "The connect timeout must be more than 0 and at most 300 seconds, not -1."),
    ("read timeout over 300", {"read_timeout": "3600"}, "The read timeout must be more than 0 and at most 300 seconds, not 3600."),
    ("header name with CRLF", {"auth_scheme": "header", "auth_header_name": "X-Key\r\nX-Evil: 1"}, "is not a valid HTTP header name"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"), [case[1:] for case in DATA_SOURCE_FORM_CASES], ids=[c[0] for c in DATA_SOURCE_FORM_CASES]
)
def test_a_bad_data_source_form_is_refused_in_words_and_nothing_is_saved(admin_client, overrides, message):
    before = list(DataSource.objects.values())

    response = admin_client.post(reverse("admin:reporting_datasource_add"), data_source_form(**overrides))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert list(DataSource.objects.values()) == before


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
