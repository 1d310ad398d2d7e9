"""Destinations besides email: Slack, Teams and signed webhooks, each a delivery kept as an email is.

Each service is a real HTTP server on loopback (pytest-httpserver): Slack's Web API and its upload
URLs, a Teams Workflows webhook, a webhook receiver. Retries never sleep: `outgoing.wait` records
the delays the retry policy chose instead.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re

import pytest
from django.core.management import call_command
from django.urls import reverse
from werkzeug import Response

from reporting import alerts, runs, tasks
from reporting.models import AuditEvent, Delivery, Destination, Report, ReportRun
from reporting.pipeline import outgoing
from tests import factories
from tests.test_admin import report_form

pytestmark = pytest.mark.django_db
TOKEN = "xoxb-1234567890-abcdefghijklmnop"
SIGNING = "whsec_5f4e3d2c1b0a99887766"
HOOK_SIG = "sv=1.0&sig=Q2hhbmdlTWVQbGVhc2U0MjQy"  # the secret part of a Teams Workflows URL
LAYOUT = {
    "columns": [
        {"field": "instrument", "label": "Instrument"},
        {"field": "market_value", "label": "Value", "format": "currency", "currency": "GBP", "total": True},
    ],
    "headline": [
        {"label": "Total value", "path": "summary.total_value", "format": "currency", "currency": "GBP"},
        {"label": "Market value", "total_of": "market_value", "format": "currency", "currency": "GBP"},
        {"label": "Positions", "row_count": True},
    ],
}
HEADLINE = [
    {"label": "Total value", "text": "£1,234,567.89"},
    {"label": "Market value", "text": "£65,862.90"},
    {"label": "Positions", "text": "3"},
]


@pytest.fixture
def waits(monkeypatch):
    """The delays the retries chose, recorded rather than slept."""
    recorded: list[float] = []
    monkeypatch.setattr(outgoing, "wait", recorded.append)
    return recorded


@pytest.fixture
def services(settings, httpserver, monkeypatch):
    """Slack's API at /slack/api/ of the loopback server; loopback allowed for Teams and webhooks; the secrets set."""
    settings.REPORTING = {
        **settings.REPORTING,
        "SLACK_API_URL": httpserver.url_for("/slack/api/"),
        "ALLOWED_DESTINATION_HOSTS": ["127.0.0.1", "localhost"],
        "SITE_URL": "https://reports.example.com",
    }
    monkeypatch.setenv("REPORTING_SECRET_SLACK_BOT", TOKEN)
    monkeypatch.setenv("REPORTING_SECRET_LEDGER_URL", httpserver.url_for("/hooks/ledger"))
    monkeypatch.setenv("REPORTING_SECRET_LEDGER_SIGNING", SIGNING)
    monkeypatch.setenv("REPORTING_SECRET_TEAMS_URL", httpserver.url_for("/workflows/run") + "?" + HOOK_SIG)
    return httpserver


@pytest.fixture
def owned_report(report, django_user_model):
    """`report` with a designed headline and an owner to alert."""
    report.owner = django_user_model.objects.create_user("olga", "olga@example.com", "pw")
    report.layout = LAYOUT
    report.save()
    return report


def slack(**fields) -> Destination:
    defaults = {"name": "Finance", "kind": "slack", "secret_env_var": "REPORTING_SECRET_SLACK_BOT"}
    return Destination.objects.create(**{**defaults, "slack_channel": "C0123ABCD", **fields})


def webhook(**fields) -> Destination:
    return Destination.objects.create(
        **{
            "name": "Ledger",
            "kind": "webhook",
            "secret_env_var": "REPORTING_SECRET_LEDGER_URL",
            "signing_secret_env_var": "REPORTING_SECRET_LEDGER_SIGNING",
            **fields,
        }
    )


def teams(**fields) -> Destination:
    defaults = {"name": "Ops channel", "kind": "teams", "secret_env_var": "REPORTING_SECRET_TEAMS_URL"}
    return Destination.objects.create(**{**defaults, **fields})


def run_now(report) -> ReportRun:
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    return runs.execute_run(run_id=run.pk)


def serve_slack(server, *, ts: str = "1700000000.000100") -> None:
    """Slack's Web API and upload URLs as files_upload_v2 uses them: each file gets an upload URL and an id."""
    server.expect_request("/slack/api/chat.postMessage", method="POST").respond_with_json(
        {"ok": True, "channel": "C0123ABCD", "ts": ts}
    )

    def grant(request):
        filename = request.values["filename"]
        file_id = "F" + hashlib.sha1(filename.encode()).hexdigest()[:8].upper()
        upload_url = server.url_for(f"/slack/upload/{file_id}")
        return Response(
            json.dumps({"ok": True, "upload_url": upload_url, "file_id": file_id}), 200, mimetype="application/json"
        )

    server.expect_request("/slack/api/files.getUploadURLExternal", method="POST").respond_with_handler(grant)
    server.expect_request(re.compile(r"^/slack/upload/F[0-9A-F]{8}$"), method="POST").respond_with_data(
        "OK - uploaded", status=200
    )
    server.expect_request("/slack/api/files.completeUploadExternal", method="POST").respond_with_json(
        {"ok": True, "files": [{"id": "F1", "title": "x"}]}
    )


def requests_to(server, path: str) -> list:
    return [request for request, _response in server.log if request.path.startswith(path)]


def signed_correctly(request) -> bool:
    timestamp = request.headers["X-Report-Timestamp"]
    expected = hmac.new(SIGNING.encode(), f"{timestamp}.".encode() + request.get_data(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["X-Report-Signature"], f"sha256={expected}")


# --- what each service receives -------------------------------------------------------------------


def test_slack_gets_the_headline_message_then_the_csv_by_file_upload_v2_with_the_token(
    services, owned_report, waits, caplog
):
    caplog.set_level(logging.DEBUG)
    serve_slack(services)
    owned_report.destinations.add(slack())

    run = run_now(owned_report)

    assert run.status == "sent", run.error
    [post] = requests_to(services, "/slack/api/chat.postMessage")
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    message = post.get_json()
    assert message["channel"] == "C0123ABCD"
    assert message["text"].startswith(f"Portfolio — {run.period_label}\nTotal value: £1,234,567.89")
    fields = [field["text"] for block in message["blocks"] for field in block.get("fields", [])]
    assert fields == ["*Total value*\n£1,234,567.89", "*Market value*\n£65,862.90", "*Positions*\n3"]
    assert f"<https://reports.example.com/admin/reporting/reportrun/{run.pk}/change/|" in json.dumps(message["blocks"])
    [grant] = requests_to(services, "/slack/api/files.getUploadURLExternal")
    csv = run.attachments.get(filename__endswith=".csv")
    assert grant.headers["Authorization"] == f"Bearer {TOKEN}"
    assert (grant.values["filename"], grant.values["length"]) == (csv.filename, str(csv.size))
    [upload] = requests_to(services, "/slack/upload/F")
    assert upload.get_data() == csv.file.open("rb").read()
    assert "Authorization" not in upload.headers  # the upload URL is the grant: the token does not go there
    [complete] = requests_to(services, "/slack/api/files.completeUploadExternal")
    assert complete.headers["Authorization"] == f"Bearer {TOKEN}"
    assert (complete.values["channel_id"], complete.values["thread_ts"]) == ("C0123ABCD", "1700000000.000100")
    assert json.loads(complete.values["files"]) == [{"id": upload.path.rsplit("/", 1)[1], "title": csv.filename}]
    delivery = run.deliveries.get(channel="slack")
    assert (delivery.status, delivery.target, delivery.answer["ts"]) == (
        "sent",
        "Slack channel #C0123ABCD: Finance",
        "1700000000.000100",
    )
    assert delivery.answer["files"] == [{"id": upload.path.rsplit("/", 1)[1], "title": csv.filename}]
    assert waits == []
    assert TOKEN not in caplog.text  # slack_sdk's own debug log of each request hides the Authorization header


def test_teams_gets_a_card_with_the_headline_figures_and_a_link_to_the_archived_run(services, owned_report):
    services.expect_request("/workflows/run", method="POST").respond_with_data("", status=202)
    owned_report.destinations.add(teams())

    run = run_now(owned_report)

    assert run.status == "sent", run.error
    [request] = requests_to(services, "/workflows/run")
    assert request.query_string.decode() == HOOK_SIG
    card = request.get_json()["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard"
    assert [block["text"] for block in card["body"] if block["type"] == "TextBlock"][:2] == [
        "Portfolio",
        run.period_label,
    ]
    [facts] = [block["facts"] for block in card["body"] if block["type"] == "FactSet"]
    assert facts == [{"title": figure["label"], "value": figure["text"]} for figure in HEADLINE]
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open the archived run",
            "url": f"https://reports.example.com/admin/reporting/reportrun/{run.pk}/change/",
        }
    ]
    delivery = run.deliveries.get(channel="teams")
    assert (delivery.status, delivery.esp_status, delivery.answer["status"]) == ("sent", "HTTP 202", 202)


def test_a_webhook_gets_the_documented_payload_signed_over_the_timestamp_and_the_body(services, owned_report, caplog):
    caplog.set_level(logging.DEBUG)
    services.expect_request("/hooks/ledger", method="POST").respond_with_json({"received": True})
    owned_report.destinations.add(webhook(attach_xlsx=True))
    owned_report.attach_xlsx = True
    owned_report.save()

    run = run_now(owned_report)

    assert run.status == "sent", run.error
    [request] = requests_to(services, "/hooks/ledger")
    assert signed_correctly(request)
    delivery = run.deliveries.get(channel="webhook")
    assert request.headers["X-Report-Delivery"] == str(delivery.pk)
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    files = list(run.attachments.filter(content_id="").order_by("pk"))
    assert [file.filename.rsplit(".", 1)[1] for file in files] == ["csv", "xlsx"]
    assert request.get_json() == {
        "report": {"id": owned_report.pk, "name": "Portfolio", "slug": "portfolio"},
        "period": {"start": run.period_start.isoformat(), "end": run.period_end.isoformat(), "label": run.period_label},
        "headline": HEADLINE,
        "row_count": 3,
        "run": {"id": run.pk, "url": f"https://reports.example.com/admin/reporting/reportrun/{run.pk}/change/"},
        "files": [
            {
                "filename": file.filename,
                "size": file.size,
                "url": f"https://reports.example.com/admin/reporting/reportrun/{run.pk}/attachment/{file.pk}/",
            }
            for file in files
        ],
    }
    assert delivery.payload == request.get_json()  # what was sent is archived
    assert (delivery.status, delivery.answer["status"], json.loads(delivery.answer["body"])) == (
        "sent",
        200,
        {"received": True},
    )
    assert SIGNING not in caplog.text


def test_a_report_without_a_designed_headline_sends_an_empty_one(services, report):
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("ok")
    report.destinations.add(webhook())

    run_now(report)

    [request] = requests_to(services, "/hooks/ledger")
    assert request.get_json()["headline"] == []
    assert signed_correctly(request)


# --- failures and retries ------------------------------------------------------------------------------


def test_a_429_with_retry_after_is_retried_after_at_least_that_long_then_sent(services, report, waits):
    services.expect_oneshot_request("/hooks/ledger", method="POST").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "7"}
    )
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("ok")
    report.destinations.add(webhook())

    run = run_now(report)

    assert run.status == "sent", run.error
    first, second = requests_to(services, "/hooks/ledger")
    assert first.get_data() == second.get_data() and signed_correctly(first) and signed_correctly(second)
    assert len(waits) == 1 and 7 <= waits[0] <= 30
    delivery = run.deliveries.get(channel="webhook")
    assert delivery.status == "sent"
    assert [(wait["status"], wait["seconds"]) for wait in delivery.answer["waited"]] == [(429, waits[0])]


def test_a_500_is_retried_with_backoff_and_slack_429s_on_each_step_too(services, owned_report, waits):
    serve_slack(services)
    services.expect_oneshot_request("/slack/api/chat.postMessage").respond_with_json(
        {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "3"}
    )
    services.expect_oneshot_request("/slack/api/files.completeUploadExternal").respond_with_json(
        {"ok": False, "error": "internal_error"}, status=500
    )
    services.expect_oneshot_request("/hooks/ledger").respond_with_data("oops", status=500)
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("ok")
    owned_report.destinations.add(slack(), webhook())

    run = run_now(owned_report)

    assert run.status == "sent", run.error
    assert len(requests_to(services, "/slack/api/chat.postMessage")) == 2
    assert len(requests_to(services, "/slack/api/files.getUploadURLExternal")) == 1  # only the failed step again
    assert len(requests_to(services, "/slack/api/files.completeUploadExternal")) == 2
    assert len(requests_to(services, "/hooks/ledger")) == 2
    assert len(waits) == 3 and waits[0] >= 3 and all(2 <= wait <= 30 for wait in waits)
    slack_delivery = run.deliveries.get(channel="slack")
    assert [wait["request"] for wait in slack_delivery.answer["waited"]] == [
        "chat.postMessage",
        "files.completeUploadExternal",
    ]


def test_a_400_fails_in_words_without_a_retry_the_run_is_partly_sent_and_the_owner_alerted(
    services, owned_report, waits, mailoutbox
):
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("bad payload", status=400)
    owned_report.destinations.add(webhook())

    run = run_now(owned_report)

    assert len(requests_to(services, "/hooks/ledger")) == 1 and waits == []
    delivery = run.deliveries.get(channel="webhook")
    assert delivery.status == "failed"
    assert delivery.error == "localhost refused the message as malformed (HTTP 400 BAD REQUEST)."
    assert delivery.answer == {"status": 400, "body": "bad payload"}
    assert run.status == "partially_sent"
    assert run.error == f"1 destination did not get the message: Webhook: Ledger: {delivery.error}"
    assert sorted(message.to[0] for message in mailoutbox) == ["ann@example.com", "bob@example.com"]
    assert alerts.send_failure_alerts() == 1
    alert = mailoutbox[-1]
    assert alert.to == ["olga@example.com"] and "was sent only in part" in alert.subject
    assert "Webhook: Ledger" in alert.body


def test_a_service_that_keeps_failing_is_given_up_after_the_bounded_attempts(services, report, waits, settings):
    settings.REPORTING = {**settings.REPORTING, "DESTINATION_MAX_ATTEMPTS": 3}
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("down", status=503)
    report.destinations.add(webhook())

    run = run_now(report)

    assert len(requests_to(services, "/hooks/ledger")) == 3 and len(waits) == 2
    assert run.deliveries.get(channel="webhook").error == (
        "localhost is unavailable right now (HTTP 503 SERVICE UNAVAILABLE). Gave up after 3 tries."
    )
    assert run.status == "partially_sent"


def test_a_slack_delivery_waits_at_most_its_budget_in_all_across_its_requests(services, report, waits):
    serve_slack(services)
    slow_down = {"status": 429, "headers": {"Retry-After": "30"}}
    for path in ["chat.postMessage", "chat.postMessage", "files.getUploadURLExternal", "files.completeUploadExternal"]:
        services.expect_oneshot_request(f"/slack/api/{path}").respond_with_json(
            {"ok": False, "error": "ratelimited"}, **slow_down
        )
    report.destinations.add(slack())

    run = run_now(report)

    assert waits == [30, 30, 30]  # 3 tries' worth of the longest wait (REPORTING_DESTINATION_MAX_ATTEMPTS 4)
    delivery = run.deliveries.get(channel="slack")
    assert delivery.status == "failed" and delivery.answer["ts"] == "1700000000.000100"
    assert delivery.error == (
        "The message was posted, but its files were not: Slack asked us to slow down (HTTP 429). "
        "Given up: waiting again would take this delivery past 90 seconds of waiting in all."
    )


def test_a_retry_after_longer_than_the_longest_wait_fails_at_once_in_words(services, report, waits):
    services.expect_request("/hooks/ledger", method="POST").respond_with_data(
        "", status=429, headers={"Retry-After": "3600"}
    )
    report.destinations.add(webhook())

    run = run_now(report)

    assert waits == [] and len(requests_to(services, "/hooks/ledger")) == 1
    assert "asked to be tried again in 3600 seconds, longer than REPORTING_DESTINATION_RETRY_MAX_SECONDS (30)" in (
        run.deliveries.get(channel="webhook").error
    )


def test_slack_refusals_are_told_in_words(services, report, waits):
    services.expect_request("/slack/api/chat.postMessage").respond_with_json({"ok": False, "error": "not_in_channel"})
    report.destinations.add(slack(attach_csv=False))

    run = run_now(report)

    delivery = run.deliveries.get(channel="slack")
    assert delivery.error == "The Slack app is not in channel C0123ABCD: invite it (not_in_channel)."
    assert waits == [] and run.status == "partially_sent"


def test_a_teams_host_not_allowed_is_refused_without_connecting(services, report, monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_TEAMS_URL", "https://prod-01.westeurope.logic.azure.com/workflows/x?sig=y")
    report.destinations.add(teams())

    run = run_now(report)

    assert run.deliveries.get(channel="teams").error == (
        "The destination's host prod-01.westeurope.logic.azure.com is not in REPORTING_ALLOWED_DESTINATION_HOSTS. "
        "Nothing was sent."
    )


def test_a_name_that_resolves_to_loopback_is_refused_on_the_open_socket(services, report, settings):
    settings.REPORTING = {**settings.REPORTING, "ALLOWED_DESTINATION_HOSTS": [".localhost"]}  # a domain entry only
    report.destinations.add(teams())

    run = run_now(report)

    error = run.deliveries.get(channel="teams").error
    assert "localhost resolved to 127.0.0.1, a loopback address, which is refused" in error
    assert "REPORTING_ALLOWED_DESTINATION_HOSTS" in error
    assert requests_to(services, "/workflows/run") == []


def test_a_destination_saved_around_the_form_with_the_django_secret_key_sends_nothing(services, report):
    report.destinations.add(teams(secret_env_var="SECRET_KEY"))

    run = run_now(report)

    error = run.deliveries.get(channel="teams").error
    assert error.startswith("The environment variable 'SECRET_KEY' may not hold a destination's secret")
    assert requests_to(services, "/workflows/run") == []


def test_destinations_get_the_run_when_the_mail_server_cannot_be_reached_at_its_last_attempt(
    services, report, use_smtp
):
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("ok")
    report.destinations.add(webhook())
    use_smtp.stop()

    run = run_now(report)  # its final attempt

    assert len(requests_to(services, "/hooks/ledger")) == 1
    assert sorted(run.deliveries.values_list("channel", "status")) == [
        ("email", "failed"),
        ("email", "failed"),
        ("webhook", "sent"),
    ]
    assert run.status == "partially_sent"
    assert run.error.startswith("2 of 2 addresses did not get the email: ann@example.com: The mail server could not")


# --- exactly once -----------------------------------------------------------------------------------------


def test_each_destination_gets_a_run_once_when_the_task_runs_twice(services, report):
    serve_slack(services)
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("ok")
    report.destinations.add(slack(), webhook())
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)

    tasks.execute_run(run.pk)
    tasks.execute_run(run.pk)  # a redelivered message

    assert len(requests_to(services, "/slack/api/chat.postMessage")) == 1
    assert len(requests_to(services, "/slack/upload/F")) == 1
    assert len(requests_to(services, "/hooks/ledger")) == 1
    assert sorted(run.deliveries.exclude(channel="email").values_list("channel", "status")) == [
        ("slack", "sent"),
        ("webhook", "sent"),
    ]


def test_a_delivery_left_sending_by_a_killed_worker_is_never_sent_again(services, report, monkeypatch):
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("ok")
    report.destinations.add(webhook())
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the worker dies mid-send: nothing after this line runs

    with monkeypatch.context() as patched:
        patched.setattr(outgoing, "send", killed)
        with pytest.raises(KeyboardInterrupt):
            runs.execute_run(run_id=run.pk)
    assert run.deliveries.get(channel="webhook").status == "sending"  # written before it was sent
    ReportRun.objects.filter(pk=run.pk).update(lease_expires_at=run.created_at)  # its lease ran out

    run = runs.execute_run(run_id=run.pk)

    assert requests_to(services, "/hooks/ledger") == []
    delivery = run.deliveries.get(channel="webhook")
    assert delivery.status == "failed" and delivery.error.startswith("Interrupted while sending (the worker stopped)")
    assert run.status == "partially_sent"


def test_a_test_send_goes_to_no_destination(services, report, staff):
    report.destinations.add(webhook())
    run = runs.create_test_run(report_id=report.pk, period_day=None, user_email=staff.email, requested_by_id=staff.pk)

    run = runs.execute_run(run_id=run.pk)

    assert run.status == "sent" and requests_to(services, "/hooks/ledger") == []
    assert not run.deliveries.exclude(channel="email").exists()


# --- secrets -------------------------------------------------------------------------------------------------


def test_no_token_url_or_signing_secret_is_stored_or_logged_even_when_a_service_echoes_them(
    services, report, caplog, waits
):
    caplog.set_level(logging.DEBUG)
    teams_url = services.url_for("/workflows/run") + "?" + HOOK_SIG
    echo = f"bad {TOKEN} {teams_url} {SIGNING} {HOOK_SIG}"
    services.expect_request("/slack/api/chat.postMessage").respond_with_json(
        {"ok": False, "error": f"invalid_auth {TOKEN}", "echo": echo}, status=401
    )
    services.expect_request("/workflows/run").respond_with_data(echo, status=400)
    services.expect_request("/hooks/ledger").respond_with_data(echo, status=500)
    report.destinations.add(slack(), teams(), webhook())

    run = run_now(report)

    assert sorted(run.deliveries.exclude(channel="email").values_list("status", flat=True)) == ["failed"] * 3
    dump = io.StringIO()
    call_command("dumpdata", "reporting", stdout=dump)
    stored = dump.getvalue() + run.error + run.error_detail + run.notes
    ours = "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("reporting"))
    for secret in (TOKEN, SIGNING, HOOK_SIG, "Q2hhbmdlTWVQbGVhc2U0MjQy", teams_url):
        assert secret not in stored, stored[max(0, stored.find(secret) - 300) : stored.find(secret) + 100]
        assert secret not in ours
    assert "[secret]" in run.deliveries.get(channel="teams").answer["body"]
    assert "REPORTING_SECRET_SLACK_BOT" in dump.getvalue()  # the variable's name is what is kept


def test_the_log_filter_redacts_a_webhook_urls_path_and_query_as_libraries_log_them(services, monkeypatch):
    handler = logging.getLogger("reporting").handlers[0]  # the console handler settings.LOGGING configures
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        logging.getLogger("reporting.outgoing").warning('127.0.0.1:80 "POST /workflows/run?%s HTTP/1.1" 400', HOOK_SIG)
    finally:
        handler.setStream(previous)

    assert HOOK_SIG not in stream.getvalue() and "[secret]" in stream.getvalue()


def test_the_form_refuses_a_variable_that_may_not_hold_a_secret(admin_client):
    page = admin_client.post(
        reverse("admin:reporting_destination_add"),
        {"name": "Leak", "kind": "webhook", "enabled": "on", "secret_env_var": "DATABASE_URL",
         "signing_secret_env_var": "SECRET_KEY", "attach_csv": "on"},
    )  # fmt: skip

    assert page.status_code == 200 and not Destination.objects.exists()
    text = page.content.decode()
    assert "The environment variable &#x27;DATABASE_URL&#x27; may not hold a destination&#x27;s secret" in text
    assert "The environment variable &#x27;SECRET_KEY&#x27; may not hold a destination&#x27;s secret" in text


# --- resends ----------------------------------------------------------------------------------------------------


def test_a_destination_is_resent_from_the_runs_page_audited_with_the_archived_payload(
    services, report, staff_client, eager_celery, django_capture_on_commit_callbacks
):
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("ok")
    report.destinations.add(webhook())
    run = run_now(report)
    original = run.deliveries.get(channel="webhook")
    page = staff_client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()
    resend_url = reverse("admin:reporting_reportrun_resend_destination", args=[run.pk, original.pk])
    assert resend_url in page and "Webhook: Ledger" in page

    assert "is sent again, as it was archived" in staff_client.get(resend_url).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(resend_url)

    assert response.status_code == 302
    first, second = requests_to(services, "/hooks/ledger")
    assert first.get_data() == second.get_data() and signed_correctly(second)
    resend = run.deliveries.get(channel="webhook", kind="resend")
    assert (resend.status, resend.requested_by.username, resend.target) == ("sent", "kim", "Webhook: Ledger")
    assert second.headers["X-Report-Delivery"] == str(resend.pk)
    event = AuditEvent.objects.get(action="resent")
    assert (event.actor_name, event.run_id) == ("kim", run.pk)
    assert event.summary == f"Resent run #{run.pk} ({run.period_label}) to Webhook: Ledger."
    assert Delivery.objects.get(pk=original.pk).status == "sent"  # the original is as it was


def test_a_resend_is_refused_to_whoever_may_not_resend(services, report, client):
    services.expect_request("/hooks/ledger", method="POST").respond_with_data("ok")
    report.destinations.add(webhook())
    run = run_now(report)
    delivery = run.deliveries.get(channel="webhook")
    client.force_login(factories.staff_user("vera", "view_reportrun"))

    response = client.post(reverse("admin:reporting_reportrun_resend_destination", args=[run.pk, delivery.pk]))

    assert response.status_code == 403
    assert run.deliveries.filter(channel="webhook").count() == 1 and not AuditEvent.objects.filter(action="resent")


def test_the_report_form_chooses_destinations_and_the_audit_trail_says_so(staff_client, source):
    destination = webhook()

    staff_client.post(reverse("admin:reporting_report_add"), report_form(source, destinations=[destination.pk]))

    report = Report.objects.get(slug="collections")
    assert list(report.destinations.all()) == [destination]
    assert AuditEvent.objects.get(action="created").changes["destinations"] == ["", "Ledger"]


def test_a_report_that_sends_each_recipient_their_own_may_not_have_destinations(staff_client, source):
    form = report_form(
        source, destinations=[webhook().pk], audience="each", split_field="client", split_attribute="client_id"
    )

    page = staff_client.post(reverse("admin:reporting_report_add"), form)

    assert page.status_code == 200 and not Report.objects.exists()
    assert "cannot also post to Slack, Teams or a webhook" in page.content.decode()
