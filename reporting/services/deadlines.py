"""The deadline sweep: every run reaches an end, whatever was lost on the way.

Each run not yet at an end carries a deadline (reporting.runs): the lease while a worker
holds it, the queue deadline while it waits for a worker, its retry time plus the queue
deadline while it waits to retry. A run past its deadline has lost its message (the broker
lost it, an after-commit publish failed, a retry was dropped) or its worker (killed, hung).
This sweep (a periodic task, every minute) takes each such run, whatever its state:

* the first time, it publishes the run again, once, and says why in its notes;
* the second time, it fails the run with the reason in words and who already got the
  email; the alert sweep then tells the owner.

It cannot send an address twice: the claim in `runs.execute_run` and the per-address
delivery claim still decide, and a delivery left "sending" is never sent again.

A resend (to addresses, or to a Slack, Teams or webhook destination) is a delivery queued with
its own message: one still queued past the queue deadline lost that message, and is failed in
words for staff to resend, never sent late (its send claims it only while it is queued).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Case, F, TextField, Value, When
from django.db.models.functions import Concat
from django.utils import timezone

from reporting import audit, conf, destinations, parts, runs
from reporting.models import AuditEvent, Delivery, ReportRun
from reporting.services.enqueue import EXECUTE_RUN, enqueue
from reporting.timing import local_time

log = logging.getLogger(__name__)
Status = ReportRun.Status
Action = AuditEvent.Action
_FIELDS = (
    "status",
    "deadline_at",
    "lease_expires_at",
    "heartbeat_at",
    "recoveries",
    "period_timezone",
    "period_label",
    "report__name",
    "per_recipient",
)
RUNS_PER_SWEEP = 1000  # runs taken in one sweep; the next sweep takes the rest


@dataclass
class DeadlineResult:
    published_again: list[int] = field(default_factory=list)  # ids of the runs published once more
    failed: list[int] = field(default_factory=list)  # ids of the runs failed at their second deadline
    lost_resends: int = 0  # resend deliveries failed because their message never reached a worker


def enforce_run_deadlines(*, now: datetime | None = None) -> DeadlineResult:
    """Publish again once, then fail, every run past its deadline."""
    now = now or timezone.now()
    result = DeadlineResult()
    overdue = (
        ReportRun.objects.filter(status__in=ReportRun.WORKING, deadline_at__lt=now)
        .select_related("report")
        .only(*_FIELDS)
        .order_by("deadline_at")
    )
    for run in list(overdue[:RUNS_PER_SWEEP]):  # read first: each is then updated on its own
        if run.recoveries == 0 and _publish_again(run, now=now):
            result.published_again.append(run.pk)
        elif run.recoveries > 0 and _give_up(run, now=now):
            result.failed.append(run.pk)
    result.lost_resends = _fail_lost_resends(now)
    if result.published_again or result.failed or result.lost_resends:
        log.warning(
            "deadlines: %d runs published again, %d failed, %d lost resends failed",
            len(result.published_again),
            len(result.failed),
            result.lost_resends,
        )
    return result


def _fail_lost_resends(now: datetime) -> int:
    """Fail, in words, each resend still queued past the queue deadline: its message was lost."""
    waited = conf.REPORTING["RUN_QUEUE_DEADLINE_SECONDS"]
    lost = Delivery.objects.filter(
        kind=Delivery.Kind.RESEND, status=Delivery.Status.QUEUED, created_at__lt=now - timedelta(seconds=waited)
    )
    return lost.update(
        status=Delivery.Status.FAILED,
        error=f"Not sent: its message did not reach a worker within {waited:,} seconds (lost by the broker, "
        "or no worker was running). Resend it again from the run's page.",
    )


def count_overdue(*, now: datetime | None = None) -> int:
    """How many runs are past their deadline now (for /healthz and the overview)."""
    now = now or timezone.now()
    return ReportRun.objects.filter(status__in=ReportRun.WORKING, deadline_at__lt=now).count()


def why_overdue(run: ReportRun) -> str:
    """What a run past its deadline was waiting for, in words."""
    if run.status == Status.QUEUED:
        return "its message did not reach a worker by its deadline (lost by the broker, or never published)"
    if run.status == Status.RETRYING:
        return "its retry did not start by its deadline (the retry message was lost)"
    if run.per_recipient and run.status == Status.SENDING:
        return (
            "its recipients' reports stopped moving before all were sent (their messages were lost, or the "
            f"workers stopped; last sign of life {_last_seen(run)})"
        )
    doing = {Status.FETCHING: "fetching the data", Status.RENDERING: "rendering the email"}.get(  # type: ignore[call-overload]
        run.status, "sending the email"
    )
    return f"the worker stopped responding while {doing} (last sign of life {_last_seen(run)})"


def _publish_again(run: ReportRun, *, now: datetime) -> bool:
    message = f"At {local_time(now, run.period_timezone)}, {why_overdue(run)}; published again once."
    with transaction.atomic():
        taken = _take(
            run,
            status=Status.QUEUED,
            recoveries=1,
            deadline_at=runs.queue_deadline(),
            error=message,
            notes=_noted(message),
        )
        if not taken:
            return False
        summary = f"Run #{run.pk} ({run.period_label}) was past its deadline: {why_overdue(run)}. Published it again."
        audit.record(actor=None, action=Action.REPUBLISHED, summary=summary, report=run.report, run=run)
        enqueue(EXECUTE_RUN, run_id=run.pk)
    log.warning("run %s: %s", run.pk, message)
    return True


def _give_up(run: ReportRun, *, now: datetime) -> bool:
    when = local_time(now, run.period_timezone)
    reason = f"Failed at {when}: {why_overdue(run)}, again after it was published once more."
    with transaction.atomic():
        taken = _take(
            run,
            status=Status.FAILED,
            recoveries=run.recoveries + 1,
            finished_at=now,
            deadline_at=None,
            notes=_noted(reason),
        )
        if not taken:
            return False
        parts.close_open(run.pk, "Not sent: the run failed at its deadline.")
        who_got_it = _close_deliveries(run)
        if run.per_recipient:
            who_got_it = _who_got_their_report(run)
        message = f"{reason} {who_got_it}"
        ReportRun.objects.filter(pk=run.pk).update(error=message)
        summary = f"Run #{run.pk} ({run.period_label}) failed at its second deadline. {who_got_it}"
        audit.record(actor=None, action=Action.GAVE_UP, summary=summary, report=run.report, run=run)
    log.warning("run %s: %s", run.pk, message)
    return True


def _take(run: ReportRun, **fields: object) -> bool:
    """Change the run only if nobody touched it since it was read; the row count says who won."""
    return bool(
        ReportRun.objects.filter(
            pk=run.pk,
            status=run.status,
            deadline_at=run.deadline_at,
            lease_expires_at=run.lease_expires_at,
            recoveries=run.recoveries,
        ).update(lease_expires_at=None, **fields)
    )


def _close_deliveries(run: ReportRun) -> str:
    """Fail the original deliveries left open, and say in words who got the email."""
    originals = Delivery.objects.filter(run_id=run.pk, kind=Delivery.Kind.ORIGINAL)
    originals.filter(status=Delivery.Status.QUEUED).update(
        status=Delivery.Status.FAILED, error="Not sent: the run failed at its deadline."
    )
    sending = originals.filter(status=Delivery.Status.SENDING)
    sending.filter(channel=Delivery.Channel.EMAIL).update(status=Delivery.Status.FAILED, error=runs.INTERRUPTED)
    sending.update(status=Delivery.Status.FAILED, error=destinations.INTERRUPTED)  # Slack, Teams, webhooks
    emails = originals.filter(channel=Delivery.Channel.EMAIL)
    total = emails.count()
    accepted = emails.filter(status__in=Delivery.ACCEPTED).count()
    if accepted:
        return f"{accepted} of {total} addresses got the email; resend it to the others from this run's page."
    if total:
        return f"None of its {total} addresses got the email; use Run now to try again."
    return "No email was sent; use Run now to try again."


def _who_got_their_report(run: ReportRun) -> str:
    """A per-recipient run's end in words: how many recipients got their own report."""
    total = run.parts.count()
    sent = run.parts.filter(status=parts.RunPart.Status.SENT).count()
    if sent:
        return (
            f"{sent:,} of {total:,} recipients got their report; the others are listed, with why, on this run's page."
        )
    return f"None of its {total:,} recipients got their report; use Run now to try again."


def _last_seen(run: ReportRun) -> str:
    seen = run.heartbeat_at or run.lease_expires_at
    return local_time(seen, run.period_timezone) if seen else "none"


def _noted(message: str) -> Case:
    """The run's notes with `message` added as a line: kept when a later attempt rewrites the error."""
    return Case(
        When(notes="", then=Value(message)),
        default=Concat(F("notes"), Value("\n" + message)),
        output_field=TextField(),
    )
