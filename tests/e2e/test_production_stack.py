"""The production stack with real processes: gunicorn, Celery workers and beat, PostgreSQL,
Redis and RabbitMQ, a real HTTP data source and a real SMTP server on loopback."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from collections import Counter
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import requests
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from reporting.models import Delivery, ReportRun
from tests import factories
from tests.e2e.conftest import RABBITMQ_URL, free_port, next_slot, wait_for

pytestmark = pytest.mark.e2e
NEW_YORK = ZoneInfo("America/New_York")
TEAM = ["ann@example.com", "bob@example.com", "cy@example.com", "dee@example.com"]
LATER_TEAM = ["eve@example.com", "fay@example.com"]


def report_due_at(source, slot, *, addresses=TEAM, **fields):
    """A daily report in New York time whose crontab fires at `slot`."""
    report = factories.report(source, addresses=addresses, timezone="America/New_York", **fields)
    local = slot.astimezone(NEW_YORK)
    factories.schedule(report, minute=str(local.minute), hour=str(local.hour))
    return report


def finished_run(report, slot, *, extra: float = 90):
    timeout = max(0.0, (slot - _now()).total_seconds()) + extra

    def finished():
        run = ReportRun.objects.filter(report=report).first()
        return run if run and run.status in ReportRun.FINISHED else None

    return wait_for(finished, timeout=timeout, what=f"the run due at {slot:%H:%M:%S}")


def _now():
    from django.utils import timezone

    return timezone.now()


def assert_each_address_got_exactly_one_report(smtp, addresses, period_label):
    received = Counter(address for message in smtp.messages for address in smtp.recipients_of(message))
    assert received == Counter(addresses)
    for message in smtp.messages:
        assert message["Subject"] == f"Portfolio — {period_label}"
        html = message.get_body(("html",)).get_content()
        assert "Globex 4.25% 2032" in html and "49,875.00" in html and "15,000.25" in html
        [attachment] = list(message.iter_attachments())
        assert "Initech ETF,10,987.65" in attachment.get_content()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_two_workers_and_one_beat_send_each_address_exactly_once(stack, stack_env, source, use_smtp, broker):
    env = {"CELERY_BROKER_URL": RABBITMQ_URL} if broker == "rabbitmq" else {}
    slot = next_slot(lead=25)
    report = report_due_at(source, slot)

    stack.worker("worker1", env=env, concurrency=2)
    stack.worker("worker2", env=env, concurrency=2)
    stack.beat(env=env)
    run = finished_run(report, slot)
    time.sleep(5)  # room for a duplicate to show up, were there one

    assert run.status == ReportRun.Status.SENT
    assert run.scheduled_for == slot
    assert ReportRun.objects.filter(report=report).count() == 1
    assert_each_address_got_exactly_one_report(use_smtp, TEAM, run.period_label)
    assert sorted(run.deliveries.values_list("address", flat=True)) == TEAM


def test_of_two_beats_one_leads_and_the_other_takes_over_when_it_is_killed(stack, source, use_smtp):
    first_slot = next_slot(lead=25)
    first = report_due_at(source, first_slot)
    sweep_every_minute()

    stack.worker("worker1", concurrency=2)
    stack.beat("beat1")
    stack.beat("beat2")
    leader, standby = wait_for(lambda: beat_roles(stack), timeout=30, what="one beat to lead, the other to stand by")
    first_run = finished_run(first, first_slot)
    time.sleep(5)  # room for a duplicate to show up, were there one

    assert first_run.status == ReportRun.Status.SENT
    assert_each_address_got_exactly_one_report(use_smtp, TEAM, first_run.period_label)
    assert "ReportScheduler: sent 1 due reports" in stack.log(leader)
    assert "Sending due task e2e: a sweep" in stack.log(leader)
    assert "ReportScheduler: sent" not in stack.log(standby)
    assert "Sending due task" not in stack.log(standby)

    later_slot = next_slot(lead=25)
    later = report_due_at(source, later_slot, addresses=LATER_TEAM, slug="portfolio-later")
    killed_at = time.monotonic()
    stack.kill(leader, signal.SIGKILL)
    wait_for(lambda: "beat: now leading" in stack.log(standby), timeout=60, what="the standby to take the lead")
    print(f"the standby led {time.monotonic() - killed_at:.1f} s after the leader was killed")
    later_run = finished_run(later, later_slot)
    time.sleep(5)

    assert later_run.status == ReportRun.Status.SENT
    assert later_run.scheduled_for == later_slot
    assert ReportRun.objects.filter(report__in=[first, later]).count() == 2
    received = Counter(address for message in use_smtp.messages for address in use_smtp.recipients_of(message))
    assert received == Counter(TEAM + LATER_TEAM)
    took_over = stack.log(standby).split("beat: now leading", 1)[1]
    assert "ReportScheduler: sent 1 due reports" in took_over
    assert "Sending due task e2e: a sweep" in took_over


def beat_roles(stack) -> tuple[str, str] | None:
    """(the leading beat, the one standing by), once both said which they are."""
    names = ("beat1", "beat2")
    leading = [name for name in names if "beat: now leading" in stack.log(name)]
    standing_by = [name for name in names if "beat: standing by, another beat leads" in stack.log(name)]
    if len(leading) + len(standing_by) < len(names):
        return None
    assert (len(leading), len(standing_by)) == (1, 1), f"leading: {leading}, standing by: {standing_by}"
    return leading[0], standing_by[0]


def sweep_every_minute() -> None:
    """A periodic task as the service's sweeps are (installed by a migration, which tests flush away); a no-op."""
    every_minute, _created = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(
        name="e2e: a sweep", task="celery.accumulate", interval=every_minute, last_run_at=_now() - timedelta(minutes=2)
    )


def test_a_worker_killed_mid_send_leaves_no_duplicate_and_no_stuck_run(stack, source, use_smtp):
    # A short visibility timeout, so that Redis hands the dead worker's message on soon.
    env = {"CELERY_VISIBILITY_TIMEOUT": "15"}
    addresses = [f"person{index}@example.com" for index in range(6)]
    use_smtp.delay = 1.5
    slot = next_slot(lead=25)
    report = report_due_at(source, slot, addresses=addresses)

    stack.worker("doomed", env=env)
    stack.beat(env=env)
    wait_for(
        lambda: Delivery.objects.filter(run__report=report, status=Delivery.Status.SENT).exists(),
        timeout=(slot - _now()).total_seconds() + 60,
        what="the first email to be sent",
    )
    stack.kill("doomed", signal.SIGKILL)
    sent_before_kill = set(
        Delivery.objects.filter(run__report=report, status=Delivery.Status.SENT).values_list("address", flat=True)
    )
    stack.worker("rescuer", env=env)
    run = finished_run(report, slot, extra=120)
    time.sleep(3)

    received = Counter(address for message in use_smtp.messages for address in use_smtp.recipients_of(message))
    assert max(received.values()) == 1, f"an address got a second copy: {received}"
    deliveries = {d.address: d for d in run.deliveries.all()}
    assert set(deliveries) == set(addresses)
    assert all(d.status in (Delivery.Status.SENT, Delivery.Status.FAILED) for d in deliveries.values())
    assert {a for a, d in deliveries.items() if d.status == Delivery.Status.SENT} <= set(received)
    sent_after_restart = {a for a, d in deliveries.items() if d.status == Delivery.Status.SENT} - sent_before_kill
    assert sent_after_restart, "the restarted worker should have sent the rest"
    interrupted = [d for d in deliveries.values() if d.status == Delivery.Status.FAILED]
    assert all("Interrupted while sending" in d.error for d in interrupted)
    assert not ReportRun.objects.filter(status__in=ReportRun.WORKING).exists()
    assert run.status in (ReportRun.Status.SENT, ReportRun.Status.PARTIALLY_SENT)


def test_the_report_goes_out_when_the_broker_restarts_before_its_time(stack, source, use_smtp, tmp_path):
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    broker = {"CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0"}
    redis_argv = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis_argv += ["--dir", str(tmp_path)]
    stack.start("redis", redis_argv, ready="Ready to accept connections")
    slot = next_slot(lead=40)
    report = report_due_at(source, slot)
    stack.worker("worker1", env=broker)
    stack.beat(env=broker)

    stack.kill("redis", signal.SIGKILL)  # the schedule is saved; the broker goes away …
    time.sleep(3)
    stack.start("redis", redis_argv, ready="Ready to accept connections")  # … and comes back before the slot
    assert _now() < slot, "the broker restart took too long for this test's slot"
    run = finished_run(report, slot, extra=120)

    assert run.status == ReportRun.Status.SENT
    assert_each_address_got_exactly_one_report(use_smtp, TEAM, run.period_label)


class AdminSession:
    """A staff user's browser session against the running gunicorn: login, CSRF and all."""

    def __init__(self, base_url: str, username: str, password: str):
        self.base_url = base_url
        self.http = requests.Session()
        self.http.get(self.url("/admin/login/"), timeout=10)
        response = self.post(
            "/admin/login/?next=/admin/", {"username": username, "password": password, "next": "/admin/"}
        )
        assert "Log out" in response.text or "logout" in response.text, "could not log in to the admin"

    def url(self, path: str) -> str:
        return self.base_url + path

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.url(path), timeout=30)

    def post(self, path: str, data: dict) -> requests.Response:
        data = {**data, "csrfmiddlewaretoken": self.http.cookies["csrftoken"]}
        return self.http.post(self.url(path), data=data, timeout=60)


@pytest.fixture
def admin_session(stack, django_user_model):
    django_user_model.objects.create_superuser("staff", "staff@example.com", "correct horse")
    port = free_port()
    stack.web(port)
    return AdminSession(f"http://127.0.0.1:{port}", "staff", "correct horse")


def test_a_schedule_edited_in_the_admin_fires_at_its_new_time_without_restarting_beat(
    stack, admin_session, source, use_smtp
):
    slot = next_slot(lead=40)
    report = report_due_at(source, slot.replace(hour=(slot.hour + 3) % 24))
    stack.worker("worker1")
    stack.beat()
    time.sleep(3)  # beat has loaded the old schedule

    local = slot.astimezone(NEW_YORK)
    response = admin_session.post(f"/admin/reporting/report/{report.pk}/change/", report_change_form(report, local))
    assert response.status_code == 200 and "was changed successfully" in response.text
    report.refresh_from_db()
    assert report.periodic_task.crontab.hour == str(local.hour)
    run = finished_run(report, slot)

    assert run.scheduled_for == slot
    assert_each_address_got_exactly_one_report(use_smtp, TEAM, run.period_label)


def report_change_form(report, local_slot) -> dict:
    crontab = report.periodic_task.crontab
    return {
        "name": report.name,
        "slug": report.slug,
        "description": report.description,
        "owner": str(factories.owner().pk),  # an enabled report needs someone to alert
        "enabled": "on",
        "data_source": str(report.data_source_id),
        "path": report.path,
        "query_params": json.dumps(report.query_params),
        "records_path": report.records_path,
        "period_kind": report.period_kind,
        "timezone": report.timezone,
        "schedule_enabled": "on",
        "minute": str(local_slot.minute),
        "hour": str(local_slot.hour),
        "day_of_month": crontab.day_of_month,
        "month_of_year": crontab.month_of_year,
        "day_of_week": crontab.day_of_week,
        "template": report.template,
        "subject_template": report.subject_template,
        "attach_csv": "on",
        "email_max_rows": "100",
        "charts": "[]",
        "catch_up_hours": "24",
        "audience": "everyone",
        "per_recipient_data": "split",
        "when_no_rows": "skip",
        "check_min_rows": "1",
        "recipient_addresses": "\n".join(report.recipients.values_list("email", flat=True)),
        "_save": "Save",
    }


class FakePostmark:
    """Postmark's send API (POST /email) on loopback: records requests, answers like Postmark."""

    TOKEN = "server-token-for-tests"

    def __init__(self):
        self.server = HTTPServer(host="127.0.0.1", port=free_port())
        self.requests: list[dict] = []
        self.server.expect_request("/email", method="POST").respond_with_handler(self.handle)
        self.server.start()

    def handle(self, request: Request) -> Response:
        if request.headers.get("X-Postmark-Server-Token") != self.TOKEN:
            return Response(json.dumps({"ErrorCode": 10, "Message": "Bad or missing API token"}), status=401)
        payload = request.get_json()
        message_id = f"pm-{len(self.requests) + 1:04d}-b7bc2f4a"
        self.requests.append({"payload": payload, "message_id": message_id})
        body = {
            "To": payload["To"],
            "SubmittedAt": "2026-11-23T10:00:00Z",
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK",
        }
        return Response(json.dumps(body), status=200, content_type="application/json")


@pytest.fixture
def postmark():
    fake = FakePostmark()
    yield fake
    fake.server.clear()
    if fake.server.is_running():
        fake.server.stop()


def test_an_esp_through_anymail_gets_each_email_and_its_webhooks_update_the_archive(
    stack, stack_env, source, postmark, django_user_model
):
    esp = {
        "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
        "ANYMAIL_POSTMARK_SERVER_TOKEN": FakePostmark.TOKEN,
        "ANYMAIL_POSTMARK_API_URL": f"http://127.0.0.1:{postmark.server.port}/",
        "ANYMAIL_WEBHOOK_SECRET": "hook:s3cret-for-webhooks",
    }
    stack.env.update(esp)
    django_user_model.objects.create_superuser("staff", "staff@example.com", "correct horse")
    port = free_port()
    stack.web(port)
    stack.worker("worker1")
    report = factories.report(source, addresses=["ann@example.com", "bob@example.com"])
    admin = AdminSession(f"http://127.0.0.1:{port}", "staff", "correct horse")

    admin.post("/admin/reporting/report/", {"action": "run_now", "_selected_action": str(report.pk), "confirm": "yes"})
    run = wait_for(
        lambda: ReportRun.objects.filter(report=report, status__in=ReportRun.FINISHED).first(),
        timeout=60,
        what="the run through the ESP",
    )

    assert run.status == ReportRun.Status.SENT
    sent = {r["payload"]["To"]: r for r in postmark.requests}
    assert set(sent) == {"ann@example.com", "bob@example.com"}
    for address, request in sent.items():
        assert request["payload"]["Subject"] == run.subject
        [attachment] = request["payload"]["Attachments"]
        assert attachment["Name"] == f"portfolio_{run.period_start}.csv"
        assert "Globex 4.25% 2032" in request["payload"]["HtmlBody"]
        delivery = run.deliveries.get(address=address)
        assert (delivery.message_id, delivery.esp_status) == (request["message_id"], "sent")

    webhook = f"http://127.0.0.1:{port}/anymail/postmark/tracking/"
    ann, bob = run.deliveries.get(address="ann@example.com"), run.deliveries.get(address="bob@example.com")
    delivered = {
        "RecordType": "Delivery",
        "MessageID": ann.message_id,
        "Recipient": ann.address,
        "DeliveredAt": "2026-11-23T10:00:05Z",
        "Details": "250 OK",
    }
    bounced = {
        "RecordType": "Bounce",
        "ID": 42,
        "Type": "HardBounce",
        "MessageID": bob.message_id,
        "Email": bob.address,
        "BouncedAt": "2026-11-23T10:00:06Z",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
    }
    refused = requests.post(webhook, json=delivered, timeout=10)
    assert refused.status_code in (400, 401, 403)
    assert run.deliveries.get(pk=ann.pk).status == Delivery.Status.SENT

    for event in (delivered, bounced):
        response = requests.post(webhook, json=event, auth=("hook", "s3cret-for-webhooks"), timeout=10)
        assert response.status_code == 200

    ann.refresh_from_db()
    bob.refresh_from_db()
    assert ann.status == Delivery.Status.DELIVERED
    assert bob.status == Delivery.Status.BOUNCED and "unable to deliver" in bob.error
    page = admin.get(f"/admin/reporting/reportrun/{run.pk}/change/").text
    assert re.search(r"Bounced", page) and "Delivered" in page


def test_the_web_server_serves_the_admin_with_production_settings(stack, admin_session):
    response = admin_session.get("/admin/reporting/reportrun/")
    static = re.search(r'href="(/static/admin/css/base[^"]*\.css)"', response.text)

    assert response.status_code == 200 and "Select report run" in response.text
    assert static and admin_session.get(static.group(1)).status_code == 200


def test_healthz_sees_the_database_the_broker_beat_and_the_workers(stack, admin_session):
    from reporting.models import Heartbeat

    stack.worker("worker1")
    stack.beat()
    wait_for(
        lambda: {"beat", "worker"} <= {name.split(":")[0] for name in Heartbeat.objects.values_list("name", flat=True)},
        timeout=60,
        what="beat and the worker to write their heartbeats",
    )

    response = requests.get(admin_session.url("/healthz"), timeout=30)  # no login needed

    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok", body
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"] == {"ok": True, "transport": "redis"}
    assert body["checks"]["beat"]["age_seconds"] < 60
    assert [worker["name"].startswith("worker:") for worker in body["checks"]["workers"]] == [True]
