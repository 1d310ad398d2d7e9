"""The invariants, checked over the archive (the database) and the SMTP server's mailbox.

1. No silent loss: every (report, period, address) the archive expected — every address of
   every run, and of every slot, which must have a run — was received exactly once, or is
   recorded as failed in words (the delivery, or the run) and an alert that names the run
   reached the report's owner.
2. No duplicates: no address received a period twice.
3. Nothing unrecorded: every report email received matches a delivery of that run to that
   address that is sent/delivered, or failed "Interrupted while sending"; every alert email
   matches an Alert row.
4. Settled: no run is left open (nor a delivery queued or sending), none is past its deadline.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reporting.models import Alert, Delivery, ReportRun

from .scenario import ChaosReport
from .settle import period_key, slots_between, terminal_statuses
from .smtp import ALERT_PREFIX, Received
from .source import FIGURE

INTERRUPTED = "Interrupted while sending"
EARLY_TOLERANCE = timedelta(seconds=1)  # clocks of one machine; anything more is a run started early
RULES = {
    1: "no silent loss (received once, or failed in words and alerted)",
    2: "no address received a period twice",
    3: "the mailbox holds nothing the archive does not record",
    4: "after settling, no run open and none past its deadline",
}


@dataclass(frozen=True)
class Violation:
    rule: int
    what: str
    run_id: int | None = None

    def __str__(self) -> str:
        return f"[{self.rule}] {self.what}" + (f" (run {self.run_id})" if self.run_id else "")


@dataclass
class Tally:
    slots: int = 0  # (report, slot) pairs checked for a run
    slots_without_run: int = 0
    runs: Counter[str] = field(default_factory=Counter)  # by status
    triggers: Counter[str] = field(default_factory=Counter)
    runs_failed_alerted: int = 0  # failed, missed or held runs that an alert received names
    emails_expected: int = 0
    received_once: int = 0
    duplicated: int = 0
    failed_alerted: int = 0  # not received, recorded as failed in words, alerted
    lost_silently: int = 0
    report_emails: int = 0
    interrupted: int = 0  # deliveries failed "Interrupted while sending" (a worker died mid-send)
    interrupted_received: int = 0  # … of which the email had arrived all the same
    alert_emails: int = 0
    alerts_recorded: int = 0


@dataclass
class Verdict:
    tally: Tally
    violations: list[Violation]
    observations: list[str] = field(default_factory=list)  # worth knowing, not an invariant

    def by_rule(self) -> Counter[int]:
        return Counter(violation.rule for violation in self.violations)


@dataclass
class _Archive:
    """The database as read once, after the stack stopped."""

    runs: dict[int, ReportRun]
    by_period: dict[tuple[int, str], ReportRun]
    by_subject: dict[str, ReportRun]
    deliveries: dict[tuple[int, str], Delivery]
    by_message_id: dict[str, Delivery]
    alerts: list[Alert]
    alert_runs: dict[int, set[int]]  # run id → ids of the alerts naming it


def check(
    reports: list[ChaosReport],
    mailbox: list[Received],
    *,
    first_slot: datetime,
    last_slot: datetime,
    settled_at: datetime,
) -> Verdict:
    archive = _read_archive(reports)
    tally, violations = Tally(), []
    alerts_received = _alerts_received(archive, mailbox, tally, violations)
    received = _report_emails(archive, mailbox, tally, violations)
    reports_by_pk = {report.pk: report for report in reports}
    for run in archive.runs.values():
        tally.runs[run.status] += 1
        tally.triggers[run.trigger] += 1
        alerted = bool(archive.alert_runs.get(run.pk, set()) & alerts_received)
        if run.status in (ReportRun.Status.FAILED, ReportRun.Status.MISSED, ReportRun.Status.HELD) and alerted:
            tally.runs_failed_alerted += 1
        addresses = run.recipients or list(reports_by_pk[run.report_id].addresses)
        for address in addresses:
            _expected(run, address, received[(run.pk, address.lower())], alerted, archive, tally, violations)
        _settled(run, settled_at, violations)
    _no_open_delivery(archive, violations)
    _every_slot_has_a_run(reports, archive, first_slot, last_slot, tally, violations)
    return Verdict(tally, violations, observations=_early_runs(archive))


def _read_archive(reports: list[ChaosReport]) -> _Archive:
    runs = {
        run.pk: run
        for run in ReportRun.objects.filter(report_id__in=[report.pk for report in reports]).select_related("report")
    }
    deliveries = list(Delivery.objects.filter(run_id__in=runs, kind=Delivery.Kind.ORIGINAL))
    owners = {report.owner_email.lower() for report in reports}
    alerts = [alert for alert in Alert.objects.prefetch_related("runs") if alert.address.lower() in owners]
    alert_runs: dict[int, set[int]] = defaultdict(set)
    for alert in alerts:
        for run in alert.runs.all():
            alert_runs[run.pk].add(alert.pk)
    return _Archive(
        runs=runs,
        by_period={
            (run.report_id, run.period_key): run for run in runs.values() if run.trigger in ReportRun.SCHEDULED_TRIGGERS
        },
        by_subject={run.subject: run for run in runs.values() if run.subject},
        deliveries={(delivery.run_id, delivery.address.lower()): delivery for delivery in deliveries},
        by_message_id={delivery.message_id: delivery for delivery in deliveries if delivery.message_id},
        alerts=alerts,
        alert_runs=alert_runs,
    )


def _alerts_received(archive: _Archive, mailbox: list[Received], tally: Tally, violations: list[Violation]) -> set[int]:
    """Ids of the Alert rows whose email arrived; an alert email without its row is a violation (3)."""
    rows: dict[tuple[str, str], list[int]] = defaultdict(list)
    for alert in sorted(archive.alerts, key=lambda alert: alert.pk):
        rows[(alert.address.lower(), alert.subject)].append(alert.pk)
    tally.alerts_recorded = len(archive.alerts)
    arrived: set[int] = set()
    for message in mailbox:
        if not message.is_alert:
            continue
        tally.alert_emails += 1
        subject = message.subject.removeprefix(ALERT_PREFIX)
        for address in message.recipients:
            waiting = [pk for pk in rows[(address.lower(), subject)] if pk not in arrived]
            if waiting:
                arrived.add(waiting[0])
            else:
                violations.append(Violation(3, f"alert email to {address} '{subject}' matches no Alert row"))
    return arrived


def _report_emails(
    archive: _Archive, mailbox: list[Received], tally: Tally, violations: list[Violation]
) -> Counter[tuple[int, str]]:
    """How many times each (run, address) was received; an email the archive does not record is a violation (3)."""
    received: Counter[tuple[int, str]] = Counter()
    for message in mailbox:
        if message.is_alert:
            continue
        tally.report_emails += 1
        by_id = archive.by_message_id.get(message.message_id)
        run = archive.runs.get(by_id.run_id) if by_id else archive.by_subject.get(message.subject)
        if run is None:
            violations.append(Violation(3, f"email '{message.subject}' to {message.recipients} matches no run"))
            continue
        if FIGURE not in message.body:
            violations.append(Violation(3, f"email to {message.recipients} lacks the report's figures", run.pk))
        for address in message.recipients:
            received[(run.pk, address.lower())] += 1
            if by_id is not None and by_id.address.lower() != address.lower():
                violations.append(Violation(3, f"{address} received the email of {by_id.address}", run.pk))
            _recorded(run, address, archive.deliveries.get((run.pk, address.lower())), violations)
    return received


def _recorded(run: ReportRun, address: str, delivery: Delivery | None, violations: list[Violation]) -> None:
    """A received email must be recorded as sent, or as interrupted while sending (rule 3)."""
    if delivery is None:
        violations.append(Violation(3, f"{address} received it, but the run has no delivery for it", run.pk))
    elif delivery.status not in Delivery.ACCEPTED and not (
        delivery.status == Delivery.Status.FAILED and INTERRUPTED in delivery.error
    ):
        violations.append(
            Violation(3, f"{address} received it, but its delivery is {delivery.status}: {delivery.error!r}", run.pk)
        )


def _expected(
    run: ReportRun,
    address: str,
    times: int,
    alerted: bool,
    archive: _Archive,
    tally: Tally,
    violations: list[Violation],
) -> None:
    tally.emails_expected += 1
    delivery = archive.deliveries.get((run.pk, address.lower()))
    if delivery is not None and delivery.status == Delivery.Status.FAILED and INTERRUPTED in delivery.error:
        tally.interrupted += 1
        tally.interrupted_received += 1 if times else 0
    if times == 1:
        tally.received_once += 1
        return
    if times > 1:
        tally.duplicated += 1
        what = f"{address} received {run.period_key} of report {run.report_id} {times}×"
        violations.append(Violation(2, what, run.pk))
        return
    reason = _failure_in_words(run, delivery)
    if reason and alerted:
        tally.failed_alerted += 1
        return
    tally.lost_silently += 1
    if delivery is not None and delivery.status in Delivery.ACCEPTED:
        what = f"recorded as {delivery.status} but never received"
    elif run.status not in terminal_statuses():
        what = f"not received and the run is still {run.status}"
    elif reason:
        what = f"not received; recorded ({reason[:160]!r}) but no alert that names the run arrived (run {run.status})"
    else:
        state = delivery.status if delivery else "no delivery row"
        what = f"not received and not recorded as failed in words ({state}, run {run.status})"
    violations.append(Violation(1, f"{address} · {run.period_key}: {what}", run.pk))


def _failure_in_words(run: ReportRun, delivery: Delivery | None) -> str:
    """The recorded reason an address did not get the email, or '' when none is recorded."""
    if delivery is not None and delivery.status in (Delivery.Status.FAILED, Delivery.Status.BOUNCED):
        return delivery.error.strip()
    if delivery is None and run.status in (ReportRun.Status.FAILED, ReportRun.Status.MISSED, ReportRun.Status.HELD):
        return run.error.strip()
    return ""


def _settled(run: ReportRun, settled_at: datetime, violations: list[Violation]) -> None:
    if run.status not in terminal_statuses():
        violations.append(Violation(4, f"run is still {run.status} after settling ({run.error[:160]!r})", run.pk))
    deadline = getattr(run, "deadline_at", None)
    if deadline is not None and run.status not in terminal_statuses() and deadline < settled_at:
        violations.append(Violation(4, f"run is past its deadline ({deadline:%H:%M:%S})", run.pk))
    elif deadline is not None and run.status in terminal_statuses():
        violations.append(Violation(4, f"run is {run.status} but keeps a deadline ({deadline:%H:%M:%S})", run.pk))


def _no_open_delivery(archive: _Archive, violations: list[Violation]) -> None:
    for (run_id, address), delivery in sorted(archive.deliveries.items()):
        if delivery.status in (Delivery.Status.QUEUED, Delivery.Status.SENDING):
            violations.append(Violation(4, f"delivery to {address} left {delivery.status}", run_id))


def _every_slot_has_a_run(
    reports: list[ChaosReport],
    archive: _Archive,
    first_slot: datetime,
    last_slot: datetime,
    tally: Tally,
    violations: list[Violation],
) -> None:
    """A slot without any run is the silent loss of all its addresses (rule 1)."""
    for report in reports:
        for slot in slots_between(first_slot, last_slot):
            tally.slots += 1
            if (report.pk, period_key(slot)) in archive.by_period:
                continue
            tally.slots_without_run += 1
            tally.emails_expected += len(report.addresses)
            tally.lost_silently += len(report.addresses)
            violations.append(Violation(1, f"{report.slug} slot {slot:%H:%M} UTC has no run at all"))


def _early_runs(archive: _Archive) -> list[str]:
    """Runs started before their own slot: the email went out before the time it was scheduled for."""
    early = []
    for run in sorted(archive.runs.values(), key=lambda run: run.pk):
        if run.scheduled_for and run.created_at < run.scheduled_for - EARLY_TOLERANCE:
            ahead = (run.scheduled_for - run.created_at).total_seconds()
            early.append(
                f"run {run.pk} ({run.report.slug}, slot {run.scheduled_for:%H:%M} UTC) was created {ahead:.1f}s "
                f"before its slot, at {run.created_at:%H:%M:%S}"
            )
    return early
