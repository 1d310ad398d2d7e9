"""Runs: the one orchestrator of fetch → render → deliver, and its bookkeeping.

Every entry point (beat, "Run now", "Send test", resend, management commands) ends up
here. The rules that make a scheduled period go out at most once per address:

* one scheduled `ReportRun` per (report, period), by a unique constraint;
* a run is worked on by one worker at a time, claimed with a conditional UPDATE and a
  lease that the worker renews as it goes; a dead worker's lease runs out;
* one original `Delivery` per (run, address), by a unique constraint, written before the
  message is sent; a delivery found half-done ("sending") after a crash is not sent
  again, because the mail server may already have accepted it.
"""

from __future__ import annotations

import logging
import tempfile
import traceback
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from reporting import schedules
from reporting.models import DataSource, Delivery, Report, ReportRun, RunAttachment
from reporting.periods import Period, last_complete_period, period_containing, period_for_slot
from reporting.pipeline import deliver, fetch, render

log = logging.getLogger(__name__)
Status = ReportRun.Status
Trigger = ReportRun.Trigger

# A worker's clock may run a little behind beat's: a task that starts up to this much
# before a slot still belongs to that slot.
SLOT_TOLERANCE = timedelta(seconds=30)


class RunNotClaimed(Exception):
    """Another worker holds the run; `retry_in` says when its lease runs out."""

    def __init__(self, retry_in: float):
        super().__init__(f"run is held by another worker for {retry_in:.0f}s more")
        self.retry_in = retry_in


class RunRetryLater(Exception):
    """A transient failure; the run is queued again and should be retried."""

    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RunRequest:
    report_id: int
    period: Period
    trigger: str
    requested_by_id: int | None = None
    scheduled_for: datetime | None = None
    recipients: list[str] | None = None  # default: the report's active recipients


# --- creating runs ----------------------------------------------------------------------


def start_scheduled_run(
    *, report_id: int, started_at: datetime | None = None, trigger: str = Trigger.SCHEDULE
) -> ReportRun | None:
    """Create the run for the schedule slot at or before `started_at`, once per period.

    Returns the run to execute: the new one, or an existing one that has not finished;
    None when the report is disabled, unscheduled, or its period's run has finished.
    """
    report = Report.objects.select_related("periodic_task__crontab").get(pk=report_id)
    spec = schedules.spec_for(report)
    if not report.enabled or spec is None:
        log.info("report %s is disabled or has no schedule; nothing to run", report_id)
        return None
    moment = (started_at or timezone.now()) + SLOT_TOLERANCE
    slot = schedules.latest_slot(spec, at_or_before=moment)
    if slot is None:
        return None
    period = period_for_slot(report.period_kind, slot, ZoneInfo(report.timezone))
    request = RunRequest(report_id=report.pk, period=period, trigger=trigger, scheduled_for=slot)
    try:
        return create_run(request, report=report)
    except IntegrityError:
        existing = ReportRun.objects.get(report=report, period_key=period.key, trigger__in=ReportRun.SCHEDULED_TRIGGERS)
        log.info("report %s period %s already has run %s (%s)", report_id, period.key, existing.pk, existing.status)
        # Not finished: a redelivered message after a crash, or a duplicate; the claim
        # in execute_run decides who works on it.
        return existing if existing.status in ReportRun.WORKING else None


def create_run(request: RunRequest, *, report: Report | None = None) -> ReportRun:
    """Insert a queued run; raises IntegrityError when its scheduled period already has one.

    `report` saves a query when the caller has already loaded the request's report.
    """
    report = report or Report.objects.get(pk=request.report_id)
    recipients = request.recipients if request.recipients is not None else report.recipient_addresses()
    with transaction.atomic():
        return ReportRun.objects.create(
            report=report,
            period_start=request.period.start,
            period_end=request.period.end,
            period_key=request.period.key,
            scheduled_for=request.scheduled_for,
            trigger=request.trigger,
            requested_by_id=request.requested_by_id,
            recipients=recipients,
        )


def create_manual_run(*, report_id: int, period_day: date | None, requested_by_id: int | None) -> ReportRun:
    """A "Run now" for the period containing `period_day`, or the last complete period."""
    report = Report.objects.get(pk=report_id)
    period = _period_for_day(report, period_day)
    return create_run(
        RunRequest(report_id=report_id, period=period, trigger=Trigger.MANUAL, requested_by_id=requested_by_id),
        report=report,
    )


def create_test_run(*, report_id: int, period_day: date | None, user_email: str, requested_by_id: int) -> ReportRun:
    """A test send: live data, sent only to the requesting staff user, kept as a test run."""
    validate_email(user_email)
    report = Report.objects.get(pk=report_id)
    return create_run(
        RunRequest(
            report_id=report_id,
            period=_period_for_day(report, period_day),
            trigger=Trigger.TEST,
            requested_by_id=requested_by_id,
            recipients=[user_email],
        ),
        report=report,
    )


def _period_for_day(report: Report, period_day: date | None) -> Period:
    if period_day is None:
        return last_complete_period(report.period_kind, ZoneInfo(report.timezone))
    return period_containing(report.period_kind, period_day)


# --- executing runs ---------------------------------------------------------------------


def execute_run(*, run_id: int, final_attempt: bool = True) -> ReportRun:
    """Fetch, render and deliver the run, resuming after whatever an earlier attempt did.

    Raises RunNotClaimed when another worker holds the run, and RunRetryLater on a
    transient fetch failure unless this is the final attempt.
    """
    if not _claim(run_id):
        return ReportRun.objects.get(pk=run_id)
    run = ReportRun.objects.select_related("report__data_source").get(pk=run_id)
    try:
        if not run.recipients:
            raise render.RenderError("The report has no active recipients: add a recipient or a recipient list.")
        if run.rendered_at is None:
            # The parsed data is passed straight through, so it is freed before sending.
            _render_stage(run, None if run.data_snapshot else _fetch_stage(run))
        _deliver_stage(run)
    except fetch.FetchError as exc:
        if exc.permanent or final_attempt:
            _fail(run, exc.message, exc.detail)
        else:
            _requeue(run, exc.message)
            raise RunRetryLater(exc.message, exc.retry_after) from exc
    except deliver.DeliveryError as exc:  # the mail server could not be reached at all
        if final_attempt:
            _fail_queued_deliveries(run.deliveries.filter(kind=Delivery.Kind.ORIGINAL), exc.message)
            _finish(run)
        else:
            _requeue(run, exc.message)
            raise RunRetryLater(exc.message, None) from exc
    except render.RenderError as exc:
        _fail(run, exc.message, exc.detail)
    except SoftTimeLimitExceeded:
        limit = settings.CELERY_TASK_SOFT_TIME_LIMIT
        _fail(
            run, f"The run took longer than its time limit ({limit} seconds) and was stopped.", traceback.format_exc()
        )
    except Exception as exc:
        log.exception("run %s failed unexpectedly", run.pk)
        _fail(run, f"Unexpected error: {type(exc).__name__}: {exc}", traceback.format_exc())
    return run


def _claim(run_id: int) -> bool:
    """Take the run for this worker; False when it is finished, RunNotClaimed when held."""
    now = timezone.now()
    claimable = Q(status=Status.QUEUED, lease_expires_at__isnull=True) | Q(
        status__in=ReportRun.WORKING, lease_expires_at__lt=now
    )
    claimed = ReportRun.objects.filter(claimable, pk=run_id).update(
        lease_expires_at=now + _lease(),
        attempts=F("attempts") + 1,
        started_at=Coalesce("started_at", now),
    )
    if claimed:
        return True
    run = ReportRun.objects.get(pk=run_id)
    if run.status in ReportRun.WORKING and run.lease_expires_at:
        raise RunNotClaimed(max(1.0, (run.lease_expires_at - now).total_seconds() + 1))
    log.info("run %s is %s; nothing to do", run_id, run.status)
    return False


def _lease() -> timedelta:
    return timedelta(seconds=settings.REPORTING["RUN_LEASE_SECONDS"])


def _set(run: ReportRun, *, release: bool = False, **fields) -> None:
    """Write `fields` and renew the lease (the worker is alive), or `release` it when done."""
    fields["lease_expires_at"] = None if release else timezone.now() + _lease()
    for name, value in fields.items():
        setattr(run, name, value)
    ReportRun.objects.filter(pk=run.pk).update(**fields)


_SPOOL_BYTES = 1024 * 1024  # a fetched answer up to this size stays in memory, a larger one goes to disk


def _fetch_stage(run: ReportRun) -> object:
    _set(run, status=Status.FETCHING)
    report = run.report
    context = {"period": Period.from_run(run), "report": report}
    request = fetch.FetchRequest(
        base_url=report.data_source.base_url,
        path=render.render_string(report.path, context, what="path"),
        params={
            key: render.render_string(str(value), context, what=f"query parameter '{key}'")
            for key, value in report.query_params.items()
        },
        auth=_auth(report.data_source),
        connect_timeout=report.data_source.connect_timeout,
        read_timeout=report.data_source.read_timeout,
        verify_tls=report.data_source.verify_tls,
        max_bytes=settings.REPORTING["MAX_RESPONSE_BYTES"],
    )
    _set(run, request_url=request.url)
    # The answer goes to a file as it arrives (in memory while small): its bytes need not stay
    # in memory beside the data parsed from them, and the snapshot is copied from the file.
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as body:
        url, data = fetch.download(request, body)
        # Keep the exact bytes first: whatever happens next, what was fetched stays archived.
        run.data_snapshot.save("data.json", File(body), save=False)
    _set(run, data_snapshot=run.data_snapshot.name, request_url=url, fetched_at=timezone.now())
    _set(run, row_count=len(fetch.select_rows(data, report.records_path)))
    return data


def _auth(source: DataSource) -> fetch.Auth:
    return fetch.Auth(
        scheme=source.auth_scheme, header_name=source.auth_header_name, secret_env_var=source.secret_env_var
    )


def _render_stage(run: ReportRun, data: object | None) -> None:
    _set(run, status=Status.RENDERING)
    report = run.report
    if data is None:
        data = snapshot_data(run)
    email = render.render(
        render.RenderRequest(
            template_name=report.template,
            subject_template=report.subject_template,
            report={"name": report.name, "slug": report.slug, "description": report.description},
            period=Period.from_run(run),
            data=data,
            rows=fetch.select_rows(data, report.records_path),
            generated_at=timezone.now(),
            timezone=report.timezone,
            attach_csv=report.attach_csv,
            max_rows=report.email_max_rows,
        )
    )
    with transaction.atomic():
        run.attachments.all().delete()
        for attachment in email.attachments:
            RunAttachment.objects.create(
                run=run,
                filename=attachment.filename,
                mimetype=attachment.mimetype,
                size=len(attachment.content),
                file=ContentFile(attachment.content, name=attachment.filename),
            )
        _set(run, subject=email.subject, body_html=email.html, body_text=email.text, rendered_at=timezone.now())


def _deliver_stage(run: ReportRun) -> None:
    _set(run, status=Status.SENDING)
    Delivery.objects.bulk_create(
        [Delivery(run=run, address=address, kind=Delivery.Kind.ORIGINAL) for address in run.recipients],
        ignore_conflicts=True,
    )
    originals = run.deliveries.filter(kind=Delivery.Kind.ORIGINAL)
    # Still "sending" from an attempt whose worker died: the server may have taken it.
    originals.filter(status=Delivery.Status.SENDING).update(
        status=Delivery.Status.FAILED,
        error="Interrupted while sending (the worker stopped). Not sent again automatically, "
        "because the mail server may already have accepted it; resend it if it did not arrive.",
    )
    send_deliveries(run, list(originals.filter(status=Delivery.Status.QUEUED)))
    _finish(run)


def _finish(run: ReportRun) -> None:
    originals = list(run.deliveries.filter(kind=Delivery.Kind.ORIGINAL))
    accepted = [d for d in originals if d.status in Delivery.ACCEPTED]
    failed = [d for d in originals if d.status not in Delivery.ACCEPTED]
    if not failed:
        status, error = Status.SENT, ""
    elif accepted:
        status = Status.PARTIALLY_SENT
        error = f"{len(failed)} of {len(originals)} addresses did not get the email: " + _first_errors(failed)
    else:
        status, error = Status.FAILED, "No address got the email: " + _first_errors(failed)
    _set(run, status=status, error=error, finished_at=timezone.now(), release=True)


def _first_errors(deliveries: list[Delivery]) -> str:
    shown = "; ".join(f"{d.address}: {d.error}" for d in deliveries[:3])
    return shown + (f"; and {len(deliveries) - 3} more" if len(deliveries) > 3 else "")


def _fail(run: ReportRun, message: str, detail: str = "") -> None:
    log.warning("run %s failed: %s", run.pk, message)
    _set(run, status=Status.FAILED, error=message, error_detail=detail, finished_at=timezone.now(), release=True)


def _requeue(run: ReportRun, message: str) -> None:
    _set(run, status=Status.QUEUED, error=f"Will retry: {message}", release=True)


# --- sending and resending --------------------------------------------------------------


def send_deliveries(run: ReportRun, deliveries: list[Delivery]) -> None:
    """Send the archived email of `run` for each queued delivery, one connection for all."""
    if not deliveries:
        return
    email = archived_email(run)
    with deliver.connection() as backend:
        for delivery in deliveries:
            # Claim the row: whoever turns it from queued to sending sends it.
            if not Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.QUEUED).update(
                status=Delivery.Status.SENDING
            ):
                continue
            try:
                result = deliver.send(email, delivery.address, backend=backend)
            except deliver.DeliveryError as exc:
                _record_delivery(delivery, status=Delivery.Status.FAILED, error=exc.message)
            else:
                _record_delivery(
                    delivery,
                    status=Delivery.Status.SENT,
                    message_id=result.message_id,
                    esp_status=result.esp_status,
                    sent_at=timezone.now(),
                )
            _heartbeat(run)


def _heartbeat(run: ReportRun) -> None:
    """Renew the lease between messages once half of it has gone by (not on every message)."""
    lease = run.lease_expires_at
    if run.status in ReportRun.WORKING and lease and lease - timezone.now() < _lease() / 2:
        _set(run)


def _record_delivery(delivery: Delivery, **fields) -> None:
    for name, value in fields.items():
        setattr(delivery, name, value)
    Delivery.objects.filter(pk=delivery.pk).update(**fields)


def archived_email(run: ReportRun) -> deliver.OutgoingEmail:
    """The email exactly as archived: subject, both parts and the stored attachments."""
    attachments = []
    for attachment in run.attachments.all():
        with attachment.file.open("rb") as stored:
            attachments.append(render.Attachment(attachment.filename, stored.read(), attachment.mimetype))
    return deliver.OutgoingEmail(subject=run.subject, html=run.body_html, text=run.body_text, attachments=attachments)


def queue_resend(*, run_id: int, addresses: list[str] | None, requested_by_id: int | None) -> list[Delivery]:
    """Record a resend of the archived email as queued deliveries; nothing is fetched again.

    `addresses` defaults to the run's original recipients. Raises ValidationError in
    words when the run has no archived email or an address is invalid.
    """
    run = ReportRun.objects.get(pk=run_id)
    if not run.is_rendered:
        raise ValidationError(
            "This run has no archived email to resend (it failed before rendering). Re-run it instead."
        )
    targets = clean_addresses(addresses if addresses is not None else run.recipients)
    if not targets:
        raise ValidationError("There is no address to resend to.")
    return Delivery.objects.bulk_create(
        [
            Delivery(run=run, address=address, kind=Delivery.Kind.RESEND, requested_by_id=requested_by_id)
            for address in targets
        ]
    )


def send_resend(*, run_id: int, delivery_ids: list[int]) -> None:
    run = ReportRun.objects.get(pk=run_id)
    resends = run.deliveries.filter(pk__in=delivery_ids, kind=Delivery.Kind.RESEND)
    try:
        send_deliveries(run, list(resends))
    except deliver.DeliveryError as exc:
        _fail_queued_deliveries(resends, exc.message)


def _fail_queued_deliveries(deliveries, message: str) -> None:
    deliveries.filter(status=Delivery.Status.QUEUED).update(status=Delivery.Status.FAILED, error=message)


def clean_addresses(addresses: list[str]) -> list[str]:
    """Validate and de-duplicate addresses (case-insensitively); ValidationError names the bad ones."""
    unique: dict[str, str] = {}
    invalid = []
    for raw in addresses:
        address = raw.strip()
        if not address:
            continue
        try:
            validate_email(address)
        except ValidationError:
            invalid.append(address)
            continue
        unique.setdefault(address.lower(), address)
    if invalid:
        raise ValidationError(f"Not a valid email address: {', '.join(invalid)}.")
    return list(unique.values())


def snapshot_data(run: ReportRun) -> object | None:
    """The archived data as parsed JSON, or None when nothing was fetched."""
    if not run.data_snapshot:
        return None
    with run.data_snapshot.open("rb") as snapshot:
        return fetch.parse_json_file(snapshot)
