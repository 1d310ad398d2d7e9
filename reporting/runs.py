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

import base64
import logging
import math
import tempfile
import traceback
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from reporting import schedules
from reporting.models import DataSource, Delivery, Report, ReportRun, RunAttachment
from reporting.periods import Period, last_complete_period, period_containing, period_for_slot
from reporting.pipeline import checks, deliver, fetch, render

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
    period = period_for_day(report, period_day)
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
            period=period_for_day(report, period_day),
            trigger=Trigger.TEST,
            requested_by_id=requested_by_id,
            recipients=[user_email],
        ),
        report=report,
    )


def period_for_day(report: Report, period_day: date | None) -> Period:
    """The period containing `period_day` in the report's terms; without a day, the last complete one."""
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
        _check_some_address_is_valid(run.recipients)
        if run.rendered_at is None and not _fetch_check_render(run):
            return run  # held by a data check: nothing rendered, nothing sent
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


def release_held_run(*, run_id: int, released_by_id: int) -> bool:
    """Send a held run anyway: render its archived data without the checks, then deliver it.

    Queues the run on commit; False (and nothing queued) when the run is no longer held,
    e.g. a second click on "Send anyway".
    """
    return _leave_held(
        run_id,
        verb="Sent anyway",
        user_id=released_by_id,
        checks_released_by_id=released_by_id,
    )


def rerun_held_run(*, run_id: int, requested_by_id: int | None) -> bool:
    """Fetch fresh data for a held run and execute it again, checks and all.

    Queues the run on commit; False (and nothing queued) when the run is no longer held.
    """
    held = ReportRun.objects.filter(pk=run_id).values("data_snapshot", "legal_hold").first()
    left = _leave_held(
        run_id,
        verb="Re-run",
        user_id=requested_by_id,
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
    if left and held["data_snapshot"] and not held["legal_hold"]:
        # The rejected data is replaced by the fresh fetch; its reasons stay in the notes.
        storage = ReportRun._meta.get_field("data_snapshot").storage
        transaction.on_commit(lambda: storage.delete(held["data_snapshot"]))
    return left


def _leave_held(run_id: int, *, verb: str, user_id: int | None, **fields) -> bool:
    """Turn a held run back into a queued one (a conditional update: one caller wins) and queue it."""
    from reporting import tasks  # tasks import this module

    run = ReportRun.objects.filter(pk=run_id).only("error", "notes").first()
    if run is None:
        return False
    when = timezone.localtime().strftime("%d %b %Y %H:%M %Z")
    note = f"{verb} by {_user_name(user_id)} on {when}, after the data checks held it: {run.error}"
    with transaction.atomic():
        left = ReportRun.objects.filter(pk=run_id, status=Status.HELD).update(
            status=Status.QUEUED,
            error="",
            error_detail="",
            finished_at=None,
            lease_expires_at=None,
            notes=_noted(run.notes, note),
            **fields,
        )
        if left:
            tasks.execute_run.delay_on_commit(run_id=run_id)
    return bool(left)


def _user_name(user_id: int | None) -> str:
    user = get_user_model().objects.filter(pk=user_id).first() if user_id is not None else None
    return user.get_username() if user else "the system"


def _noted(notes: str, note: str) -> str:
    """`notes` with `note` added on a line of its own, once."""
    return notes if note in notes else f"{notes}\n{note}".strip()


def _claim(run_id: int) -> bool:
    """Take the run for this worker; False when it is finished, RunNotClaimed when held."""
    now = timezone.now()
    claimable = Q(status=Status.QUEUED, lease_expires_at__isnull=True) | Q(
        status__in=ReportRun.WORKING, lease_expires_at__lt=now
    )
    claimed = ReportRun.objects.filter(claimable, pk=run_id).update(
        lease_expires_at=now + _lease(),
        heartbeat_at=now,
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
    now = timezone.now()
    fields["lease_expires_at"] = None if release else now + _lease()
    fields["heartbeat_at"] = now  # the last sign of life, shown to staff and in a stuck run's error
    for name, value in fields.items():
        setattr(run, name, value)
    ReportRun.objects.filter(pk=run.pk).update(**fields)


_SPOOL_BYTES = 1024 * 1024  # a fetched answer up to this size stays in memory, a larger one goes to disk


def _fetch_stage(run: ReportRun) -> object:
    _set(run, status=Status.FETCHING)
    report = run.report
    request = fetch_request_for(report, Period.from_run(run))
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


def fetch_request_for(report: Report, period: Period) -> fetch.FetchRequest:
    """What to ask the report's data source for `period`; RenderError for a broken path or parameter."""
    context = {"period": period, "report": report}
    source = report.data_source
    return fetch.FetchRequest(
        base_url=source.base_url,
        path=render.render_string(report.path, context, what="path"),
        params={
            key: render.render_string(str(value), context, what=f"query parameter '{key}'")
            for key, value in report.query_params.items()
        },
        auth=_auth(source),
        connect_timeout=source.connect_timeout,
        read_timeout=source.read_timeout,
        verify_tls=source.verify_tls,
        max_bytes=settings.REPORTING["MAX_RESPONSE_BYTES"],
    )


def render_request_for(report: Report, period: Period, data: object) -> render.RenderRequest:
    """How to render the report's email from `data` for `period`."""
    return render.RenderRequest(
        template_name=report.template,
        subject_template=report.subject_template,
        report={"name": report.name, "slug": report.slug, "description": report.description},
        period=period,
        data=data,
        rows=fetch.select_rows(data, report.records_path),
        generated_at=timezone.now(),
        timezone=report.timezone,
        attach_csv=report.attach_csv,
        attach_xlsx=report.attach_xlsx,
        charts=render.chart_specs(report.charts),
        max_rows=report.email_max_rows,
    )


def _auth(source: DataSource) -> fetch.Auth:
    return fetch.Auth(
        scheme=source.auth_scheme, header_name=source.auth_header_name, secret_env_var=source.secret_env_var
    )


def _fetch_check_render(run: ReportRun) -> bool:
    """Fetch the data (or read the archived snapshot), check it and render; False when a check holds the run.

    The parsed data lives only in this call, so it is freed before sending.
    """
    data = snapshot_data(run) if run.data_snapshot else _fetch_stage(run)
    if run.checks_released_by_id is None:  # staff may send a held run anyway
        failures = checks.failed_checks(
            rows=fetch.select_rows(data, run.report.records_path),
            data=data,
            checks=check_settings(run.report),
            now=timezone.now(),
        )
        if failures:
            _hold(run, failures)
            return False
    _render_stage(run, data)
    return True


def check_settings(report: Report) -> checks.CheckSettings:
    """The data checks of `report`, as the checks module takes them."""
    return checks.CheckSettings(
        min_rows=report.check_min_rows,
        required_fields=checks.field_names(report.check_required_fields),
        max_age_field=report.check_max_age_field.strip(),
        max_age_hours=report.check_max_age_hours,
        timezone=report.timezone,
    )


def _hold(run: ReportRun, failures: list[str]) -> None:
    """Keep the snapshot, render and send nothing; the alert sweep tells the owner (alerted_at is null)."""
    log.info("run %s held by its data checks: %s", run.pk, " ".join(failures))
    _set(run, status=Status.HELD, error="\n".join(failures), error_detail="", finished_at=timezone.now(), release=True)


def _render_stage(run: ReportRun, data: object | None) -> None:
    _set(run, status=Status.RENDERING)
    report = run.report
    if data is None:
        data = snapshot_data(run)
    request = render_request_for(report, Period.from_run(run), data)
    email = render.render(request)
    too_large = _too_large_to_attach(email.attachments)
    with transaction.atomic():
        run.attachments.all().delete()
        links = []
        for index, attachment in enumerate(email.attachments):
            stored = RunAttachment.objects.create(
                run=run,
                filename=attachment.filename,
                mimetype=attachment.mimetype,
                size=len(attachment.content),
                file=ContentFile(attachment.content, name=attachment.filename),
                linked=index in too_large,
                content_id=attachment.content_id,
            )
            if stored.linked:
                links.append(_link_to(stored))
        notes = run.notes
        if links:
            email = _render_with_links(request, email, links)
            notes = _noted(notes, " ".join(too_large.values()))
        _set(
            run,
            subject=email.subject,
            body_html=email.html,
            body_text=email.text,
            rendered_at=timezone.now(),
            notes=notes,
        )


def _too_large_to_attach(attachments: list[render.Attachment]) -> dict[int, str]:
    """Which attachments to link instead of attach (index → why, in words): the largest, until the rest fit.

    Sizes are counted as encoded in the message (base64: 4 bytes for every 3), all attachments together.
    """
    limit = settings.REPORTING["MAX_ATTACHMENT_BYTES"]
    sizes = {  # the files; a chart shown inside the email stays in it
        index: 4 * math.ceil(len(attachment.content) / 3)
        for index, attachment in enumerate(attachments)
        if not attachment.content_id
    }
    total = sum(sizes.values())
    too_large = {}
    for index in sorted(sizes, key=lambda each: sizes[each], reverse=True):
        if total <= limit:
            break
        total -= sizes[index]
        over = "is over" if sizes[index] > limit else "would take the attachments over"
        too_large[index] = (
            f"{attachments[index].filename} ({size_in_words(sizes[index])} encoded) {over} the "
            f"{size_in_words(limit)} attachment limit; the email links to the archived file instead."
        )
    return too_large


def _link_to(attachment: RunAttachment) -> dict[str, str]:
    """What the email says about a linked attachment: its name, size and address in the admin."""
    path = reverse("admin:reporting_reportrun_attachment", args=[attachment.run_id, attachment.pk])
    return {
        "filename": attachment.filename,
        "size": size_in_words(attachment.size),
        "url": settings.REPORTING["SITE_URL"].rstrip("/") + path,
    }


def _render_with_links(
    request: render.RenderRequest, first: render.RenderedEmail, links: list[dict[str, str]]
) -> render.RenderedEmail:
    """The email rendered again, now that the archived files it links to have addresses."""
    linked = {link["filename"] for link in links}
    still_attached = [each for each in first.attachments if each.filename not in linked]
    extra = {
        "linked_attachments": links,
        "attach_csv": any(each.mimetype == "text/csv" for each in still_attached),  # "the attached CSV has them all"
    }
    email = render.render(replace(request, attach_csv=False, context_extra={**request.context_extra, **extra}))
    # A report's own text template may not include the generic link block: the links are added at its end.
    missing = [link for link in links if link["url"] not in email.text]
    text = email.text.rstrip("\n") + "\n\n" + "".join(map(_link_in_text, missing)) if missing else email.text
    return replace(email, text=text, attachments=still_attached)


def _link_in_text(link: dict[str, str]) -> str:
    return f"{link['filename']} ({link['size']}) is too large to attach. Download it from the archive:\n{link['url']}\n"


def size_in_words(size: int) -> str:
    """A size in bytes as people read it: "14.2 MB", "980 KB", "512 bytes"."""
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def _deliver_stage(run: ReportRun) -> None:
    _set(run, status=Status.SENDING)
    # Every address is checked before the first send: an invalid one is recorded as failed,
    # with the reason, and the others are sent (each address once, whatever its case).
    addresses = check_addresses(run.recipients)
    Delivery.objects.bulk_create(
        [Delivery(run=run, address=address, kind=Delivery.Kind.ORIGINAL) for address in addresses.valid]
        + [
            Delivery(
                run=run, address=address[:254], kind=Delivery.Kind.ORIGINAL, status=Delivery.Status.FAILED, error=why
            )
            for address, why in addresses.invalid.items()
        ],
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
    """The email exactly as archived: subject, both parts and the stored attachments (but the linked ones)."""
    attachments = []
    for attachment in run.attachments.filter(linked=False):  # a linked one is too large: the body links to it
        with attachment.file.open("rb") as stored:
            content = stored.read()
        attachments.append(
            render.Attachment(attachment.filename, content, attachment.mimetype, content_id=attachment.content_id)
        )
    return deliver.OutgoingEmail(subject=run.subject, html=run.body_html, text=run.body_text, attachments=attachments)


def html_with_images_inline(run: ReportRun) -> str:
    """The archived HTML with each image it shows (cid:) as a data: URI, for viewing in a browser."""
    html = run.body_html
    for attachment in run.attachments.exclude(content_id="").exclude(file=""):  # "": removed by retention
        with attachment.file.open("rb") as stored:
            encoded = base64.b64encode(stored.read()).decode("ascii")
        html = html.replace(f"cid:{attachment.content_id}", f"data:{attachment.mimetype};base64,{encoded}")
    return html


def queue_resend(*, run_id: int, addresses: list[str] | None, requested_by_id: int | None) -> list[Delivery]:
    """Record a resend of the archived email as queued deliveries; nothing is fetched again.

    `addresses` defaults to the run's original recipients. Raises ValidationError in
    words when the run has no archived email or an address is invalid.
    """
    run = ReportRun.objects.get(pk=run_id)
    if not run.is_rendered:
        why = {
            Status.HELD: "it was held by a data check: send it anyway or re-run it from its page",
            Status.MISSED: "it was missed: use Run now for its period",
        }.get(run.status, "it failed before rendering; re-run it instead")
        raise ValidationError(f"This run has no archived email to resend: {why}.")
    if run.attachments.filter(file="", linked=False).exists():
        raise ValidationError(
            "This run's attachments were removed by the retention of the archive (see its notes), so it cannot "
            "be resent as it was. Use Run now for its period to send it again with fresh data."
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
    checked = check_addresses(addresses)
    if checked.invalid:
        raise ValidationError(f"Not a valid email address: {', '.join(map(_readable_address, checked.invalid))}.")
    return checked.valid


@dataclass(frozen=True)
class CheckedAddresses:
    valid: list[str]  # each once, case-insensitively, in the order given
    invalid: dict[str, str]  # address → why it is refused, in words


def check_addresses(addresses: list[str]) -> CheckedAddresses:
    """Sort addresses into valid ones (de-duplicated case-insensitively) and invalid ones with the reason.

    Refused besides what Django's validator refuses: a line break or other control character
    (it could add a header) and more than 254 characters (what SMTP carries).
    """
    unique: dict[str, str] = {}
    invalid: dict[str, str] = {}
    for raw in addresses:
        address = raw.strip()
        if not address:
            continue
        problem = _address_problem(address)
        if problem:
            invalid[address] = f"{problem}; nothing was sent to it."
        else:
            unique.setdefault(address.lower(), address)
    return CheckedAddresses(valid=list(unique.values()), invalid=invalid)


def _address_problem(address: str) -> str:
    if any(not character.isprintable() for character in address):
        return "Not a valid email address (it contains a line break or another control character)"
    if len(address) > 254:
        return "Not a valid email address (longer than 254 characters)"
    try:
        validate_email(address)
    except ValidationError:
        return "Not a valid email address"
    return ""


def _readable_address(address: str) -> str:
    """An address as staff can read it: control characters shown escaped."""
    return address if address.isprintable() else repr(address)


def _check_some_address_is_valid(addresses: list[str]) -> None:
    """Fail the run in words, before fetching, when not one of its addresses could be sent to."""
    if not check_addresses(addresses).valid:
        shown = ", ".join(_readable_address(address) for address in addresses[:5])
        raise render.RenderError(f"None of the run's addresses is a valid email address ({shown}): nothing was sent.")


def snapshot_data(run: ReportRun) -> object | None:
    """The archived data as parsed JSON, or None when nothing was fetched."""
    if not run.data_snapshot:
        return None
    with run.data_snapshot.open("rb") as snapshot:
        return fetch.parse_json_file(snapshot)
