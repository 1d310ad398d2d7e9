"""Runs: the one orchestrator of fetch → render → deliver, and its bookkeeping.

The services (reporting.services) create runs here and work on them here; nothing in this
module enqueues work or writes audit events. The rules that make a scheduled period go
out at most once per address:

* one scheduled `ReportRun` per (report, period), by a unique constraint;
* a run is worked on by one worker at a time, claimed with a conditional UPDATE and a
  lease that the worker renews as it goes; a dead worker's lease runs out;
* one original `Delivery` per (run, address), by a unique constraint, written before the
  message is sent; a delivery found half-done ("sending") after a crash is not sent
  again, because the mail server may already have accepted it.

And the rule that nothing waits forever: every run not yet at an end carries a deadline
(`deadline_at`): the lease while a worker holds it, the queue deadline while it waits for
a worker, the retry time plus the queue deadline while it waits to retry. The deadline
sweep (reporting.services.deadlines) acts on any run past it.
"""

from __future__ import annotations

import logging
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from celery.exceptions import SoftTimeLimitExceeded
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F, Field, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from reporting import attachments, conf, destinations, logs, observability, parts, schedules
from reporting.addresses import check_addresses, check_some_address_is_valid
from reporting.archive import fail_queued_deliveries, send_deliveries, sender_of, snapshot_data
from reporting.models import Delivery, Recipient, Report, ReportRun
from reporting.periods import Period, period_for_slot
from reporting.pipeline import checks, conditions, deliver, fetch, render
from reporting.stage_inputs import (
    check_settings,
    fetch_request_for,
    period_for_day,
    plain_csv_wanted,
    render_request_for,
)
from reporting.timing import duration_in_words, local_time, retry_delay

log = logging.getLogger(__name__)
Status = ReportRun.Status
Trigger = ReportRun.Trigger

# A worker's clock may run a little behind beat's: a task that starts up to this much
# before a slot still belongs to that slot. Only without beat's own firing time: beat fires
# a slot at or after it by its own clock, and a slot it fires late (after a take-over, or a
# restart) must not be mistaken for the next one.
SLOT_TOLERANCE = timedelta(seconds=30)
# A scheduled run that starts later than this after its slot says so on its page.
LATE_AFTER = timedelta(seconds=60)


class RunNotClaimed(Exception):
    """Another worker holds the run; `retry_in` says when its lease runs out."""

    def __init__(self, retry_in: float):
        super().__init__(f"run is held by another worker for {retry_in:.0f}s more")
        self.retry_in = retry_in


class RunRetryLater(Exception):
    """A transient failure; the run waits to retry, in `retry_in` seconds."""

    def __init__(self, message: str, retry_in: float):
        super().__init__(message)
        self.retry_in = retry_in


@dataclass(frozen=True)
class RunRequest:
    report_id: int
    period: Period
    trigger: str
    requested_by_id: int | None = None
    scheduled_for: datetime | None = None
    recipients: list[str] | None = None  # default: the report's active recipients
    # A per-recipient report's run for only these recipients (a test send: whose report to send the tester).
    for_recipient_ids: list[int] | None = None


# --- deadlines --------------------------------------------------------------------------


def queue_deadline(*, after: float = 0) -> datetime:
    """When a run queued now (to start `after` seconds from now) must have been taken by a worker."""
    return timezone.now() + timedelta(seconds=after + conf.REPORTING["RUN_QUEUE_DEADLINE_SECONDS"])


def _lease() -> timedelta:
    return timedelta(seconds=conf.REPORTING["RUN_LEASE_SECONDS"])


# --- creating runs ----------------------------------------------------------------------


def start_scheduled_run(
    *, report_id: int, started_at: datetime | None = None, trigger: str = Trigger.SCHEDULE
) -> ReportRun | None:
    """The run to execute for the schedule slot at or before `started_at` (see open_scheduled_run)."""
    return open_scheduled_run(report_id=report_id, started_at=started_at, trigger=trigger)[0]


def open_scheduled_run(
    *, report_id: int, started_at: datetime | None = None, trigger: str = Trigger.SCHEDULE, savepoint: bool = True
) -> tuple[ReportRun | None, bool]:
    """Create the run for the schedule slot at or before `started_at`, once per period; (run, created).

    The run is the new one, or an existing one that has not finished; None when the report
    is disabled, unscheduled, fired on a day its schedule's rule skips, or its period's run has finished.
    `savepoint=False`, inside the caller's transaction: two statements fewer, and a period that
    has its run already raises IntegrityError, for the caller to look again outside that transaction.
    """
    report = Report.objects.select_related("periodic_task__crontab").get(pk=report_id)
    spec = schedules.spec_for(report)
    if not report.enabled or spec is None:
        log.info("report %s is disabled or has no schedule; nothing to run", report_id)
        return None, False
    moment = started_at or timezone.now() + SLOT_TOLERANCE
    # A schedule with a rule the crontab cannot say (the last business day of the month):
    # beat fires on every day that could be it; on the others there is nothing to run (and
    # not the rule's previous slot's period either).
    if not schedules.rule_keeps_latest_firing(spec, at_or_before=moment):
        log.info("report %s: beat fired on a day its schedule's rule skips; nothing to run", report_id)
        return None, False
    slot = schedules.latest_slot(spec, at_or_before=moment)
    if slot is None:
        return None, False
    period = period_for_slot(report.period_kind, slot, report_timezone(report))
    request = RunRequest(report_id=report.pk, period=period, trigger=trigger, scheduled_for=slot)
    try:
        return create_run(request, report=report, savepoint=savepoint), True
    except IntegrityError:
        if not savepoint:
            raise  # the caller's transaction cannot go on
        existing = ReportRun.objects.get(report=report, period_key=period.key, trigger__in=ReportRun.SCHEDULED_TRIGGERS)
        log.info("report %s period %s already has run %s (%s)", report_id, period.key, existing.pk, existing.status)
        # Not finished: a redelivered message after a crash, or a duplicate; the claim
        # in execute_run decides who works on it.
        return (existing if existing.status in ReportRun.WORKING else None), False


def report_timezone(report: Report) -> ZoneInfo:
    return ZoneInfo(report.timezone)


def create_run(request: RunRequest, *, report: Report | None = None, savepoint: bool = True) -> ReportRun:
    """Insert a queued run, with its deadline; IntegrityError when its scheduled period already has one.

    The run records the period, timezone and name as they are now, so that it reads and
    resends the same after the report is edited. `report` saves a query when the caller
    has already loaded the request's report. `savepoint=False`: no savepoint inside the caller's transaction.
    """
    report = report or Report.objects.get(pk=request.report_id)
    if report.is_per_recipient:
        return _create_per_recipient_run(request, report, savepoint=savepoint)
    recipients = request.recipients if request.recipients is not None else report.recipient_addresses()
    with transaction.atomic(savepoint=savepoint):
        return ReportRun.objects.create(**_run_fields(request, report), recipients=recipients)


def _run_fields(request: RunRequest, report: Report) -> dict:
    """What a new run records of its request and of the report as it is now (its period, timezone, name)."""
    return {
        "report": report,
        "report_name": report.name,
        "period_kind": request.period.kind,
        "period_timezone": report.timezone,
        "period_start": request.period.start,
        "period_end": request.period.end,
        "period_key": request.period.key,
        "period_label": request.period.label,
        "scheduled_for": request.scheduled_for,
        "trigger": request.trigger,
        "requested_by_id": request.requested_by_id,
        "deadline_at": queue_deadline(),
        "from_email": report.sender(),
        "reply_to": report.reply_to,
        "list_unsubscribe": report.list_unsubscribe,
    }


def _create_per_recipient_run(request: RunRequest, report: Report, *, savepoint: bool = True) -> ReportRun:
    """A run whose recipients each get their own report: the run, and one part per recipient, planned at once.

    `request.for_recipient_ids` limits it to those recipients; a test send makes their part
    (that recipient's report) and sends it to the tester.
    """
    people, address = list(report.active_recipients()), None
    if request.for_recipient_ids is not None:
        people = list(Recipient.objects.filter(pk__in=request.for_recipient_ids).order_by("email"))
    if request.trigger == Trigger.TEST:
        address = request.recipients[0] if request.recipients else None
    addresses = [address] if address else [person.email for person in people]
    split_field = report.split_field.strip() if report.per_recipient_data == Report.PerRecipientData.SPLIT else ""
    with transaction.atomic(savepoint=savepoint):
        run = ReportRun.objects.create(
            **_run_fields(request, report), recipients=addresses, per_recipient=True, split_field=split_field
        )
        parts.plan(run, report, people, address=address)
    return run


def create_manual_run(
    *, report_id: int, period_day: date | None, requested_by_id: int | None, for_recipient_ids: list[int] | None = None
) -> ReportRun:
    """A "Run now" for the period containing `period_day`, or the last complete period.

    `for_recipient_ids`: a per-recipient report's run for those recipients only.
    """
    report = Report.objects.get(pk=report_id)
    period = period_for_day(report, period_day)
    request = RunRequest(
        report_id=report_id,
        period=period,
        trigger=Trigger.MANUAL,
        requested_by_id=requested_by_id,
        for_recipient_ids=for_recipient_ids,
    )
    return create_run(request, report=report)


def create_test_run(
    *,
    report_id: int,
    period_day: date | None,
    user_email: str,
    requested_by_id: int,
    for_recipient_id: int | None = None,
) -> ReportRun:
    """A test send: live data, sent only to the requesting staff user, kept as a test run.

    For a per-recipient report, the report of the recipient `for_recipient_id`.
    """
    validate_email(user_email)
    report = Report.objects.get(pk=report_id)
    return create_run(
        RunRequest(
            report_id=report_id,
            period=period_for_day(report, period_day),
            trigger=Trigger.TEST,
            requested_by_id=requested_by_id,
            recipients=[user_email],
            for_recipient_ids=[for_recipient_id] if report.is_per_recipient and for_recipient_id else None,
        ),
        report=report,
    )


# --- executing runs ---------------------------------------------------------------------


def execute_run(*, run_id: int, final_attempt: bool | None = True) -> ReportRun:
    """Fetch, render and deliver the run, resuming after whatever an earlier attempt did.

    Raises RunNotClaimed when another worker holds the run, and RunRetryLater on a
    transient failure unless this is the final attempt. `final_attempt=None`: final once
    the run has been attempted more than FETCH_MAX_RETRIES times (what the workers use).
    Every line logged meanwhile carries the run's and the report's ids.
    """
    with logs.log_context(run_id=run_id):
        return _execute_run(run_id=run_id, final_attempt=final_attempt)


def _execute_run(*, run_id: int, final_attempt: bool | None) -> ReportRun:
    run = _claim(run_id)
    if run is None:
        return ReportRun.objects.get(pk=run_id)
    observability.run_started(run)
    if final_attempt is None:
        final_attempt = run.attempts > conf.REPORTING["FETCH_MAX_RETRIES"]
    try:
        if not run.recipients:
            raise render.RenderError("The report has no active recipients: add a recipient or a recipient list.")
        _check_addresses(run.recipients)
        if run.per_recipient:
            _fan_out(run)
            return run
        rendered = None
        if run.rendered_at is None:
            rendered = _fetch_check_render(run)
            if rendered is None:
                return run  # held by a data check, or skipped by its condition: nothing rendered, nothing sent
        _deliver_stage(run, rendered)
    except fetch.FetchError as exc:
        if exc.permanent or final_attempt:
            _fail(run, exc.message, exc.detail)
        else:
            _retry_later(run, exc.message, exc.retry_after)
    except deliver.DeliveryError as exc:  # the mail server could not be reached at all
        if final_attempt:
            fail_queued_deliveries(run.deliveries.filter(kind=Delivery.Kind.ORIGINAL, channel="email"), exc.message)
            destinations.deliver_to_destinations(run, keep_alive=lambda: _set(run))  # they need no mail server
            _finish(run)
        else:
            _retry_later(run, exc.message, None)
    except render.RenderError as exc:
        _fail(run, exc.message, exc.detail)
    except SoftTimeLimitExceeded:
        limit = conf.setting("CELERY_TASK_SOFT_TIME_LIMIT")
        _fail(
            run, f"The run took longer than its time limit ({limit} seconds) and was stopped.", traceback.format_exc()
        )
    except Exception as exc:
        log.exception("run %s failed unexpectedly", run.pk)
        _fail(run, f"Unexpected error: {type(exc).__name__}: {exc}", traceback.format_exc())
    return run


def _check_addresses(addresses: list[str]) -> None:
    try:
        check_some_address_is_valid(addresses)
    except ValidationError as exc:
        raise render.RenderError(" ".join(exc.messages)) from exc


def noted(notes: str, note: str) -> str:
    """`notes` with `note` added on a line of its own, once."""
    return notes if note in notes else f"{notes}\n{note}".strip()


def _claim(run_id: int) -> ReportRun | None:
    """Take the run for this worker: the run, or None when it is finished; RunNotClaimed when held.

    A run waiting for its first or next attempt is taken in one UPDATE; a run taken over from a
    worker that stopped (its lease ran out) says so in its notes.
    """
    now = timezone.now()
    waiting = ReportRun.objects.filter(pk=run_id, status__in=(Status.QUEUED, Status.RETRYING), lease_expires_at=None)
    if waiting.update(**_claimed_fields(now)):
        return ReportRun.objects.select_related("report__data_source").get(pk=run_id)
    before = (
        ReportRun.objects.filter(pk=run_id)
        .values("status", "lease_expires_at", "attempts", "notes", "period_timezone")
        .first()
    )
    if before is None:
        raise ReportRun.DoesNotExist(f"No run #{run_id}.")
    claimable = Q(status__in=(Status.QUEUED, Status.RETRYING), lease_expires_at__isnull=True) | Q(
        status__in=ReportRun.WORKING, lease_expires_at__lt=now
    )
    changes = _claimed_fields(now)
    resumed = _resumed_note(before, now)
    if resumed:
        changes["notes"] = noted(before["notes"], resumed)
    if ReportRun.objects.filter(claimable, pk=run_id).update(**changes):
        if resumed:
            log.warning("run %s: %s", run_id, resumed)
        return ReportRun.objects.select_related("report__data_source").get(pk=run_id)
    run = ReportRun.objects.get(pk=run_id)
    if run.status in ReportRun.WORKING and run.lease_expires_at:
        raise RunNotClaimed(max(1.0, (run.lease_expires_at - now).total_seconds() + 1))
    log.info("run %s is %s; nothing to do", run_id, run.status)
    return None


def _claimed_fields(now: datetime) -> dict[str, Any]:
    return {
        "lease_expires_at": now + _lease(),
        "deadline_at": now + _lease(),
        "heartbeat_at": now,
        "attempts": F("attempts") + 1,
        "started_at": Coalesce("started_at", now),
    }


_DOING = {
    Status.FETCHING: "fetching the data",
    Status.RENDERING: "rendering the email",
    Status.SENDING: "sending the email",
    Status.QUEUED: "starting the run",
}


def _resumed_note(before: Mapping[str, Any], now: datetime) -> str:
    """Why a worker takes over a run another worker had started, in words; "" for a fresh start."""
    lease = before["lease_expires_at"]
    if before["status"] not in _DOING or lease is None or lease >= now:
        return ""
    return (
        f"Resumed at {local_time(now, before['period_timezone'])} (attempt {before['attempts'] + 1}): "
        "the worker that was "
        f"{_DOING[before['status']]} stopped, and its message was delivered again. Nothing already sent "
        "is sent again."
    )


def _set(run: ReportRun, *, release: bool = False, **fields) -> None:
    """Write `fields` and renew the lease (the worker is alive), or `release` it when done."""
    now = timezone.now()
    fields["lease_expires_at"] = None if release else now + _lease()
    if not release:
        fields["deadline_at"] = fields["lease_expires_at"]
    fields["heartbeat_at"] = now  # the last sign of life, shown to staff and in a stuck run's error
    for name, value in fields.items():
        setattr(run, name, value)
    ReportRun.objects.filter(pk=run.pk).update(**fields)


def _check_fits(field: str, value: str, what: str, fix: str) -> None:
    """RenderError in words when `value` is longer than the run's `field` holds.

    Checked before writing: PostgreSQL refuses a longer value with a DataError, which would
    reach staff as "Unexpected error" (and SQLite would keep it whole, unbounded).
    """
    limit = _max_length(field)
    if len(value) > limit:
        raise render.RenderError(f"The {what} is {len(value):,} characters long; at most {limit:,} are allowed. {fix}")


def _cut(value: str, field: str) -> str:
    """`value` cut to what the run's `field` holds, ending in "…" when it was cut."""
    limit = _max_length(field)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _max_length(field: str) -> int:
    model_field = ReportRun._meta.get_field(field)
    assert isinstance(model_field, Field) and model_field.max_length is not None, field
    return model_field.max_length


def _renew_lease(run: ReportRun) -> None:
    """Renew the lease between messages once half of it has gone by (not on every message)."""
    lease = run.lease_expires_at
    if run.status in ReportRun.WORKING and lease and lease - timezone.now() < _lease() / 2:
        _set(run)


_SPOOL_BYTES = 1024 * 1024  # a fetched answer up to this size stays in memory, a larger one goes to disk


def _fetch_stage(run: ReportRun) -> object:
    report = run.report
    # A large answer's rows are streamed, not held (fetch.parse_answer).
    request = replace(
        fetch_request_for(report, run.period), records_path=report.records_path, csv_lines=plain_csv_wanted(report)
    )
    # With its query string, as it is sent and then kept (requests encodes the parameters alike).
    full_url = f"{request.url}?{urlencode(request.params)}" if request.params else request.url
    _check_fits("request_url", full_url, "request URL", "Shorten the report's path or query parameters.")
    _set(run, status=Status.FETCHING, request_url=request.url)
    # The answer goes to a file as it arrives (in memory while small): its bytes need not stay
    # in memory beside the data parsed from them, and the snapshot is copied from the file.
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as body:
        # The file holds the bytes as fetched, or the cleaned JSON when fields were dropped or the
        # secret came back in the answer: what viewers of the archive read never holds either.
        downloaded = fetch.download_for_archive(request, body)
        # Keep the bytes first: whatever happens next, what was fetched stays archived.
        run.data_snapshot.save("data.json", File(body), save=False)
    notes = run.notes
    for note in downloaded.notes:
        notes = noted(notes, note)
    # Where a redirect led is a record, not a request: a URL too long to keep is cut, the data kept.
    url = _cut(downloaded.url, "request_url")
    fetched: dict[str, Any] = {
        "data_snapshot": run.data_snapshot.name,
        "request_url": url,
        "notes": notes,
        "fetched_at": timezone.now(),
    }
    try:
        rows = fetch.select_rows(downloaded.data, report.records_path)
    except fetch.FetchError:
        _set(run, **fetched)  # the snapshot is kept, whatever is wrong with the rows
        raise
    # Checked, then rendered, next: one UPDATE fewer than a status of its own.
    _set(run, row_count=len(rows), status=Status.RENDERING, **fetched)
    return downloaded.data


@dataclass(frozen=True)
class _Rendered:
    """The email just archived and, on a first attempt, its deliveries: sent without reading either back."""

    email: deliver.OutgoingEmail
    deliveries: list[Delivery] | None  # those queued to send; None: read them back (an earlier attempt's)


def _fetch_check_render(run: ReportRun) -> _Rendered | None:
    """Fetch the data (or read the archived snapshot), check it and render; None when the run ended here.

    The parsed data lives only in this call, so it is freed before sending.
    """
    data = snapshot_data(run) if run.data_snapshot else _fetch_stage(run)
    if not _fit_to_send(run, data):
        return None
    return _render_stage(run, data)


def _fit_to_send(run: ReportRun, data: object) -> bool:
    """Check the data and the report's "Send only if"; False when the run ended here, held or skipped.

    Staff who send a held run anyway pass both. The condition judges scheduled runs only: Run
    now, re-runs and tests send.
    """
    if run.checks_released_by_id is not None:
        return True
    report = run.report
    rows = fetch.select_rows(data, report.records_path)
    judged = run.trigger in ReportRun.SCHEDULED_TRIGGERS
    condition = report.condition if judged else conditions.Condition()  # Condition(): always sent
    if report.send_only_if == conditions.CHANGED and run.trigger != Trigger.TEST:
        _set(run, rows_hash=conditions.rows_hash(rows))  # what the runs after this one compare with
    last_sent = last_sent_run(run.report_id, besides=run.pk) if condition.kind == conditions.CHANGED else None
    failures = checks.failed_checks(rows=rows, data=data, checks=check_settings(report), now=timezone.now())
    verdict = conditions.verdict(
        condition, rows=rows, failures=failures, data=data, digest=run.rows_hash, last_sent=last_sent
    )
    if verdict.held:
        _hold(run, verdict.held)
    elif verdict.skipped:
        _skip(run, verdict.skipped)
    return not (verdict.held or verdict.skipped)


def last_sent_run(report_id: int, *, besides: int | None = None) -> conditions.LastSent | None:
    """The report's latest sent run (not a test, nor `besides`): what "only if the data changed" compares with."""
    sent_runs = ReportRun.objects.filter(report_id=report_id, status__in=ReportRun.SENT_STATUSES).exclude(
        trigger=Trigger.TEST
    )
    if besides is not None:
        sent_runs = sent_runs.exclude(pk=besides)
    sent = (
        sent_runs.order_by("-created_at", "-pk")
        .values("pk", "rows_hash", "finished_at", "created_at", "period_timezone")
        .first()
    )
    if sent is None:
        return None
    when = (sent["finished_at"] or sent["created_at"]).astimezone(ZoneInfo(sent["period_timezone"] or "UTC"))
    return conditions.LastSent(run_id=sent["pk"], rows_hash=sent["rows_hash"], sent_on=f"{when.day} {when:%b %Y}")


def _skip(run: ReportRun, reason: str) -> None:
    """End the run without sending, as its report's condition says: the reason in its notes; nobody alerted.

    A per-recipient run's recipients waiting for their report are skipped with it.
    """
    log.info("run %s skipped: %s", run.pk, reason)
    with transaction.atomic():  # a run resumed after this must not find its recipients skipped but itself not
        if run.per_recipient:
            parts.skip_open(run.pk, reason)
        _end(run, status=Status.SKIPPED, error="", error_detail="", notes=noted(run.notes, reason))


# --- per-recipient runs -----------------------------------------------------------------


def _fan_out(run: ReportRun) -> None:
    """Ready each recipient's part to be worked on by any worker: split the one fetch's rows among them.

    The run then waits, without a lease, for its parts (a deadline the parts' progress moves on);
    the service publishes them. Held, like any run, when the data checks fail on the whole answer;
    skipped, with every recipient, when the whole answer does not meet the report's "Send only if".
    """
    if run.split_field and run.parts.filter(status=parts.Status.PENDING, data__isnull=True).exclude(key="").exists():
        data = snapshot_data(run) if run.data_snapshot else _fetch_stage(run)
        if not _fit_to_send(run, data):  # held, or skipped with its recipients: judged on the whole answer
            return
        if run.status != Status.RENDERING:  # the fetch just set it
            _set(run, status=Status.RENDERING)
        unmatched = parts.assign_rows(run, run.report, data)
        if unmatched:
            _set(run, notes=noted(run.notes, unmatched))
    _set(run, status=Status.SENDING, release=True, deadline_at=queue_deadline())
    # No part left open (every recipient failed at planning, or the run was published again after
    # its last part ended): no batch will be published to end the run, so it ends here.
    finish_if_done(run)


def execute_parts(*, run_id: int, part_ids: list[int]) -> list[tuple[int, float]]:
    """Make and send the given recipients' reports; the run ends when its last part does.

    Returns (part id, seconds) for each part that must wait: to retry, or for the lease of another worker.
    """
    with logs.log_context(run_id=run_id):
        return _execute_parts(run_id=run_id, part_ids=part_ids)


def _execute_parts(*, run_id: int, part_ids: list[int]) -> list[tuple[int, float]]:
    run = ReportRun.objects.select_related("report__data_source").get(pk=run_id)
    logs.bind(report_id=run.report_id)
    if run.status not in ReportRun.WORKING:
        return []  # ended (e.g. failed at its deadline): its open parts were closed with it
    retries = []
    connections = parts.Connections()
    renewed = _keep_waiting(run, None)
    loaded = parts.load(run_id, part_ids)  # those already at an end are not there: nothing to do for them
    taken = parts.take_ready(list(loaded.values()))  # one UPDATE for those only to render and send
    try:
        for part_id in part_ids:
            part = loaded.get(part_id)
            if part is None:
                continue
            if parts.keep(part) if part_id in taken else parts.take(part):
                with logs.log_context(part_id=part_id):
                    delay = parts.work_on(part, run=run, report=run.report, connections=connections)
            else:
                # Held by another worker, or by one that died (its message came back before the lease ran
                # out): look again then, since no other message carries this part.
                delay = parts.seconds_held(part_id)
            if delay is not None:
                retries.append((part_id, delay))
                _keep_waiting(run, None, after=delay)
            renewed = _keep_waiting(run, renewed)
    finally:
        connections.close()
    finish_if_done(run)
    return retries


def _keep_waiting(run: ReportRun, renewed: datetime | None, *, after: float = 0) -> datetime:
    """Move the waiting run's deadline on (its parts are moving), at most every half lease."""
    now = timezone.now()
    if renewed is not None and now - renewed < _lease() / 2 and not after:
        return renewed
    deadline = queue_deadline(after=after)
    ReportRun.objects.filter(pk=run.pk, status__in=ReportRun.WORKING, deadline_at__lt=deadline).update(
        deadline_at=deadline, heartbeat_at=now
    )
    return now


def finish_if_done(run: ReportRun) -> bool:
    """End a per-recipient run whose parts have all ended (one caller wins); False while some are open."""
    if run.parts.filter(status__in=parts.RunPart.OPEN).exists():
        return False
    summary = parts.summarize(run)
    now = timezone.now()
    run.refresh_from_db(fields=["notes", "status"])
    notes = noted(run.notes, summary.note)
    late = lateness_note(run, now)
    if late:
        notes = noted(notes, late)
    ended = ReportRun.objects.filter(pk=run.pk, status__in=ReportRun.WORKING).update(
        status=summary.status,
        error=summary.error,
        notes=notes,
        finished_at=now,
        deadline_at=None,
        lease_expires_at=None,
        heartbeat_at=now,
    )
    if ended:
        observability.run_ended(run, summary.status)
    return bool(ended)


def _hold(run: ReportRun, failures: list[str]) -> None:
    """Keep the snapshot, render and send nothing; the alert sweep tells the owner (alerted_at is null)."""
    log.info("run %s held by its data checks: %s", run.pk, " ".join(failures))
    _end(run, status=Status.HELD, error="\n".join(failures), error_detail="")


def _render_stage(run: ReportRun, data: object) -> _Rendered:
    if run.status != Status.RENDERING:  # the fetch sets it; not a run rendered from its archived data
        _set(run, status=Status.RENDERING)
    request = replace(
        render_request_for(run.report, run.period, data, test=run.trigger == Trigger.TEST),
        link_files=attachments.links_to_files(run.pk),
    )
    email = render.render(request)
    _check_fits("subject", email.subject, "rendered subject", "Shorten the subject template or the data it shows.")
    with transaction.atomic():
        email, linked = attachments.store(run, request, email, replace=not _first_attempt(run))
        # Whom it goes to is recorded with it, in the same transaction.
        queued = _record_deliveries(run) if _first_attempt(run) else None
        notes = noted(run.notes, linked) if linked else run.notes
        _set(
            run,
            subject=email.subject,
            body_html=email.html,
            body_text=email.text,
            rendered_at=timezone.now(),
            notes=notes,
            status=Status.SENDING,  # what comes next; one UPDATE fewer
        )
    outgoing = deliver.OutgoingEmail(
        subject=email.subject, html=email.html, text=email.text, attachments=email.attachments, **sender_of(run)
    )
    return _Rendered(outgoing, queued)


def _record_deliveries(run: ReportRun) -> list[Delivery] | None:
    """A first attempt's original delivery for each address (an invalid one failed, with why); those queued.

    Each address once, whatever its case. None when the database does not return the new rows' ids.
    """
    created = Delivery.objects.bulk_create(_original_deliveries(run))
    if any(delivery.pk is None for delivery in created):
        return None
    return [delivery for delivery in created if delivery.status == Delivery.Status.QUEUED]


def _original_deliveries(run: ReportRun) -> list[Delivery]:
    addresses = check_addresses(run.recipients)
    return [Delivery(run=run, address=address, kind=Delivery.Kind.ORIGINAL) for address in addresses.valid] + [
        Delivery(run=run, address=address[:254], kind=Delivery.Kind.ORIGINAL, status=Delivery.Status.FAILED, error=why)
        for address, why in addresses.invalid.items()
    ]


def _deliver_stage(run: ReportRun, rendered: _Rendered | None) -> None:
    """Send the email to each address not sent it yet, then to the destinations; the run ends.

    `rendered`: the email this attempt archived (None: an earlier attempt's, read back from the archive).
    """
    queued = rendered.deliveries if rendered is not None else None
    if queued is None:
        queued = _deliveries_to_resume(run)
    email = rendered.email if rendered is not None else None
    send_deliveries(run, queued, email=email, after_each=lambda: _renew_lease(run))
    # Then Slack, Teams and webhooks, by the same rules (reporting.destinations).
    destinations.deliver_to_destinations(run, keep_alive=lambda: _set(run), first_attempt=_first_attempt(run))
    _finish(run)


def _deliveries_to_resume(run: ReportRun) -> list[Delivery]:
    """The deliveries still to send after an earlier attempt (or when the first's were not returned).

    Every address is checked before the first send: an invalid one is recorded as failed, with the
    reason, and the others are sent. A delivery still "sending" is not sent again.
    """
    if run.status != Status.SENDING:  # resumed: rendered by an earlier attempt
        _set(run, status=Status.SENDING)
    Delivery.objects.bulk_create(_original_deliveries(run), ignore_conflicts=True)
    originals = run.deliveries.filter(kind=Delivery.Kind.ORIGINAL)
    if not _first_attempt(run):
        # Still "sending" from an attempt whose worker died: the server may have taken it.
        originals.filter(status=Delivery.Status.SENDING).update(status=Delivery.Status.FAILED, error=INTERRUPTED)
    return list(originals.filter(status=Delivery.Status.QUEUED))


def _first_attempt(run: ReportRun) -> bool:
    """Taken for the first time: no earlier attempt left files, deliveries or anything else to resume from."""
    return run.attempts == 1


INTERRUPTED = (
    "Interrupted while sending (the worker stopped). Not sent again automatically, "
    "because the mail server may already have accepted it; resend it if it did not arrive."
)


def _finish(run: ReportRun) -> None:
    originals = list(run.deliveries.filter(kind=Delivery.Kind.ORIGINAL))
    accepted = [d for d in originals if d.status in Delivery.ACCEPTED]
    failed = [d for d in originals if d.status not in Delivery.ACCEPTED]
    emails = [d for d in originals if d.channel == Delivery.Channel.EMAIL]
    failed_emails = [d for d in failed if d.channel == Delivery.Channel.EMAIL]
    failed_elsewhere = [d for d in failed if d.channel != Delivery.Channel.EMAIL]
    if not failed:
        status, error = Status.SENT, ""
    elif accepted:
        status, error = Status.PARTIALLY_SENT, ""
        if failed_emails:
            error = f"{len(failed_emails)} of {len(emails)} addresses did not get the email: " + _first_errors(
                failed_emails
            )
    else:
        status, error = Status.FAILED, ""
        if emails:
            error = "No address got the email: " + _first_errors(failed_emails)
    if failed_elsewhere:  # Slack, Teams, webhooks
        error = f"{error} {destinations.failures_in_words(failed_elsewhere)}".strip()
    _end(run, status=status, error=error)


def _first_errors(deliveries: list[Delivery]) -> str:
    shown = "; ".join(f"{d.to}: {d.error}" for d in deliveries[:3])
    return shown + (f"; and {len(deliveries) - 3} more" if len(deliveries) > 3 else "")


def _fail(run: ReportRun, message: str, detail: str = "") -> None:
    log.warning("run %s failed: %s", run.pk, message)
    _end(run, status=Status.FAILED, error=message, error_detail=detail)


def _end(run: ReportRun, **fields) -> None:
    """Bring the run to an end: no lease, no deadline; a scheduled run that went out late says so."""
    now = timezone.now()
    late = lateness_note(run, now)
    if late:
        fields["notes"] = noted(fields.get("notes", run.notes), late)
    _set(run, finished_at=now, deadline_at=None, release=True, **fields)
    observability.run_ended(run, fields["status"])


def lateness_note(run: ReportRun, now: datetime) -> str:
    """Why a scheduled run ended well after its slot, in words; "" when it was on time."""
    if run.scheduled_for is None or run.trigger not in ReportRun.SCHEDULED_TRIGGERS:
        return ""
    delay = now - run.scheduled_for
    if delay < LATE_AFTER:
        return ""
    created_late = run.created_at - run.scheduled_for
    if run.trigger == Trigger.CATCH_UP:
        cause = "beat did not fire it (beat or the broker was down); the catch-up sweep ran it"
    elif created_late >= LATE_AFTER:
        cause = f"beat was down or behind and fired it {duration_in_words(created_late)} late"
    else:
        cause = "it waited for a worker (the workers were busy, down, or its message was lost and published again)"
    slot = local_time(run.scheduled_for, run.period_timezone)
    return f"Ended {duration_in_words(delay)} after its slot ({slot}): {cause}."


def _retry_later(run: ReportRun, message: str, retry_after: float | None) -> None:
    """Wait to retry: no lease, and a deadline past the retry time; RunRetryLater tells the caller when."""
    retry_in = retry_delay(run.attempts - 1, retry_after)
    deadline = queue_deadline(after=retry_in)
    _set(run, status=Status.RETRYING, error=f"Will retry: {message}", release=True, deadline_at=deadline)
    raise RunRetryLater(message, retry_in)
