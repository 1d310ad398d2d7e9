"""Services that start runs or move them on: run now, send test, re-run, held runs, scheduled runs."""

from __future__ import annotations

import logging
import time
from datetime import date, datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from reporting import audit, conf, logs, parts, runs
from reporting.addresses import clean_addresses
from reporting.models import AuditEvent, Recipient, Report, ReportRun
from reporting.services.enqueue import EXECUTE_RUN, WORK_ON_PARTS, enqueue

log = logging.getLogger(__name__)
Action = AuditEvent.Action
Status = ReportRun.Status
User = AbstractBaseUser | AnonymousUser | None


# --- staff ------------------------------------------------------------------------------


def run_now(*, report_ids: list[int], period_day: date | None, actor: User) -> list[ReportRun]:
    """Queue a run of each report for the period containing `period_day` (default: the last complete one).

    ValidationError in words, and nothing queued, when a report has no active recipient.
    """
    reports = list(Report.objects.filter(pk__in=report_ids).order_by("pk"))
    empty = [report.name for report in reports if not report.recipient_addresses()]
    if empty:
        raise ValidationError(f"No active recipients: {', '.join(empty)}. Add a recipient or a recipient list first.")
    created = []
    with transaction.atomic():
        for report in reports:
            run = runs.create_manual_run(report_id=report.pk, period_day=period_day, requested_by_id=_user_id(actor))
            summary = f"Ran #{run.pk} now ({run.period_label}) for {audit.addresses_in_words(run.recipients)}."
            audit.record(actor=actor, action=Action.RAN, summary=summary, report=report, run=run)
            enqueue(EXECUTE_RUN, run_id=run.pk)
            created.append(run)
    return created


def send_test(
    *, report_ids: list[int], period_day: date | None, actor: AbstractBaseUser, for_recipient_id: int | None = None
) -> list[ReportRun]:
    """Queue a test run of each report, sent only to the actor's own address.

    A per-recipient report sends the report of the recipient `for_recipient_id` (by default its first one).
    """
    email = getattr(actor, "email", "")
    if not email:
        raise ValidationError("Your user has no email address: add one to your profile first.")
    try:
        clean_addresses([email])
    except ValidationError as exc:
        raise ValidationError(f"Your email address ({email}) is not valid: correct it in your profile first.") from exc
    created = []
    with transaction.atomic():
        for report in Report.objects.filter(pk__in=report_ids).order_by("pk"):
            whose = _test_recipient(report, for_recipient_id)
            run = runs.create_test_run(
                report_id=report.pk,
                period_day=period_day,
                user_email=email,
                requested_by_id=actor.pk,
                for_recipient_id=whose.pk if whose else None,
            )
            of = f" of {whose.email}'s report" if whose else ""
            summary = f"Sent a test{of} of run #{run.pk} ({run.period_label}) to {email}."
            audit.record(actor=actor, action=Action.TEST_SENT, summary=summary, report=report, run=run)
            enqueue(EXECUTE_RUN, run_id=run.pk)
            created.append(run)
    return created


def _test_recipient(report: Report, recipient_id: int | None) -> Recipient | None:
    """Whose report a test of a per-recipient report sends: the one chosen, which must be the report's."""
    if not report.is_per_recipient:
        return None
    recipients = report.active_recipients()
    whose = recipients.filter(pk=recipient_id).first() if recipient_id else recipients.first()
    if whose is None:
        raise ValidationError(f"{report.name}: choose one of its active recipients to send a test of their report.")
    return whose


def run_now_here(*, report_id: int, period_day: date | None, actor: User = None) -> ReportRun:
    """Run a report now in this process (a management command): create, audit, then work on it at once."""
    with transaction.atomic():
        run = runs.create_manual_run(report_id=report_id, period_day=period_day, requested_by_id=_user_id(actor))
        to = audit.addresses_in_words(run.recipients)
        summary = f"Ran #{run.pk} now from the command line ({run.period_label}) for {to}."
        audit.record(actor=actor, action=Action.RAN, summary=summary, run=run)
    run = runs.execute_run(run_id=run.pk)
    while run.per_recipient and run.status in ReportRun.WORKING:  # every recipient's report, here and now
        retries = runs.execute_parts(run_id=run.pk, part_ids=parts.open_part_ids(run.pk))
        if retries:
            time.sleep(min(delay for _part_id, delay in retries))
        run.refresh_from_db()
    return run


def rerun(*, run_ids: list[int], actor: User) -> list[ReportRun]:
    """Fetch and render each run's period again as a new run (the archived runs stay as they are)."""
    created = []
    with transaction.atomic():
        for old in ReportRun.objects.filter(pk__in=run_ids).select_related("report").order_by("pk"):
            run = runs.create_manual_run(
                report_id=old.report_id, period_day=old.period_start, requested_by_id=_user_id(actor)
            )
            summary = f"Re-ran run #{old.pk} ({old.period_label}) as run #{run.pk}."
            audit.record(actor=actor, action=Action.RERAN, summary=summary, report=old.report, run=run)
            enqueue(EXECUTE_RUN, run_id=run.pk)
            created.append(run)
    return created


def send_anyway(*, run_id: int, actor: User) -> bool:
    """Send a held run anyway: its archived data rendered without the checks, then delivered.

    False (nothing queued, nothing audited) when the run is no longer held, e.g. a second click.
    """
    return _leave_held(
        run_id,
        actor=actor,
        verb="Sent anyway",
        action=Action.RELEASED,
        summary="Sent held run #{run.pk} ({run.period_label}) anyway, despite: {reasons}",
        checks_released_by_id=_user_id(actor),
    )


def rerun_held(*, run_id: int, actor: User) -> bool:
    """Fetch fresh data for a held run and execute it again, checks and all; False when no longer held."""
    held = ReportRun.objects.filter(pk=run_id).values("data_snapshot", "legal_hold").first()
    left = _leave_held(
        run_id,
        actor=actor,
        verb="Re-run",
        action=Action.RERAN,
        summary="Re-ran held run #{run.pk} ({run.period_label}) with fresh data; it was held because: {reasons}",
        data_snapshot="",
        row_count=None,
        request_url="",
        fetched_at=None,
        subject="",
        body_html="",
        body_text="",
        rendered_at=None,
        checks_released_by_id=None,
        alerted_at=None,  # held again, the owner hears about it again
    )
    if left and held is not None and held["data_snapshot"] and not held["legal_hold"]:
        # The rejected data is replaced by the fresh fetch; its reasons stay in the notes.
        storage = ReportRun._meta.get_field("data_snapshot").storage
        transaction.on_commit(lambda: storage.delete(held["data_snapshot"]))
    return left


def _leave_held(run_id: int, *, actor: User, verb: str, action: str, summary: str, **fields: object) -> bool:
    """Turn a held run back into a queued one (a conditional update: one caller wins), audit it, queue it."""
    run = ReportRun.objects.filter(pk=run_id).select_related("report").first()
    if run is None:
        return False
    when = timezone.localtime().strftime("%d %b %Y %H:%M %Z")
    note = f"{verb} by {_user_name(actor)} on {when}, after the data checks held it: {run.error}"
    reasons = " ".join(run.error.splitlines())
    with transaction.atomic():
        left = ReportRun.objects.filter(pk=run_id, status=Status.HELD).update(
            status=Status.QUEUED,
            error="",
            error_detail="",
            finished_at=None,
            lease_expires_at=None,
            deadline_at=runs.queue_deadline(),
            notes=runs.noted(run.notes, note),
            **fields,
        )
        if left:
            audit.record(actor=actor, action=action, summary=summary.format(run=run, reasons=reasons), run=run)
            enqueue(EXECUTE_RUN, run_id=run_id)
    return bool(left)


def send_to_the_rest(*, run_id: int, actor: User) -> ReportRun:
    """A new run of a per-recipient run's period for the recipients whose report failed before it was sent.

    Those interrupted while sending are left out (the mail server may have taken theirs: resend
    it from their page if it did not arrive), and so are recipients no longer active.
    ValidationError in words when there is nobody to send to.
    """
    with transaction.atomic():
        # One click at a time: a second click (or a second member of staff) must not send them theirs twice.
        old = ReportRun.objects.select_for_update().select_related("report").get(pk=run_id)
        if not old.per_recipient or old.status in ReportRun.WORKING:
            raise ValidationError(f"Run #{old.pk} is not a finished run of a per-recipient report.")
        surely, _perhaps = parts.not_received(old)
        already = parts.sent_or_sending_later(old)
        ids = [
            part.recipient_id
            for part in surely
            if part.recipient_id
            and part.recipient is not None
            and part.recipient.active
            and part.recipient_id not in already
        ]
        if not ids:
            raise ValidationError(
                f"Every recipient of run #{old.pk} got their report, may have, or is being sent it by a later run: "
                "nobody to send to."
            )
        run = runs.create_manual_run(
            report_id=old.report_id, period_day=old.period_start, requested_by_id=_user_id(actor), for_recipient_ids=ids
        )
        summary = (
            f"Sent run #{old.pk} ({old.period_label}) again, as run #{run.pk}, to the {len(ids)} recipients "
            f"who did not get theirs: {audit.addresses_in_words(run.recipients)}."
        )
        audit.record(actor=actor, action=Action.RERAN, summary=summary, report=old.report, run=run)
        enqueue(EXECUTE_RUN, run_id=run.pk)
    return run


def send_part_anyway(*, part_id: int, actor: User) -> bool:
    """Send one recipient's report that was held with no rows, empty, as staff decided; False when no longer held."""
    with transaction.atomic():
        part = parts.release_held(part_id, released_by_id=_user_id(actor))
        if part is None:
            return False
        summary = (
            f"Sent {part.who}'s report of run #{part.run_id} ({part.run.period_label}) anyway, "
            "after it was held with no rows."
        )
        audit.record(actor=actor, action=Action.RELEASED, summary=summary, run=part.run)
        enqueue(WORK_ON_PARTS, run_id=part.run_id, part_ids=[part.pk])
    return True


# --- beat and the workers ---------------------------------------------------------------


def run_scheduled(*, report_id: int, fired_at: datetime | None) -> None:
    """The run of the slot beat fired at `fired_at` (default: now): created once per period, then worked on."""
    with logs.log_context(report_id=report_id):
        run = _open_scheduled_run(report_id, fired_at)
    if run is not None:
        work_on_run(run_id=run.pk)


def _open_scheduled_run(report_id: int, fired_at: datetime | None) -> ReportRun | None:
    """The slot's run: made now and audited in the same transaction, or the one made before (still open)."""
    try:
        with transaction.atomic():
            run, created = runs.open_scheduled_run(report_id=report_id, started_at=fired_at, savepoint=False)
            if created and run is not None:
                summary = f"Beat started scheduled run #{run.pk} ({run.period_label})."
                audit.record(actor=None, action=Action.SCHEDULED, summary=summary, run=run)
            return run
    except IntegrityError:  # the period has its run already (beat fired twice, or the message came again)
        return runs.open_scheduled_run(report_id=report_id, started_at=fired_at)[0]


def run_scheduled_batch(*, report_ids: list[int], fired_at: datetime) -> None:
    """Several reports fired by beat at the same moment; one report's unexpected error does not stop the rest."""
    for report_id in report_ids:
        with logs.log_context(report_id=report_id):
            try:
                run_scheduled(report_id=report_id, fired_at=fired_at)
            except Exception:
                log.exception("report %s: the scheduled run could not be started", report_id)


def work_on_run(*, run_id: int) -> None:
    """Work on a run in this worker; what must wait (another worker holds it, a retry) is published again.

    A per-recipient run's parts are published in batches, for any worker to take.
    """
    try:
        run = runs.execute_run(run_id=run_id, final_attempt=None)
    except runs.RunNotClaimed as exc:
        enqueue(EXECUTE_RUN, countdown=exc.retry_in, run_id=run_id)
    except runs.RunRetryLater as exc:
        enqueue(EXECUTE_RUN, countdown=exc.retry_in, run_id=run_id)
    else:
        if run.per_recipient and run.status == Status.SENDING:
            _publish_parts(run.pk, parts.open_part_ids(run.pk))


def work_on_parts(*, run_id: int, part_ids: list[int]) -> None:
    """Make and send a batch of a per-recipient run's reports; a part that must wait is published again."""
    for part_id, delay in runs.execute_parts(run_id=run_id, part_ids=part_ids):
        enqueue(WORK_ON_PARTS, countdown=delay, run_id=run_id, part_ids=[part_id])


def _publish_parts(run_id: int, part_ids: list[int]) -> None:
    size = conf.REPORTING["PARTS_PER_TASK"]
    for start in range(0, len(part_ids), size):
        enqueue(WORK_ON_PARTS, run_id=run_id, part_ids=part_ids[start : start + size])


def _user_id(actor: User) -> int | None:
    return actor.pk if actor is not None and actor.is_authenticated else None


def _user_name(actor: User) -> str:
    return actor.get_username() if actor is not None and actor.is_authenticated else "the system"
