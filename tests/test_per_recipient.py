"""Per-recipient reports: each recipient gets their own rows and figures, exactly once, and nobody else's."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils import timezone

from reporting import parts, runs
from reporting.models import Delivery, Recipient, Report, ReportRun, RunPart
from reporting.services import runs as services_runs
from tests import factories
from tests.conftest import add_templates

pytestmark = pytest.mark.django_db
Status = ReportRun.Status

CLIENTS = {
    "C001": ("Alice Archer", "alice@example.com"),
    "C002": ("Bob Baker", "bob@example.com"),
    "C003": ("Cleo Cole", "cleo@example.com"),
}
ROWS = [
    {"client_id": "C001", "instrument": "Acme Corp", "market_value": 1000.5},
    {"client_id": "C001", "instrument": "Globex", "market_value": 250},
    {"client_id": "C002", "instrument": "Initech", "market_value": 777},
    {"client_id": "C003", "instrument": "Umbrella", "market_value": 31},
]


def clients(**extra_attributes) -> list[Recipient]:
    people = []
    for client_id, (name, email) in CLIENTS.items():
        attributes = {"client_id": client_id, **extra_attributes.get(client_id, {})}
        people.append(Recipient.objects.create(email=email, name=name, attributes=attributes))
    return people


def split_report(source, template, **fields) -> Report:
    defaults = {
        "slug": "statement",
        "name": "Statement",
        "path": "positions",
        "records_path": "positions",
        "subject_template": "Statement {{ recipient.client_id }} — {{ period.label }}",
        "audience": Report.Audience.EACH,
        "per_recipient_data": Report.PerRecipientData.SPLIT,
        "split_field": "client_id",
        "split_attribute": "client_id",
    }
    report = factories.report(source, addresses=[], template=template, **{**defaults, **fields})
    report.recipient_lists.add(factories.recipient_list("Clients", []))
    report.recipient_lists.get().recipients.set(clients())
    return report


def run_everything(report, day=date(2026, 11, 20)) -> ReportRun:
    """Run now, then work on its parts as the workers would (two batches)."""
    run = runs.create_manual_run(report_id=report.pk, period_day=day, requested_by_id=None)
    runs.execute_run(run_id=run.pk)
    ids = parts.open_part_ids(run.pk)
    for batch in (ids[:2], ids[2:]):
        runs.execute_parts(run_id=run.pk, part_ids=batch)
    run.refresh_from_db()
    return run


def received_by(smtp, address):
    [message] = smtp.messages_to(address)
    return message


def csv_rows(message):
    [attachment] = [each for each in message.iter_attachments() if each.get_filename().endswith(".csv")]
    return attachment.get_filename(), list(csv.DictReader(io.StringIO(attachment.get_content().lstrip("\ufeff"))))


def test_it_sends_each_client_their_own_rows_and_totals_once(httpserver, use_smtp, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"total_aum": 2058.5, "positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)

    run = run_everything(report)

    assert run.status == Status.SENT, run.error
    assert "Recipient reports: 3 of 3 sent" in run.notes
    assert len(httpserver.log) == 1  # one fetch, split
    assert sorted(address for message in use_smtp.messages for address in use_smtp.recipients_of(message)) == [
        "alice@example.com",
        "bob@example.com",
        "cleo@example.com",
    ]
    alice = received_by(use_smtp, "alice@example.com")
    assert alice["Subject"] == "Statement C001 — 20 November 2026"
    html = alice.get_body(("html",)).get_content()
    assert "Dear Alice Archer (C001)" in html and "Total 1250.5 over 2 positions" in html
    assert "Initech" not in html and "Umbrella" not in html and "2058" not in html
    filename, rows = csv_rows(alice)
    assert filename == "statement_2026-11-20_C001.csv"
    assert [row["instrument"] for row in rows] == ["Acme Corp", "Globex"]
    bob_html = received_by(use_smtp, "bob@example.com").get_body(("html",)).get_content()
    assert "Total 777 over 1 positions" in bob_html and "Acme" not in bob_html
    archived = {part.key: part for part in run.parts.all()}
    assert {key: part.status for key, part in archived.items()} == dict.fromkeys(CLIENTS, RunPart.Status.SENT)
    assert archived["C002"].data == {"positions": [ROWS[2]]}
    assert archived["C001"].deliveries.get().address == "alice@example.com"
    assert Delivery.objects.filter(run=run).count() == 3


def test_it_fetches_for_each_recipient_with_their_attributes_in_the_path(httpserver, use_smtp, statement_template):
    for client_id in CLIENTS:
        own = [row for row in ROWS if row["client_id"] == client_id]
        httpserver.expect_request(f"/api/clients/{client_id}/positions").respond_with_json({"positions": own})
    report = split_report(
        factories.data_source(httpserver.url_for("/api/")),
        statement_template,
        per_recipient_data=Report.PerRecipientData.FETCH,
        path="clients/{{ recipient.client_id }}/positions",
        query_params={"currency": "{{ recipient.currency }}"},
    )
    Recipient.objects.filter(email="alice@example.com").update(attributes={"client_id": "C001", "currency": "E&R"})
    Recipient.objects.exclude(email="alice@example.com").update(attributes={"client_id": "C002", "currency": "GBP"})

    run = run_everything(report)

    assert run.status == Status.SENT, run.error
    asked = sorted((request.path, request.args["currency"]) for request, _response in httpserver.log)
    assert asked == [
        ("/api/clients/C001/positions", "E&R"),
        ("/api/clients/C002/positions", "GBP"),
        ("/api/clients/C002/positions", "GBP"),
    ]
    assert "Total 1250.5" in received_by(use_smtp, "alice@example.com").get_body(("html",)).get_content()


@pytest.mark.parametrize(
    "client_id, refused",
    [
        ("../admin", "cannot be used in the path"),
        ("..", "cannot be used in the path"),
        ("C001/../C002", "cannot be used in the path"),
        ("C001\\..\\C002", "cannot be used in the path"),
        ("", "with an empty segment"),
    ],
)
def test_an_attribute_cannot_lead_the_fetch_elsewhere(httpserver, use_smtp, statement_template, client_id, refused):
    httpserver.expect_request("/api/clients/C002/positions").respond_with_json({"positions": [ROWS[2]]})
    report = split_report(
        factories.data_source(httpserver.url_for("/api/")),
        statement_template,
        per_recipient_data=Report.PerRecipientData.FETCH,
        path="clients/{{ recipient.client_id }}/positions",
    )
    Recipient.objects.filter(email="alice@example.com").update(attributes={"client_id": client_id})
    Recipient.objects.filter(email="cleo@example.com").update(active=False)

    run = run_everything(report)

    alice = run.parts.get(address="alice@example.com")
    assert alice.status == RunPart.Status.FAILED
    assert refused in alice.error
    assert not use_smtp.messages_to("alice@example.com")
    assert all(request.path == "/api/clients/C002/positions" for request, _ in httpserver.log)
    assert run.status == Status.PARTIALLY_SENT
    assert "alice@example.com" in run.error


def test_an_attribute_value_stays_inside_its_path_segment(httpserver, use_smtp, statement_template):
    httpserver.expect_request("/api/clients/A&B?x=1#f %2F/positions").respond_with_json({"positions": []})
    report = split_report(
        factories.data_source(httpserver.url_for("/api/")),
        statement_template,
        per_recipient_data=Report.PerRecipientData.FETCH,
        path="clients/{{ recipient.client_id }}/positions",
        when_no_rows=Report.WhenNoRows.SEND_EMPTY,
    )
    Recipient.objects.exclude(email="alice@example.com").update(active=False)
    Recipient.objects.filter(email="alice@example.com").update(attributes={"client_id": "A&B?x=1#f %2F"})

    run = run_everything(report)

    [(request, _response)] = httpserver.log
    assert request.environ["RAW_URI"] == "/api/clients/A%26B%3Fx%3D1%23f%20%252F/positions"
    assert run.status == Status.SENT


HOSTILE_ROWS = [
    {"client_id": "C001", "instrument": "Mine"},
    {"client_id": "c001", "instrument": "Lower case"},
    {"client_id": " C001", "instrument": "Leading space"},
    {"client_id": "C001 ", "instrument": "Trailing space"},
    {"client_id": None, "instrument": "Null key"},
    {"instrument": "No key"},
    {"client_id": ["C001", "C002"], "instrument": "Two keys"},
    {"client_id": {"id": "C001"}, "instrument": "Object key"},
    {"client_id": 7, "instrument": "Number seven"},
    {"client_id": "007", "instrument": "Text 007"},
    {"client_id": 7.0, "instrument": "Fraction seven"},
    {"client_id": True, "instrument": "Boolean"},
    "a bare string row",
]


def test_hostile_rows_reach_only_the_recipient_they_match_exactly(httpserver, use_smtp, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": HOSTILE_ROWS})
    report = split_report(
        factories.data_source(httpserver.url_for("/api/")),
        statement_template,
        when_no_rows=Report.WhenNoRows.SEND_EMPTY,
        check_min_rows=0,
    )
    Recipient.objects.filter(email="bob@example.com").update(attributes={"client_id": "7"})
    Recipient.objects.filter(email="cleo@example.com").update(attributes={"client_id": "007"})

    run = run_everything(report)

    assert run.status == Status.SENT, run.error
    got = {
        address: [row["instrument"] for row in csv_rows(received_by(use_smtp, address))[1]]
        for address in CLIENTS_EMAILS
    }
    assert got == {
        "alice@example.com": ["Mine"],
        "bob@example.com": ["Number seven"],
        "cleo@example.com": ["Text 007"],
    }
    assert "10 of 13 rows matched no recipient" in run.notes


CLIENTS_EMAILS = [email for _name, email in CLIENTS.values()]


def test_two_contacts_of_one_client_both_get_that_clients_rows(httpserver, use_smtp, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    Recipient.objects.filter(email="cleo@example.com").update(attributes={"client_id": "C001"})

    run_everything(report)

    for address in ("alice@example.com", "cleo@example.com"):
        assert [row["instrument"] for row in csv_rows(received_by(use_smtp, address))[1]] == ["Acme Corp", "Globex"]


@pytest.mark.parametrize(
    "when, part_status, run_status",
    [
        (Report.WhenNoRows.SKIP, RunPart.Status.SKIPPED, Status.SENT),
        (Report.WhenNoRows.HOLD, RunPart.Status.HELD, Status.PARTIALLY_SENT),
        (Report.WhenNoRows.SEND_EMPTY, RunPart.Status.SENT, Status.SENT),
    ],
)
def test_a_recipient_with_no_rows_gets_what_the_report_says(
    httpserver, use_smtp, statement_template, when, part_status, run_status
):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS[:3]})  # nothing for C003
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template, when_no_rows=when)

    run = run_everything(report)

    cleo = run.parts.get(key="C003")
    assert cleo.status == part_status
    assert run.status == run_status
    assert len(use_smtp.messages_to("cleo@example.com")) == (1 if when == Report.WhenNoRows.SEND_EMPTY else 0)
    assert len(use_smtp.messages_to("alice@example.com")) == 1
    if when == Report.WhenNoRows.HOLD:
        assert "Cleo Cole <cleo@example.com> (C003)" in run.error


class KeepAliveSource(BaseHTTPRequestHandler):
    """An HTTP/1.1 source that keeps connections open, notes each request's connection and
    cookies, and gives every caller a cookie naming the client it asked for."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[tuple, str, str]] = []

    def do_GET(self):
        client_id = self.path.split("/")[3]
        KeepAliveSource.seen.append((self.client_address, client_id, self.headers.get("Cookie", "")))
        body = json.dumps({"positions": [row for row in ROWS if row["client_id"] == client_id]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", f"client={client_id}; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_batchs_fetches_share_a_connection_and_carry_nothing_from_one_recipient_to_the_next(
    use_smtp, statement_template
):
    KeepAliveSource.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAliveSource)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = split_report(
            factories.data_source(f"http://127.0.0.1:{server.server_port}/api/"),
            statement_template,
            per_recipient_data=Report.PerRecipientData.FETCH,
            path="clients/{{ recipient.client_id }}/positions",
        )
        run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
        runs.execute_run(run_id=run.pk)
        runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))  # one batch
    finally:
        server.shutdown()
        server.server_close()

    run.refresh_from_db()
    assert run.status == Status.SENT, run.error
    assert sorted(client_id for _connection, client_id, _cookie in KeepAliveSource.seen) == ["C001", "C002", "C003"]
    assert len({connection for connection, _client_id, _cookie in KeepAliveSource.seen}) == 1
    assert [cookie for _connection, _client_id, cookie in KeepAliveSource.seen] == ["", "", ""]
    assert "Umbrella" in received_by(use_smtp, "cleo@example.com").get_body(("html",)).get_content()
    assert "Acme" not in received_by(use_smtp, "cleo@example.com").get_body(("html",)).get_content()


def test_one_recipients_failed_fetch_does_not_stop_the_others(httpserver, use_smtp, statement_template, settings):
    settings.REPORTING = {**settings.REPORTING, "FETCH_MAX_RETRIES": 0}
    httpserver.expect_request("/api/clients/C001/positions").respond_with_json({"positions": ROWS[:2]})
    httpserver.expect_request("/api/clients/C002/positions").respond_with_data("nope", status=500)
    httpserver.expect_request("/api/clients/C003/positions").respond_with_json({"positions": ROWS[3:]})
    report = split_report(
        factories.data_source(httpserver.url_for("/api/")),
        statement_template,
        per_recipient_data=Report.PerRecipientData.FETCH,
        path="clients/{{ recipient.client_id }}/positions",
    )

    run = run_everything(report)

    assert run.status == Status.PARTIALLY_SENT
    assert "1 of 3 recipients did not get their report: Bob Baker <bob@example.com>" in run.error
    assert "500" in run.parts.get(address="bob@example.com").error
    assert run.parts.get(address="bob@example.com").request_url == httpserver.url_for("/api/clients/C002/positions")
    assert {m for address in ("alice@example.com", "cleo@example.com") for m in use_smtp.messages_to(address)}


def test_a_transient_failure_waits_to_retry_and_the_run_waits_for_it(httpserver, use_smtp, statement_template):
    httpserver.expect_oneshot_request("/api/clients/C002/positions").respond_with_data("busy", status=503)
    for client_id in CLIENTS:
        own = [row for row in ROWS if row["client_id"] == client_id]
        httpserver.expect_request(f"/api/clients/{client_id}/positions").respond_with_json({"positions": own})
    report = split_report(
        factories.data_source(httpserver.url_for("/api/")),
        statement_template,
        per_recipient_data=Report.PerRecipientData.FETCH,
        path="clients/{{ recipient.client_id }}/positions",
    )
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    runs.execute_run(run_id=run.pk)

    retries = runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))

    bob = run.parts.get(address="bob@example.com")
    assert [part_id for part_id, _delay in retries] == [bob.pk]
    assert bob.status == RunPart.Status.PENDING and bob.error.startswith("Will retry")
    run.refresh_from_db()
    assert run.status == Status.SENDING and run.deadline_at is not None
    RunPart.objects.filter(pk=bob.pk).update(not_before=None)
    runs.execute_parts(run_id=run.pk, part_ids=[bob.pk])
    run.refresh_from_db()
    assert run.status == Status.SENT
    assert len(use_smtp.messages_to("bob@example.com")) == 1


def test_a_part_interrupted_while_sending_is_not_sent_again(httpserver, use_smtp, statement_template, settings):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    runs.execute_run(run_id=run.pk)
    alice = run.parts.get(address="alice@example.com")
    # A worker took Alice's part, wrote her delivery and died while sending it.
    RunPart.objects.filter(pk=alice.pk).update(
        status=RunPart.Status.WORKING, lease_expires_at=run.created_at, attempts=1, rendered_at=run.created_at
    )
    Delivery.objects.create(run=run, part=alice, address=alice.address, status=Delivery.Status.SENDING)

    runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))
    runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))  # the message delivered again

    run.refresh_from_db()
    assert not use_smtp.messages_to("alice@example.com")
    assert len(use_smtp.messages_to("bob@example.com")) == 1
    alice.refresh_from_db()
    assert alice.status == RunPart.Status.FAILED and "Interrupted while sending" in alice.error
    assert run.status == Status.PARTIALLY_SENT


def test_a_part_held_by_a_dead_worker_is_taken_again_when_its_lease_runs_out(httpserver, use_smtp, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    runs.execute_run(run_id=run.pk)
    alice = run.parts.get(address="alice@example.com")
    # A pool process took Alice's part and was killed while rendering it; its batch came back at once.
    lease = timezone.now() + timedelta(seconds=60)
    RunPart.objects.filter(pk=alice.pk).update(status=RunPart.Status.WORKING, lease_expires_at=lease, attempts=1)

    retries = runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))

    [(part_id, delay)] = retries  # published again for when the lease runs out: no other message carries it
    assert part_id == alice.pk and 55 <= delay <= 62
    run.refresh_from_db()
    assert run.status == Status.SENDING and run.deadline_at > lease
    assert not use_smtp.messages_to("alice@example.com")
    RunPart.objects.filter(pk=alice.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert runs.execute_parts(run_id=run.pk, part_ids=[alice.pk]) == []
    run.refresh_from_db()
    assert run.status == Status.SENT
    assert len(use_smtp.messages_to("alice@example.com")) == 1


def test_a_scheduled_period_has_one_part_per_recipient_whatever_fires_twice(httpserver, statement_template):
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    factories.schedule(report, minute="0", hour="7")
    first, created = runs.open_scheduled_run(report_id=report.pk)
    again, created_again = runs.open_scheduled_run(report_id=report.pk)
    assert created and not created_again and again.pk == first.pk
    assert RunPart.objects.filter(run__report=report).count() == 3


def test_a_recipient_without_the_attribute_fails_in_words_and_the_others_go(httpserver, use_smtp, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    Recipient.objects.filter(email="cleo@example.com").update(attributes={"region": "EU"})

    run = run_everything(report)

    cleo = run.parts.get(address="cleo@example.com")
    assert cleo.status == RunPart.Status.FAILED
    assert cleo.error == "cleo@example.com has no 'client_id' attribute, so no rows could be theirs: nothing was sent."
    assert run.status == Status.PARTIALLY_SENT
    assert not use_smtp.messages_to("cleo@example.com")


def test_a_template_cannot_see_the_rest_of_the_answer(httpserver, use_smtp, settings, tmp_path):
    add_templates(settings, tmp_path / "leaky", {"reports/leaky.html": "AUM {{ data.total_aum }}"})
    httpserver.expect_request("/api/positions").respond_with_json({"total_aum": 2058.5, "positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), "reports/leaky.html")

    run = run_everything(report)

    assert run.status == Status.FAILED
    assert "refers to 'data.total_aum'" in run.error
    assert not use_smtp.messages


def test_a_test_send_sends_one_chosen_recipients_report_to_the_tester(httpserver, use_smtp, statement_template, staff):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    bob = Recipient.objects.get(email="bob@example.com")

    [run] = services_runs.send_test(report_ids=[report.pk], period_day=None, actor=staff, for_recipient_id=bob.pk)
    runs.execute_run(run_id=run.pk)
    runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))

    [message] = use_smtp.messages
    assert use_smtp.recipients_of(message) == [staff.email]
    assert message["Subject"].startswith("[Test] Statement C002 — ")
    assert "Total 777 over 1 positions" in message.get_body(("html",)).get_content()
    [part] = run.parts.all()
    assert (part.address, part.recipient_email, part.key) == (staff.email, "bob@example.com", "C002")


def test_a_per_recipient_report_must_say_how_rows_are_matched(httpserver):
    report = factories.report(factories.data_source(httpserver.url_for("/api/")), audience=Report.Audience.EACH)
    with pytest.raises(ValidationError) as refused:
        report.full_clean()
    assert "split_field" in refused.value.message_dict


def test_file_retention_removes_each_recipients_data_and_files_but_keeps_their_email(
    httpserver, use_smtp, statement_template, django_capture_on_commit_callbacks
):
    from datetime import timedelta
    from pathlib import Path

    from django.conf import settings as django_settings
    from django.utils import timezone

    from reporting import retention

    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = run_everything(report)
    ReportRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(days=91))
    files = [Path(django_settings.MEDIA_ROOT) / each.file.name for each in run.attachments.all()]
    assert len(files) == 3 and all(path.exists() for path in files)

    with django_capture_on_commit_callbacks(execute=True):
        assert retention.prune_archive().runs_stripped == 1

    assert not any(path.exists() for path in files)
    alice = run.parts.get(address="alice@example.com")
    assert alice.data is None and "Dear Alice Archer" in alice.body_html
    with pytest.raises(ValidationError, match="removed by the retention"):
        from reporting.services import archive as services_archive

        services_archive.plan_part_resend(part_id=alice.pk, addresses=None)
    with django_capture_on_commit_callbacks(execute=True):
        assert retention.prune_archive().runs_stripped == 0  # nothing left to strip


def test_parts_whose_messages_were_lost_are_sent_once_after_the_deadline_sweep(
    httpserver, use_smtp, statement_template, eager_celery, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from reporting.services import deadlines

    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    runs.execute_run(run_id=run.pk)  # fanned out; the batches' messages are lost (never published)
    runs.execute_parts(run_id=run.pk, part_ids=[run.parts.get(key="C001").pk])  # one batch got through
    assert len(use_smtp.messages) == 1

    with django_capture_on_commit_callbacks(execute=True):
        result = deadlines.enforce_run_deadlines(now=timezone.now() + timedelta(hours=1))

    run.refresh_from_db()
    assert result.published_again == [run.pk]
    assert run.status == Status.SENT, run.error
    assert sorted(address for message in use_smtp.messages for address in use_smtp.recipients_of(message)) == sorted(
        CLIENTS_EMAILS
    )
    assert len(httpserver.log) == 1  # the rows were split once; nothing fetched again


def test_a_run_whose_parts_never_end_fails_at_its_second_deadline_and_closes_them(
    httpserver, use_smtp, statement_template
):
    from datetime import timedelta

    from django.utils import timezone

    from reporting.services import deadlines

    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    runs.execute_run(run_id=run.pk)
    runs.execute_parts(run_id=run.pk, part_ids=[run.parts.get(key="C001").pk])
    later = timezone.now() + timedelta(hours=1)

    deadlines.enforce_run_deadlines(now=later)  # published again: that message is lost too
    runs.execute_run(run_id=run.pk)  # …or a worker took the run, and its parts' messages were lost
    deadlines.enforce_run_deadlines(now=later + timedelta(hours=1))

    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert "1 of 3 recipients got their report" in run.error
    assert "recipients' reports stopped moving" in run.error
    assert {part.key: part.status for part in run.parts.all()} == {
        "C001": RunPart.Status.SENT,
        "C002": RunPart.Status.FAILED,
        "C003": RunPart.Status.FAILED,
    }
    assert run.parts.get(key="C002").error == "Not sent: the run failed at its deadline."
    assert runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk)) == []
    assert len(use_smtp.messages) == 1


@pytest.mark.parametrize(
    "path, audience, refused",
    [
        ("recipients/{{ period.start|date:'Y-m-d' }}", Report.Audience.EVERYONE, False),
        ("clients/{{ recipient.client_id }}", Report.Audience.EVERYONE, True),
        ("clients/{{recipient.client_id}}", Report.Audience.EACH, False),
        ("clients/all", Report.Audience.EACH, True),
    ],
)
def test_the_path_uses_the_recipient_when_and_only_when_each_fetch_is_theirs(httpserver, path, audience, refused):
    report = factories.report(
        factories.data_source(httpserver.url_for("/api/")),
        path=path,
        audience=audience,
        per_recipient_data=Report.PerRecipientData.FETCH,
    )
    if refused:
        with pytest.raises(ValidationError):
            report.full_clean()
    else:
        report.full_clean()


def test_a_run_whose_every_recipient_failed_at_planning_ends_when_it_is_worked_on(httpserver, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    Recipient.objects.update(attributes={"region": "EU"})  # nobody has the client_id their rows match on
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)

    services_runs.work_on_run(run_id=run.pk)  # as the worker does: no part is left to publish

    run.refresh_from_db()
    assert run.status == Status.FAILED and run.deadline_at is None
    assert run.error.startswith("3 of 3 recipients did not get their report: ")
    assert "has no 'client_id' attribute" in run.error


def test_a_part_being_fetched_is_not_taken_by_another_worker_while_its_fetch_may_last(
    httpserver, use_smtp, statement_template, settings, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from reporting.pipeline import fetch

    seen = []
    download = fetch.download_for_archive

    def download_and_look(request, body, session=None):
        part = RunPart.objects.get(address="alice@example.com")
        seen.append((part.lease_expires_at - timezone.now(), parts.claim(part.pk, part.run_id)))
        return download(request, body, session=session)

    monkeypatch.setattr(fetch, "download_for_archive", download_and_look)
    httpserver.expect_request("/api/clients/C001/positions").respond_with_json({"positions": []})
    report = split_report(
        factories.data_source(httpserver.url_for("/api/")),
        statement_template,
        per_recipient_data=Report.PerRecipientData.FETCH,
        path="clients/{{ recipient.client_id }}/positions",
    )
    Recipient.objects.exclude(email="alice@example.com").update(active=False)

    run_everything(report)

    [(lease, taken_meanwhile)] = seen
    assert lease > timedelta(seconds=settings.REPORTING["FETCH_TOTAL_SECONDS"])
    assert taken_meanwhile is None  # another worker's duplicate message meanwhile takes nothing
    assert RunPart.objects.get(address="alice@example.com").status == RunPart.Status.SKIPPED


def test_a_batchs_parts_ready_to_render_are_taken_in_one_statement(httpserver, use_smtp, statement_template):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    runs.execute_run(run_id=run.pk)

    with CaptureQueriesContext(connection) as queries:
        assert runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk)) == []

    takes = [query for query in queries.captured_queries if "SET \"status\" = 'working'" in query["sql"]]
    assert len(takes) == 1
    assert sorted(run.parts.values_list("status", "attempts")) == [(RunPart.Status.SENT, 1)] * 3
    for address in CLIENTS.values():
        assert len(use_smtp.messages_to(address[1])) == 1


def test_a_part_taken_with_its_batch_is_left_alone_when_another_worker_took_it_meanwhile(
    httpserver, use_smtp, statement_template, monkeypatch, settings
):
    """The parts before it took so long that its lease ran out and another worker took it: not sent twice."""
    import time_machine

    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    runs.execute_run(run_id=run.pk)
    alice, bob, cleo = (run.parts.get(address=address) for _name, address in CLIENTS.values())
    lease = settings.REPORTING["RUN_LEASE_SECONDS"]
    work_on = parts.work_on

    with time_machine.travel(timezone.now(), tick=True) as clock:

        def slow_work_on(part, **kwargs):
            ended = work_on(part, **kwargs)
            if part.pk == alice.pk:  # Alice took most of the lease; meanwhile another worker took Bob
                clock.shift(timedelta(seconds=lease * 0.9))
                RunPart.objects.filter(pk=bob.pk).update(
                    lease_expires_at=timezone.now() + timedelta(seconds=lease), attempts=F("attempts") + 1
                )
            return ended

        monkeypatch.setattr(parts, "work_on", slow_work_on)
        retries = runs.execute_parts(run_id=run.pk, part_ids=[alice.pk, bob.pk, cleo.pk])
        ended_at = timezone.now()

    [(part_id, delay)] = retries  # looked at again when the other worker's lease runs out
    assert part_id == bob.pk and lease - 5 <= delay <= lease + 2
    assert not use_smtp.messages_to("bob@example.com")
    bob.refresh_from_db()
    assert bob.status == RunPart.Status.WORKING and bob.attempts == 2 and not bob.deliveries.exists()
    # Cleo's lease was nearly out too, but nobody had taken her: renewed, and sent her report once.
    cleo.refresh_from_db()
    assert cleo.status == RunPart.Status.SENT and cleo.attempts == 1 and cleo.finished_at <= ended_at
    assert len(use_smtp.messages_to("cleo@example.com")) == 1
    assert len(use_smtp.messages_to("alice@example.com")) == 1


def test_a_batch_taken_in_part_by_another_worker_sends_only_the_rest(httpserver, use_smtp, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    runs.execute_run(run_id=run.pk)
    bob = run.parts.get(address="bob@example.com")
    held_until = timezone.now() + timedelta(seconds=60)
    RunPart.objects.filter(pk=bob.pk).update(status=RunPart.Status.WORKING, lease_expires_at=held_until, attempts=1)

    retries = runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))

    assert [part_id for part_id, _delay in retries] == [bob.pk]
    assert not use_smtp.messages_to("bob@example.com")
    assert len(use_smtp.messages_to("alice@example.com")) == 1 and len(use_smtp.messages_to("cleo@example.com")) == 1
    assert RunPart.objects.get(pk=bob.pk).lease_expires_at == held_until  # the other worker's lease, untouched


def test_a_large_batch_of_parts_read_at_different_attempts_is_taken_in_one_statement(httpserver, statement_template):
    """1,100 parts (PARTS_PER_TASK may be set that high), some retried before: one UPDATE, not a term per part."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    run.parts.all().delete()  # its three clients, planned with no rows yet: in their place, 1,100 with their rows
    RunPart.objects.bulk_create(
        RunPart(run=run, address=f"c{index}@example.com", key=f"C{index}", data={"positions": []}, attempts=index % 3)
        for index in range(1100)
    )
    batch = list(parts.load(run.pk, list(run.parts.values_list("pk", flat=True))).values())
    RunPart.objects.filter(pk=batch[7].pk).update(attempts=F("attempts") + 1)  # another worker touched this one

    with CaptureQueriesContext(connection) as queries:
        taken = parts.take_ready(batch)

    assert len(taken) == len(batch) - 1 and batch[7].pk not in taken
    assert len([query for query in queries.captured_queries if query["sql"].startswith("UPDATE")]) == 1
    assert run.parts.filter(status=RunPart.Status.WORKING).count() == len(batch) - 1
    assert set(run.parts.filter(status=RunPart.Status.WORKING).values_list("pk", flat=True)) == taken


def test_it_attaches_the_whole_csv_of_a_recipient_whose_file_is_over_a_megabyte(
    httpserver, use_smtp, statement_template
):
    # A file over render.IN_MEMORY_BYTES stays in a temporary file (Attachment.spool), not in
    # Attachment.content: the email sent straight after rendering read `content`, and was sent
    # with an empty CSV.
    many = [
        {"client_id": "C001", "instrument": f"Bond {number:05d} " + "x" * 60, "market_value": number}
        for number in range(15_000)
    ]
    httpserver.expect_request("/api/positions").respond_with_json({"positions": many + ROWS[2:]})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)

    run = run_everything(report)

    assert run.status == Status.SENT, run.error
    _filename, rows = csv_rows(received_by(use_smtp, "alice@example.com"))
    assert len(rows) == 15_000
    assert rows[-1]["instrument"].startswith("Bond 14999 ")
    stored = run.parts.get(key="C001").attachments.get()
    assert stored.size > 1024 * 1024 and not stored.linked
    _filename, bob_rows = csv_rows(received_by(use_smtp, "bob@example.com"))
    assert [row["instrument"] for row in bob_rows] == ["Initech"]


def test_the_rows_sorted_by_key_on_disk_go_to_the_same_recipients_as_the_rows_grouped_in_memory():
    from reporting.pipeline import split

    keys = {"C001", "c001", " C001", "C001 ", "7", "007", "C002", "nobody's rows"}
    rows = [dict(row, n=index) for index, row in enumerate(HOSTILE_ROWS) if isinstance(row, dict)]
    rows = rows * 3 + [{"client_id": "C002", "n": number} for number in range(50)] + ["a bare string row"]

    divided = split.KeyOrder(rows, "client_id", keys)
    grouped = dict(divided)

    whole = split.split_rows(rows, "client_id", keys)
    assert grouped == {key: mine for key, mine in whole.rows_by_key.items() if mine}
    assert list(grouped) == sorted(grouped)  # key after key, as assign_rows takes the parts
    assert divided.unmatched == whole.unmatched == 3 * 6 + 1
    assert [row["n"] for row in grouped["C001"]] == [0, 0, 0]
    assert [row["n"] for row in grouped["C002"]] == list(range(50))  # each key's rows in their order


def test_two_recipients_with_the_same_key_both_get_its_rows_and_nobody_elses(httpserver, use_smtp, statement_template):
    httpserver.expect_request("/api/positions").respond_with_json({"positions": ROWS})
    report = split_report(factories.data_source(httpserver.url_for("/api/")), statement_template)
    twin = Recipient.objects.create(email="twin@example.com", name="Twin", attributes={"client_id": "C002"})
    report.recipient_lists.get().recipients.add(twin)

    run = run_everything(report)

    assert run.status == Status.SENT, run.error
    for address in ("bob@example.com", "twin@example.com"):
        _filename, rows = csv_rows(received_by(use_smtp, address))
        assert [row["instrument"] for row in rows] == ["Initech"]
    _filename, alice_rows = csv_rows(received_by(use_smtp, "alice@example.com"))
    assert [row["instrument"] for row in alice_rows] == ["Acme Corp", "Globex"]
