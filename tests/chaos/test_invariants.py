"""The chaos run's checker, on an archive and a mailbox made by hand: it must see each kind of violation.

A checker that misses a duplicate or a silent loss would let a chaos run pass for nothing;
these run in seconds, without processes, on any database.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from reporting.models import Alert, Delivery, ReportRun
from tests import factories
from tests.chaos.invariants import check
from tests.chaos.scenario import ChaosReport
from tests.chaos.settle import period_key
from tests.chaos.smtp import ALERT_PREFIX, Received
from tests.chaos.source import FIGURE

SLOT = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
ANN, BOB = "ann@example.com", "bob@example.com"
OWNER = "owner@example.com"
Status = ReportRun.Status
Sent, Failed, Sending = Delivery.Status.SENT, Delivery.Status.FAILED, Delivery.Status.SENDING


@pytest.fixture
def chaos_report(db, django_user_model) -> ChaosReport:
    source = factories.data_source("http://127.0.0.1:9/api/")
    owner = django_user_model.objects.create_user("owner", OWNER, None)
    report = factories.report(source, addresses=[ANN, BOB], period_kind="none", timezone="UTC", owner=owner)
    return ChaosReport(report.pk, report.slug, (ANN, BOB), OWNER)


def run_for(report: ChaosReport, slot: datetime = SLOT, *, status: str = Status.SENT, error: str = "") -> ReportRun:
    return ReportRun.objects.create(
        report_id=report.pk,
        period_start=slot.date(),
        period_end=slot.date(),
        period_key=period_key(slot),
        scheduled_for=slot,
        created_at=slot,
        trigger=ReportRun.Trigger.SCHEDULE,
        status=status,
        recipients=list(report.addresses),
        subject=f"Portfolio {slot:%H:%M}",
        error=error,
    )


def delivery(run: ReportRun, address: str, status: str = Sent, error: str = "") -> Delivery:
    return Delivery.objects.create(run=run, address=address, status=status, error=error, message_id=f"<{address}>")


def email(run: ReportRun, address: str, *, message_id: str | None = None, body: str = FIGURE) -> Received:
    return Received((address,), run.subject, message_id or f"<{address}>", time.time(), body)


def alert(run: ReportRun, *, arrived: bool = True) -> list[Received]:
    row = Alert.objects.create(address=OWNER, subject=f"Portfolio failed: {run.pk}")
    row.runs.set([run])
    return [Received((OWNER,), ALERT_PREFIX + row.subject, "<alert>", time.time(), "")] if arrived else []


def verdict(report: ChaosReport, mailbox: list[Received], *, last_slot: datetime = SLOT):
    return check([report], mailbox, first_slot=SLOT, last_slot=last_slot, settled_at=SLOT + timedelta(minutes=5))


def rules(report: ChaosReport, mailbox: list[Received], **kwargs) -> list[int]:
    return sorted(violation.rule for violation in verdict(report, mailbox, **kwargs).violations)


def test_it_passes_a_run_received_once_by_each_address(chaos_report):
    run = run_for(chaos_report)
    delivery(run, ANN), delivery(run, BOB)

    result = verdict(chaos_report, [email(run, ANN), email(run, BOB)])

    assert result.violations == []
    assert (result.tally.emails_expected, result.tally.received_once, result.tally.lost_silently) == (2, 2, 0)


def test_it_sees_an_address_that_received_a_period_twice(chaos_report):
    run = run_for(chaos_report)
    delivery(run, ANN), delivery(run, BOB)

    assert rules(chaos_report, [email(run, ANN), email(run, ANN), email(run, BOB)]) == [2]


def test_it_sees_an_email_recorded_as_sent_that_never_arrived(chaos_report):
    run = run_for(chaos_report)
    delivery(run, ANN), delivery(run, BOB)

    assert rules(chaos_report, [email(run, ANN)]) == [1]


def test_a_failure_counts_only_with_an_alert_that_arrived(chaos_report):
    run = run_for(chaos_report, status=Status.PARTIALLY_SENT, error="1 of 2 addresses did not get the email")
    delivery(run, ANN), delivery(run, BOB, Failed, "The mail server permanently refused the message (550).")
    received = [email(run, ANN)]

    assert rules(chaos_report, received) == [1]
    assert rules(chaos_report, received + alert(run, arrived=False)) == [1]
    assert rules(chaos_report, received + alert(run)) == []


def test_a_failed_run_without_deliveries_counts_by_its_error(chaos_report):
    run = run_for(chaos_report, status=Status.FAILED, error="The data source answered 503.")

    assert verdict(chaos_report, alert(run)).tally.failed_alerted == 2
    assert rules(chaos_report, alert(run)) == []


def test_a_failed_delivery_needs_its_reason_in_words(chaos_report):
    run = run_for(chaos_report, status=Status.PARTIALLY_SENT)
    delivery(run, ANN), delivery(run, BOB, Failed, error="")

    assert rules(chaos_report, [email(run, ANN), *alert(run)]) == [1]


def test_it_sees_an_email_the_archive_records_as_failed(chaos_report):
    run = run_for(chaos_report)
    delivery(run, ANN), delivery(run, BOB, Failed, "The mail server could not be reached: timed out")

    assert rules(chaos_report, [email(run, ANN), email(run, BOB), *alert(run)]) == [3]


def test_an_email_interrupted_while_sending_may_have_arrived(chaos_report):
    run = run_for(chaos_report, status=Status.PARTIALLY_SENT)
    delivery(run, ANN), delivery(run, BOB, Failed, "Interrupted while sending (the worker stopped).")

    result = verdict(chaos_report, [email(run, ANN), email(run, BOB), *alert(run)])

    assert result.violations == []
    assert (result.tally.interrupted, result.tally.interrupted_received) == (1, 1)


def test_it_sees_emails_no_run_or_alert_records(chaos_report):
    run = run_for(chaos_report)
    delivery(run, ANN), delivery(run, BOB)
    stray = Received((ANN,), "Portfolio 03:00", "<stray>", time.time(), FIGURE)
    stray_alert = Received((OWNER,), ALERT_PREFIX + "Portfolio failed", "<a>", time.time(), "")
    no_figures = email(run, BOB, body="Dear reader")

    assert rules(chaos_report, [email(run, ANN), no_figures, stray, stray_alert]) == [3, 3, 3]


def test_it_sees_an_email_carrying_another_recipients_delivery(chaos_report):
    run = run_for(chaos_report)
    delivery(run, ANN), delivery(run, BOB)

    assert rules(chaos_report, [email(run, ANN), email(run, BOB, message_id=f"<{ANN}>")]) == [3]


def test_it_sees_runs_and_deliveries_left_open(chaos_report):
    run = run_for(chaos_report, status=Status.SENDING)
    delivery(run, ANN), delivery(run, BOB, Sending)
    ReportRun.objects.filter(pk=run.pk).update(deadline_at=SLOT + timedelta(minutes=1))

    # still sending (4), its deadline passed (4), a delivery left sending (4), bob never got it (1)
    assert rules(chaos_report, [email(run, ANN)]) == [1, 4, 4, 4]


def test_it_sees_a_slot_without_any_run(chaos_report):
    run = run_for(chaos_report)
    delivery(run, ANN), delivery(run, BOB)

    result = verdict(chaos_report, [email(run, ANN), email(run, BOB)], last_slot=SLOT + timedelta(minutes=1))

    assert [violation.rule for violation in result.violations] == [1]
    assert result.tally.slots_without_run == 1 and result.tally.lost_silently == 2
