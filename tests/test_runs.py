"""The run orchestrator: fetch → render → deliver → archive, once per period, resumable."""

import csv
import io
import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from reporting import archive, runs
from reporting.models import Delivery, ReportRun
from reporting.services import archive as services_archive
from tests import factories

LONDON = ZoneInfo("Europe/London")
pytestmark = pytest.mark.django_db


def manual_run(report, day=date(2026, 11, 20)):
    return runs.create_manual_run(report_id=report.pk, period_day=day, requested_by_id=None)


def test_it_fetches_renders_sends_and_archives_a_run(report, use_smtp, httpserver):
    report.query_params = {"date": "{{ period.start|date:'Y-m-d' }}"}
    report.save()

    run = runs.execute_run(run_id=manual_run(report).pk)

    run.refresh_from_db()
    assert run.status == ReportRun.Status.SENT
    assert run.row_count == 3
    assert run.subject == "Portfolio — 20 November 2026"
    assert httpserver.log[0][0].args["date"] == "2026-11-20"
    assert archive.snapshot_data(run) == factories.POSITIONS
    assert [d.address for d in run.deliveries.all()] == ["ann@example.com", "bob@example.com"]
    assert {d.status for d in run.deliveries.all()} == {Delivery.Status.SENT}
    assert all(run.started_at <= stamp <= run.finished_at for stamp in (run.fetched_at, run.rendered_at))
    received = {tuple(use_smtp.recipients_of(message)): message for message in use_smtp.messages}
    assert set(received) == {("ann@example.com",), ("bob@example.com",)}
    message = received[("ann@example.com",)]
    assert message["To"] == "ann@example.com"
    assert message["Subject"] == "Portfolio — 20 November 2026"
    html = message.get_body(("html",)).get_content()
    assert "Globex 4.25% 2032" in html and "49875" in html.replace(",", "")
    [attachment] = [part for part in message.iter_attachments()]
    assert attachment.get_filename() == "portfolio_2026-11-20.csv"
    rows = list(csv.DictReader(io.StringIO(attachment.get_content().lstrip("\ufeff"))))
    assert [row["instrument"] for row in rows] == ["Acme Corp", "Globex 4.25% 2032", "Initech ETF"]
    assert run.deliveries.get(address="ann@example.com").message_id == message["Message-ID"]


def test_it_shows_email_max_rows_rows_in_the_email_and_attaches_them_all(httpserver, use_smtp):
    positions = [{"instrument": f"Position {number:03}", "quantity": number} for number in range(1, 501)]
    httpserver.expect_request("/api/positions").respond_with_json({"data": {"positions": positions}})
    report = factories.report(factories.data_source(httpserver.url_for("/api/")), addresses=["ann@example.com"])
    report.email_max_rows = 100
    report.save()

    run = runs.execute_run(run_id=manual_run(report).pk)

    assert run.status == ReportRun.Status.SENT
    assert run.row_count == 500
    [message] = use_smtp.messages
    html = message.get_body(("html",)).get_content()
    assert html.count("Position ") == 100
    assert "Position 100" in html and "Position 101" not in html
    assert "Showing 100 of 500 rows." in html
    text = message.get_body(("plain",)).get_content()
    assert "Showing 50 of 500 rows; the attached CSV has them all." in text
    [attachment] = message.iter_attachments()
    rows = list(csv.DictReader(io.StringIO(attachment.get_content().lstrip("\ufeff"))))
    assert [row["instrument"] for row in rows] == [position["instrument"] for position in positions]


def test_it_archives_the_exact_bytes_of_an_answer_too_large_to_keep_in_memory(httpserver, monkeypatch):
    monkeypatch.setattr(runs, "_SPOOL_BYTES", 64)  # answers over 64 bytes go to a file while fetched
    served = json.dumps(factories.POSITIONS, indent=4).encode()
    httpserver.expect_request("/api/positions").respond_with_data(served, content_type="application/json")
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))

    run = runs.execute_run(run_id=manual_run(report).pk)

    assert run.status == ReportRun.Status.SENT
    with run.data_snapshot.open("rb") as snapshot:
        assert snapshot.read() == served
    assert run.row_count == 3
    assert "Initech ETF" in mail.outbox[0].alternatives[0][0]


def test_it_renders_from_the_archived_data_when_resuming_after_the_fetch(report, httpserver):
    run = manual_run(report)
    runs.execute_run(run_id=run.pk)
    mail.outbox.clear()
    # As if the worker died after fetching: the data is archived, nothing rendered or sent.
    run.refresh_from_db()
    run.status, run.rendered_at, run.body_html = ReportRun.Status.RENDERING, None, ""
    run.lease_expires_at = timezone.now() - timedelta(seconds=1)
    run.save()
    run.deliveries.all().delete()
    requests_before = len(httpserver.log)

    runs.execute_run(run_id=run.pk)

    run.refresh_from_db()
    assert len(httpserver.log) == requests_before
    assert run.status == ReportRun.Status.SENT
    assert "Globex 4.25% 2032" in run.body_html
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]


@time_machine.travel(datetime(2026, 11, 21, 7, 0, 5, tzinfo=LONDON))
def test_it_sends_each_period_once_when_beat_fires_twice(report):
    factories.schedule(report, minute="0", hour="7")

    first = runs.start_scheduled_run(report_id=report.pk)
    runs.execute_run(run_id=first.pk)
    second = runs.start_scheduled_run(report_id=report.pk)

    assert second is None
    assert ReportRun.objects.filter(report=report).count() == 1
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]


@time_machine.travel(datetime(2026, 11, 21, 7, 0, 5, tzinfo=LONDON))
def test_it_hands_out_an_unclaimed_run_again_when_its_task_is_delivered_twice(report):
    factories.schedule(report, minute="0", hour="7")

    first = runs.start_scheduled_run(report_id=report.pk)
    again = runs.start_scheduled_run(report_id=report.pk)
    runs.execute_run(run_id=first.pk)
    runs.execute_run(run_id=again.pk)

    assert again.pk == first.pk
    assert len(mail.outbox) == 2


def test_it_reports_the_period_of_the_slot_when_the_task_starts_late(report):
    report.period_kind = "monthly"
    report.save()
    factories.schedule(report, minute="0", hour="7", day_of_month="1")

    # Due 07:00 on 1 December; the worker only gets to it at 23:50 that day.
    with time_machine.travel(datetime(2026, 12, 1, 23, 50, tzinfo=LONDON)):
        run = runs.start_scheduled_run(report_id=report.pk)

    assert (run.period_start, run.period_end) == (date(2026, 11, 1), date(2026, 11, 30))
    assert run.scheduled_for == datetime(2026, 12, 1, 7, 0, tzinfo=LONDON)
    assert run.trigger == ReportRun.Trigger.SCHEDULE


def test_it_runs_nothing_for_a_disabled_report(report):
    factories.schedule(report, minute="0", hour="7")
    report.enabled = False
    report.save()

    assert runs.start_scheduled_run(report_id=report.pk) is None
    assert not ReportRun.objects.exists()


def test_it_queues_a_transient_failure_for_retry_and_fails_on_the_last_attempt(httpserver):
    httpserver.expect_request("/api/positions").respond_with_data("busy", status=503)
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))
    run = manual_run(report)

    with pytest.raises(runs.RunRetryLater):
        runs.execute_run(run_id=run.pk, final_attempt=False)
    run.refresh_from_db()
    assert run.status == ReportRun.Status.RETRYING
    assert "Will retry" in run.error and "503" in run.error

    runs.execute_run(run_id=run.pk, final_attempt=True)
    run.refresh_from_db()
    assert run.status == ReportRun.Status.FAILED
    assert "unavailable right now (HTTP 503" in run.error
    assert run.attempts == 2
    assert not mail.outbox


def test_it_keeps_the_fetched_data_when_the_records_path_is_wrong(report):
    report.records_path = "data.holdings"
    report.save()

    run = runs.execute_run(run_id=manual_run(report).pk)

    run.refresh_from_db()
    assert run.status == ReportRun.Status.FAILED
    assert "records path 'data.holdings' was not found" in run.error
    assert archive.snapshot_data(run) == factories.POSITIONS
    assert not mail.outbox


def test_it_keeps_the_fetched_data_when_the_template_is_broken(report):
    report.subject_template = "Portfolio {% if %}"
    report.save()

    run = runs.execute_run(run_id=manual_run(report).pk)

    run.refresh_from_db()
    assert run.status == ReportRun.Status.FAILED
    assert run.error.startswith("The subject template has an error")
    assert archive.snapshot_data(run) == factories.POSITIONS
    assert not run.deliveries.exists()


def test_it_fails_in_words_when_the_report_has_no_recipients(source):
    report = factories.report(source, addresses=[])

    run = runs.execute_run(run_id=manual_run(report).pk)

    assert run.status == ReportRun.Status.FAILED
    assert "no active recipients" in run.error


def test_it_marks_a_run_partially_sent_when_one_address_is_refused(report, use_smtp):
    use_smtp.refuse("bob@example.com", code=550, message="No such user")

    run = runs.execute_run(run_id=manual_run(report).pk)

    run.refresh_from_db()
    assert run.status == ReportRun.Status.PARTIALLY_SENT
    assert "bob@example.com" in run.error and "550" in run.error
    assert [m["To"] for m in use_smtp.messages] == ["ann@example.com"]
    assert run.deliveries.get(address="bob@example.com").status == Delivery.Status.FAILED


def test_a_refused_address_is_recorded_with_its_error_in_the_update_that_claims_the_next(report, use_smtp):
    use_smtp.refuse("ann@example.com", code=550, message="No such user")

    run = runs.execute_run(run_id=manual_run(report).pk)

    refused, sent = run.deliveries.order_by("pk")
    assert (refused.address, refused.status, refused.message_id, refused.sent_at) == (
        "ann@example.com",
        Delivery.Status.FAILED,
        "",
        None,
    )
    assert "550" in refused.error and "No such user" in refused.error
    assert (sent.address, sent.status, sent.error) == ("bob@example.com", Delivery.Status.SENT, "")
    assert [m["To"] for m in use_smtp.messages] == ["bob@example.com"]


def test_it_resumes_a_run_after_a_crash_without_sending_anyone_twice(report):
    run = manual_run(report)
    runs.execute_run(run_id=run.pk)
    mail.outbox.clear()
    # As if the worker died mid-send: ann was sent, bob's send was in flight, a third
    # address had not been tried, and the dead worker's lease has run out.
    run.refresh_from_db()
    run.recipients = ["ann@example.com", "bob@example.com", "cy@example.com"]
    run.status = ReportRun.Status.SENDING
    run.lease_expires_at = timezone.now() - timedelta(seconds=1)
    run.save()
    run.deliveries.filter(address="bob@example.com").update(status=Delivery.Status.SENDING)

    runs.execute_run(run_id=run.pk)

    run.refresh_from_db()
    assert [m.to for m in mail.outbox] == [["cy@example.com"]]
    bob = run.deliveries.get(address="bob@example.com")
    assert bob.status == Delivery.Status.FAILED and "Interrupted while sending" in bob.error
    assert run.status == ReportRun.Status.PARTIALLY_SENT
    assert run.lease_expires_at is None


def test_it_leaves_a_run_alone_while_another_worker_holds_it(report):
    run = manual_run(report)
    ReportRun.objects.filter(pk=run.pk).update(
        status=ReportRun.Status.FETCHING, lease_expires_at=timezone.now() + timedelta(seconds=60)
    )

    with pytest.raises(runs.RunNotClaimed) as held:
        runs.execute_run(run_id=run.pk)

    assert 55 < held.value.retry_in <= 61
    assert not mail.outbox


def test_it_does_nothing_for_a_run_that_already_finished(report):
    run = manual_run(report)
    runs.execute_run(run_id=run.pk)

    runs.execute_run(run_id=run.pk)

    assert len(mail.outbox) == 2


def test_it_resends_the_archived_email_without_fetching_again(report, httpserver, django_user_model):
    run = runs.execute_run(run_id=manual_run(report).pk)
    original = mail.outbox[0]
    requests_before = len(httpserver.log)
    staff = django_user_model.objects.create_user("kim", "kim@example.com")

    services_archive.resend_here(run_id=run.pk, addresses=["carol@example.com"], actor=staff)

    assert len(httpserver.log) == requests_before
    resent = mail.outbox[-1]
    assert resent.to == ["carol@example.com"]
    assert resent.subject == original.subject
    assert resent.body == original.body
    assert resent.alternatives == original.alternatives
    assert resent.attachments == original.attachments
    delivery = run.deliveries.get(kind=Delivery.Kind.RESEND)
    assert (delivery.address, delivery.status, delivery.requested_by) == ("carol@example.com", "sent", staff)


def test_it_resends_to_the_original_recipients_by_default(report):
    run = runs.execute_run(run_id=manual_run(report).pk)

    services_archive.resend_here(run_id=run.pk, addresses=None, actor=None)

    assert sorted(m.to[0] for m in mail.outbox[2:]) == ["ann@example.com", "bob@example.com"]
    assert run.deliveries.filter(kind=Delivery.Kind.ORIGINAL).count() == 2
    assert run.deliveries.filter(kind=Delivery.Kind.RESEND).count() == 2


def test_it_refuses_to_resend_a_run_that_never_rendered(report):
    report.records_path = "nope"
    report.save()
    run = runs.execute_run(run_id=manual_run(report).pk)

    with pytest.raises(ValidationError, match="no archived email"):
        services_archive.plan_resend(run_ids=[run.pk], addresses=None)


def test_it_names_invalid_addresses_for_a_resend(report):
    run = runs.execute_run(run_id=manual_run(report).pk)

    with pytest.raises(ValidationError, match="not-an-address"):
        services_archive.plan_resend(run_ids=[run.pk], addresses=["ok@example.com", "not-an-address"])
    assert not run.deliveries.filter(kind=Delivery.Kind.RESEND).exists()


def test_it_sends_a_test_run_only_to_the_staff_user(report, django_user_model):
    staff = django_user_model.objects.create_user("kim", "kim@example.com")

    run = runs.create_test_run(report_id=report.pk, period_day=None, user_email=staff.email, requested_by_id=staff.pk)
    runs.execute_run(run_id=run.pk)

    assert [m.to for m in mail.outbox] == [["kim@example.com"]]
    assert run.trigger == ReportRun.Trigger.TEST


def test_it_gives_each_address_of_lists_and_recipients_one_email(source):
    report = factories.report(source, addresses=["ann@example.com"])
    report.recipient_lists.add(factories.recipient_list("Board", ["ANN@example.com", "dan@example.com"]))

    runs.execute_run(run_id=manual_run(report).pk)

    assert sorted(m.to[0].lower() for m in mail.outbox) == ["ann@example.com", "dan@example.com"]


def test_the_run_report_command_runs_and_the_resend_command_resends(report, capsys):
    call_command("run_report", "portfolio", "--period-start", "2026-11-20")
    run = ReportRun.objects.get()
    call_command("resend_run", str(run.pk), "--to", "eve@example.com")

    out = capsys.readouterr().out
    assert f"Run #{run.pk} of Portfolio for 20 November 2026: Sent." in out
    assert "eve@example.com: Sent" in out
    assert [m.to[0] for m in mail.outbox] == ["ann@example.com", "bob@example.com", "eve@example.com"]
    assert json.loads(json.dumps(run.recipients)) == ["ann@example.com", "bob@example.com"]


def test_it_stores_the_esps_message_id_and_status_on_each_delivery(report, settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"

    run = runs.execute_run(run_id=manual_run(report).pk)

    sent = {m.to[0]: m for m in mail.outbox}
    for delivery in run.deliveries.all():
        message = sent[delivery.address]
        assert delivery.message_id == str(message.anymail_status.message_id)
        assert delivery.esp_status == "sent"
        assert "Initech ETF" in message.alternatives[0][0]
    assert len({d.message_id for d in run.deliveries.all()}) == 2


def test_a_reports_recipients_are_its_own_and_its_lists_active_members_each_once(source):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from reporting.models import Recipient

    report = factories.report(source, addresses=["ann@example.com", "bob@example.com"])
    other = factories.report(source, slug="other", name="Other", addresses=["zed@example.com"])
    report.recipient_lists.add(
        factories.recipient_list("Board", ["bob@example.com", "cy@example.com", "dee@example.com"])
    )
    other.recipient_lists.add(factories.recipient_list("Elsewhere", ["eve@example.com"]))
    Recipient.objects.filter(email="dee@example.com").update(active=False)

    with CaptureQueriesContext(connection) as queries:
        addresses = report.recipient_addresses()

    assert addresses == ["ann@example.com", "bob@example.com", "cy@example.com"]
    [query] = queries.captured_queries
    # Matched by id in each link table, not by one join both ways (which read every recipient for each run).
    assert "LEFT OUTER JOIN" not in query["sql"]


def test_each_message_is_recorded_in_the_update_that_claims_the_next(source, use_smtp):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    addresses = [f"r{number}@example.com" for number in range(5)]
    report = factories.report(source, addresses=addresses)
    run = manual_run(report)
    started = timezone.now()

    with CaptureQueriesContext(connection) as queries:
        runs.execute_run(run_id=run.pk)

    statements = [query["sql"] for query in queries.captured_queries]
    updates = [sql for sql in statements if sql.startswith('UPDATE "reporting_delivery"')]
    assert len(updates) == len(addresses) + 1  # not two per address
    deliveries = {d.address: d for d in run.deliveries.all()}
    received = {use_smtp.recipients_of(message)[0]: message for message in use_smtp.messages}
    assert sorted(received) == addresses
    for address, delivery in deliveries.items():
        assert delivery.status == Delivery.Status.SENT
        assert delivery.message_id == received[address]["Message-ID"]
        assert started <= delivery.sent_at <= timezone.now()  # the time as sent, read back in UTC
        assert (delivery.error, delivery.esp_status) == ("", "")
    assert [d.sent_at for d in sorted(deliveries.values(), key=lambda d: d.pk)] == sorted(
        d.sent_at for d in deliveries.values()
    )
    # Nothing read back before sending: neither the deliveries just recorded nor the email just archived.
    assert not [sql for sql in statements if sql.startswith('SELECT "reporting_runattachment"')]
    assert len(statements) <= 24, "\n".join(sql[:80] for sql in statements)


def test_a_delivery_another_worker_claims_meanwhile_is_left_to_it_and_the_sent_one_recorded(
    source, use_smtp, monkeypatch
):
    from reporting.pipeline import deliver

    report = factories.report(source, addresses=["ann@example.com", "bob@example.com", "cy@example.com"])
    run = manual_run(report)
    real_send = deliver.send

    def send_while_another_worker_takes_bob(email, address, *, backend):
        if address == "ann@example.com":
            Delivery.objects.filter(address="bob@example.com").update(status=Delivery.Status.SENDING)
        return real_send(email, address, backend=backend)

    monkeypatch.setattr(deliver, "send", send_while_another_worker_takes_bob)

    runs.execute_run(run_id=run.pk)

    assert sorted(use_smtp.recipients_of(message)[0] for message in use_smtp.messages) == [
        "ann@example.com",
        "cy@example.com",
    ]
    ann, bob, cy = (run.deliveries.get(address=a) for a in ("ann@example.com", "bob@example.com", "cy@example.com"))
    assert ann.status == cy.status == Delivery.Status.SENT and ann.message_id and cy.message_id
    assert bob.status == Delivery.Status.SENDING and not bob.message_id  # the other worker's to send and record


def test_a_run_rendered_before_its_mail_server_was_reachable_sends_each_address_once(report, settings, use_smtp):
    reachable = settings.EMAIL_PORT
    settings.EMAIL_PORT = _unused_port()
    run = manual_run(report)

    with pytest.raises(runs.RunRetryLater):
        runs.execute_run(run_id=run.pk, final_attempt=False)

    run.refresh_from_db()
    assert run.rendered_at is not None and run.status == ReportRun.Status.RETRYING
    # Recorded with the email, queued: nobody was sent anything yet.
    assert sorted(run.deliveries.values_list("address", "status")) == [
        ("ann@example.com", Delivery.Status.QUEUED),
        ("bob@example.com", Delivery.Status.QUEUED),
    ]
    settings.EMAIL_PORT = reachable

    runs.execute_run(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == ReportRun.Status.SENT
    assert sorted(use_smtp.recipients_of(message)[0] for message in use_smtp.messages) == [
        "ann@example.com",
        "bob@example.com",
    ]
    assert run.deliveries.count() == 2
    assert run.attachments.count() == 1


def _unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_csv_over_a_megabyte_is_sent_whole_from_the_email_just_archived(httpserver, use_smtp):
    # A first attempt sends the email it has just archived: a file over 1 MB is in its temporary
    # file then (Attachment.spool), after the archive has copied it.
    positions = [{"instrument": f"Bond {number:05d} " + "x" * 60, "quantity": number} for number in range(20_000)]
    httpserver.expect_request("/api/positions").respond_with_json({"data": {"positions": positions}})
    report = factories.report(factories.data_source(httpserver.url_for("/api/")), addresses=["ann@example.com"])

    run = runs.execute_run(run_id=manual_run(report).pk)

    assert run.status == ReportRun.Status.SENT, run.error
    [message] = use_smtp.messages
    [attachment] = message.iter_attachments()
    rows = list(csv.DictReader(io.StringIO(attachment.get_content().lstrip("\ufeff"))))
    assert len(rows) == 20_000 and rows[-1]["instrument"].startswith("Bond 19999 ")
    stored = run.attachments.get()
    assert stored.size > 1024 * 1024 and not stored.linked
    with stored.file.open("rb") as archived:
        assert archived.read().decode("utf-8") == attachment.get_content()  # the same bytes, BOM and all
