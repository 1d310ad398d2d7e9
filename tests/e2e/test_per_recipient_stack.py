"""Per-recipient reports on the production stack: real Celery workers and beat, PostgreSQL,
Redis, a real HTTP data source and a real SMTP server on loopback.

Each recipient gets their own email with their own rows, exactly once, also when a
recipient's fetch fails for good or a worker is killed while it sends.
"""

from __future__ import annotations

import csv
import io
import re
import signal
import time
from collections import Counter
from datetime import timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from reporting import runs
from reporting.models import Delivery, Recipient, Report, ReportRun, RunPart
from tests import factories
from tests.e2e.conftest import next_slot, wait_for

pytestmark = pytest.mark.e2e
NEW_YORK = ZoneInfo("America/New_York")
INTERRUPTED = "Interrupted while sending"
WORKERS = ("worker1", "worker2")


# --- the data source's answer -------------------------------------------------------------


def own_rows(client_id: str, count: int = 2) -> list[dict]:
    """The positions of one client: instruments named after them, values no other client has."""
    seed = sum(ord(char) for char in client_id)
    return [
        {"client_id": client_id, "instrument": f"Bond {client_id}-{index}", "market_value": seed * 10 + index}
        for index in range(1, count + 1)
    ]


# Rows that look like a recipient's but are nobody's: the split matches text exactly.
STRAY_ROWS = [
    {"client_id": "c001", "instrument": "Stray lower case", "market_value": 1},
    {"client_id": " C002", "instrument": "Stray leading space", "market_value": 2},
    {"client_id": "C003 ", "instrument": "Stray trailing space", "market_value": 3},
    {"client_id": "C004\n", "instrument": "Stray newline", "market_value": 4},
    {"client_id": None, "instrument": "Stray null key", "market_value": 5},
    {"instrument": "Stray without a key", "market_value": 6},
    {"client_id": 7, "instrument": "Stray number seven", "market_value": 7},
    {"client_id": "7", "instrument": "Stray text seven", "market_value": 8},
    {"client_id": 7.0, "instrument": "Stray fraction seven", "market_value": 9},
    {"client_id": ["C005"], "instrument": "Stray list", "market_value": 10},
]


# --- reports and their recipients ---------------------------------------------------------


def clients(client_ids: list[str]) -> list[Recipient]:
    return [
        Recipient.objects.create(
            email=f"{client_id.lower()}@clients.example.com",
            name=f"Client {client_id}",
            attributes={"client_id": client_id},
        )
        for client_id in client_ids
    ]


def statement(source, recipients: list[Recipient], **fields) -> Report:
    """A daily per-recipient report of the generic table template, for `recipients` (split by client_id)."""
    defaults = {
        "name": "Statement",
        "slug": "statement",
        "path": "book",
        "records_path": "positions",
        "timezone": "America/New_York",
        "template": "reports/table.html",  # a project template: the worker processes find it too
        "subject_template": "Statement {{ recipient.client_id }} — {{ period.label }}",
        "audience": Report.Audience.EACH,
        "per_recipient_data": Report.PerRecipientData.SPLIT,
        "split_field": "client_id",
        "split_attribute": "client_id",
    }
    report = factories.report(source, addresses=[], **{**defaults, **fields})
    report.recipients.set(recipients)
    return report


def schedule_at(report: Report, slot) -> None:
    local = slot.astimezone(NEW_YORK)
    factories.schedule(report, minute=str(local.minute), hour=str(local.hour))


def sweeps(**every_seconds: int) -> None:
    """Beat runs only these sweeps (task name in reporting.tasks → seconds), each first at once.

    The migration's sweeps run every minute or five, and a transactional test before this one
    may have flushed them away: each test says which it needs.
    """
    PeriodicTask.objects.filter(name__startswith="Reporting: ").delete()
    for task, seconds in every_seconds.items():
        interval, _created = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.create(
            name=f"e2e: {task}",
            task=f"reporting.tasks.{task}",
            interval=interval,
            last_run_at=timezone.now() - timedelta(minutes=2),
        )


def run_now(stack_env: dict[str, str], report: Report) -> ReportRun:
    """What "Run now" does (reporting.services.runs.run_now): a manual run, and execute_run published to the stack."""
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    publisher = Celery("e2e-publisher", broker=stack_env["CELERY_BROKER_URL"])
    publisher.conf.task_default_queue = stack_env["CELERY_TASK_DEFAULT_QUEUE"]
    try:
        publisher.send_task("reporting.tasks.execute_run", kwargs={"run_id": run.pk})
    finally:
        publisher.close()
    return run


def finished(report: Report, *, timeout: float) -> ReportRun:
    def ended():
        run = ReportRun.objects.filter(report=report).first()
        return run if run and run.status in ReportRun.FINISHED else None

    return wait_for(ended, timeout=timeout, what=f"the run of {report.slug} to end")


# --- what arrived -------------------------------------------------------------------------


def received(smtp) -> Counter:
    return Counter(address.lower() for message in smtp.messages for address in smtp.recipients_of(message))


def csv_rows(message: EmailMessage) -> list[dict]:
    [attachment] = [each for each in message.iter_attachments() if each.get_filename().endswith(".csv")]
    return list(csv.DictReader(io.StringIO(attachment.get_content().lstrip("\ufeff"))))


def assert_holds_only_their_rows(message: EmailMessage, client_id: str, rows: list[dict], every_instrument: set[str]):
    """The email's subject, CSV and HTML are of `client_id`'s `rows`, and name no other row of the answer."""
    assert message["Subject"].startswith(f"Statement {client_id} — ")
    attached = csv_rows(message)
    assert [row["client_id"] for row in attached] == [client_id] * len(rows)
    assert [(row["instrument"], row["market_value"]) for row in attached] == [
        (row["instrument"], str(row["market_value"])) for row in rows
    ]
    html = message.get_body(("html",)).get_content()
    mine = {row["instrument"] for row in rows}
    assert all(instrument in html for instrument in mine)
    leaked = [instrument for instrument in every_instrument - mine if instrument in html]
    assert not leaked, f"{client_id}'s email shows other rows: {leaked}"


# --- the tests ----------------------------------------------------------------------------


def test_a_scheduled_per_recipient_report_gives_each_client_their_own_rows_once(stack, httpserver, use_smtp):
    client_ids = [f"C{number:03d}" for number in range(1, 30)] + ["007"]
    rows_of = {client_id: own_rows(client_id, count=1 + len(client_id) % 3) for client_id in client_ids}
    rows_of["007"].append({"client_id": "007", "instrument": "Bond 007 text", "market_value": 70})
    answer = [row for rows in rows_of.values() for row in rows] + STRAY_ROWS
    answer = answer[::2] + answer[1::2]  # the clients' rows interleaved, as an API may return them
    rows_of = {client_id: [row for row in answer if row.get("client_id") == client_id] for client_id in client_ids}
    httpserver.expect_request("/api/book").respond_with_json({"total_aum": 123456789, "positions": answer})
    source = factories.data_source(httpserver.url_for("/api/"))
    people = clients(client_ids)
    report = statement(source, people)
    slot = next_slot(lead=25)
    schedule_at(report, slot)
    sweeps()
    env = {"REPORTING_PARTS_PER_TASK": "4"}  # 8 batches, for the two workers to share

    for name in WORKERS:
        stack.worker(name, env=env, concurrency=2)
    stack.beat(env=env)
    run = finished(report, timeout=(slot - timezone.now()).total_seconds() + 90)
    time.sleep(3)  # room for a duplicate to show up, were there one

    assert run.status == ReportRun.Status.SENT, run.error
    assert run.scheduled_for == slot and run.trigger == ReportRun.Trigger.SCHEDULE
    assert ReportRun.objects.filter(report=report).count() == 1
    assert "Recipient reports: 30 of 30 sent, 0 skipped with no rows, 0 held, 0 failed." in run.notes
    assert f"{len(STRAY_ROWS)} of {len(answer)} rows matched no recipient" in run.notes
    assert len(httpserver.log) == 1  # one fetch, split among them
    assert received(use_smtp) == Counter(person.email for person in people)
    every_instrument = {row["instrument"] for row in answer}
    for person in people:
        [message] = use_smtp.messages_to(person.email)
        client_id = person.attributes["client_id"]
        assert_holds_only_their_rows(message, client_id, rows_of[client_id], every_instrument)
        assert "123,456,789" not in message.get_body(("html",)).get_content()
    parts = list(run.parts.all())
    assert sorted(part.address for part in parts) == sorted(person.email for person in people)
    for part in parts:
        assert part.status == RunPart.Status.SENT, (part.address, part.error)
        [delivery] = part.deliveries.all()
        assert (delivery.kind, delivery.status, delivery.address) == (
            Delivery.Kind.ORIGINAL,
            Delivery.Status.SENT,
            part.address,
        )
    assert Delivery.objects.filter(run=run).count() == 30
    batches = {name: len(re.findall(r"work_on_parts\[[^]]+\] succeeded", stack.log(name))) for name in WORKERS}
    assert sum(batches.values()) == 8 and all(batches.values()), f"the batches were not shared: {batches}"


def test_a_recipient_whose_fetch_fails_for_good_is_named_and_the_owner_is_told(
    stack, stack_env, httpserver, use_smtp, django_user_model
):
    client_ids = ["C001", "C002", "C003", "C404", "C005", "C006"]
    for client_id in client_ids:
        expected = httpserver.expect_request(f"/api/clients/{client_id}/positions")
        if client_id == "C404":
            expected.respond_with_data("No such client", status=404)
        else:
            expected.respond_with_json({"client": client_id, "positions": own_rows(client_id)})
    owner = django_user_model.objects.create_user("olga", "olga@example.com", "pw")
    people = clients(client_ids)
    report = statement(
        factories.data_source(httpserver.url_for("/api/")),
        people,
        per_recipient_data=Report.PerRecipientData.FETCH,
        path="clients/{{ recipient.client_id }}/positions",
        owner=owner,
    )
    sweeps(send_failure_alerts=3)

    stack.worker("worker1", concurrency=2)
    stack.beat()
    run_now(stack_env, report)
    run = finished(report, timeout=90)

    assert run.status == ReportRun.Status.PARTIALLY_SENT
    assert run.error.startswith("1 of 6 recipients did not get their report: Client C404 <c404@clients.example.com>")
    assert "404" in run.error
    failed = run.parts.get(address="c404@clients.example.com")
    assert failed.status == RunPart.Status.FAILED and failed.attempts == 1  # not retried: it cannot help
    assert not failed.deliveries.exists()
    assert "Recipient reports: 5 of 6 sent, 0 skipped with no rows, 0 held, 1 failed." in run.notes
    asked = Counter(request.path for request, _response in httpserver.log)
    assert asked == Counter(f"/api/clients/{client_id}/positions" for client_id in client_ids)
    every_instrument = {row["instrument"] for client_id in client_ids for row in own_rows(client_id)}
    for person in people:
        client_id = person.attributes["client_id"]
        if client_id == "C404":
            assert not use_smtp.messages_to(person.email)
            continue
        [message] = use_smtp.messages_to(person.email)
        assert_holds_only_their_rows(message, client_id, own_rows(client_id), every_instrument)

    [alert] = wait_for(lambda: use_smtp.messages_to(owner.email), timeout=60, what="the owner's alert")
    assert alert["Subject"] == f"[Scheduled Reports] Statement was sent only in part: {run.period_label}"
    text = alert.get_body(("plain",)).get_content()
    assert "Client C404 <c404@clients.example.com>" in text and "404" in text
    assert received(use_smtp) == Counter(
        [*(p.email for p in people if p.attributes["client_id"] != "C404"), owner.email]
    )
    run.refresh_from_db()
    assert run.alerted_at is not None


def test_a_worker_killed_while_sending_recipient_reports_leaves_no_duplicate_and_no_stuck_run(
    stack, stack_env, httpserver, use_smtp
):
    client_ids = [f"K{number:04d}" for number in range(1, 201)]
    answer = [row for client_id in client_ids for row in own_rows(client_id, count=1)]
    httpserver.expect_request("/api/book").respond_with_json({"positions": answer})
    people = clients(client_ids)
    report = statement(factories.data_source(httpserver.url_for("/api/")), people)
    # The dead worker's messages stay unacknowledged in Redis for the production visibility timeout
    # (two hours; and kombu looks for expired ones only every ~100 s): what recovers its parts is
    # the deadline sweep. The waiting run's deadline moves on while its parts do; 15 s after the
    # last one moved, the sweep publishes the run again, and the run publishes its open parts.
    # By then the dead worker's part leases (8 s) have run out, so the rescuer takes them over.
    sweeps(enforce_run_deadlines=5)
    stack.env["REPORTING_RUN_QUEUE_DEADLINE_SECONDS"] = "15"
    use_smtp.delay = 0.1
    doomed_concurrency = 2  # batches of 25 in flight when it is killed

    stack.worker("doomed", concurrency=doomed_concurrency)
    stack.beat()
    run = run_now(stack_env, report)
    sent = Delivery.objects.filter(run=run, status=Delivery.Status.SENT)
    wait_for(lambda: sent.count() >= 5, timeout=60, what="the first emails to be sent")
    stack.kill("doomed", signal.SIGKILL)
    sent_before_kill = set(sent.values_list("address", flat=True))
    stack.worker("rescuer", concurrency=2)
    run = finished(report, timeout=120)
    time.sleep(3)  # room for a duplicate to show up, were there one

    got = received(use_smtp)
    assert max(got.values()) == 1, f"an address got a second copy: {[a for a, n in got.items() if n > 1]}"
    parts = {part.address: part for part in run.parts.prefetch_related("deliveries")}
    assert set(parts) == {person.email for person in people}
    assert Counter(part.status for part in parts.values()) <= Counter(
        {RunPart.Status.SENT: 200, RunPart.Status.FAILED: 200}
    ), "a part was left open"
    interrupted = {address for address, part in parts.items() if part.status == RunPart.Status.FAILED}
    assert all(INTERRUPTED in parts[address].error for address in interrupted)
    assert len(interrupted) <= doomed_concurrency, f"more parts interrupted than batches in flight: {interrupted}"
    for address, part in parts.items():
        [delivery] = part.deliveries.all()  # one original each, never a second attempt
        assert delivery.status == (Delivery.Status.FAILED if address in interrupted else Delivery.Status.SENT)
        if address not in interrupted:
            assert got[address] == 1, f"{address} is marked sent but got nothing"
    assert set(got) - interrupted == set(parts) - interrupted  # everyone else got theirs
    assert set(parts) - interrupted - sent_before_kill, "the rescuer should have sent the rest"
    every_instrument = {row["instrument"] for row in answer}
    for message in use_smtp.messages:
        [address] = use_smtp.recipients_of(message)
        client_id = parts[address].key
        assert_holds_only_their_rows(message, client_id, own_rows(client_id, count=1), every_instrument)
    assert not RunPart.objects.filter(status__in=RunPart.OPEN).exists()
    assert not Delivery.objects.filter(status__in=(Delivery.Status.QUEUED, Delivery.Status.SENDING)).exists()
    assert not ReportRun.objects.filter(status__in=ReportRun.WORKING).exists()
    assert "published again once" in run.notes
    if interrupted:
        assert run.status == ReportRun.Status.PARTIALLY_SENT
        assert f"{len(interrupted)} of 200 recipients did not get their report" in run.error
    else:
        assert run.status == ReportRun.Status.SENT
    print(f"sent before the kill: {len(sent_before_kill)}, interrupted: {sorted(interrupted)}, notes: {run.notes}")
