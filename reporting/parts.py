"""Per-recipient runs: each recipient's own report, made, sent and archived once.

A per-recipient run is the parent; each recipient's report is a `RunPart` of it, planned
when the run is created (one per address, by a unique constraint) and worked on by
whichever worker claims it (a conditional UPDATE and a lease, as a run is). A part has
its own data (their rows of one fetch, or their own fetch), its own rendered email and
files, and its own original `Delivery`, written before it is sent: a part interrupted
while sending is not sent again. One recipient's failure does not stop the others.

The orchestrator (reporting.runs) plans, fans out and finishes the run; this module does
one part at a time and sums them up. Nothing here enqueues work or writes audit events.
"""

from __future__ import annotations

import logging
import tempfile
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Any

from django.core.mail.backends.base import BaseEmailBackend
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from reporting import attachments, conf
from reporting.archive import send_deliveries, send_one, sender_of
from reporting.models import Delivery, Recipient, Report, ReportRun, RunPart
from reporting.pipeline import deliver, fetch, render, split
from reporting.stage_inputs import fetch_request_for, render_request_for
from reporting.timing import retry_delay

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)
Status = RunPart.Status
WhenNoRows = Report.WhenNoRows
INTERRUPTED = (
    "Interrupted while sending (the worker stopped). Not sent again automatically, "
    "because the mail server may already have accepted it; resend it if it did not arrive."
)
# Claimed a little before its retry time: the retry message and the database clock may disagree.
_CLOCK_SLACK = timedelta(seconds=2)


# --- planning ---------------------------------------------------------------------------


def plan(run: ReportRun, report: Report, recipients: list[Recipient], *, address: str | None = None) -> None:
    """One part per recipient (each address once); `address`: send them all there instead (a test send).

    In a split run a recipient without the attribute their rows are matched on fails at once,
    in words: nothing could be theirs.
    """
    attribute = report.split_attribute.strip() if run.split_field else ""
    planned: dict[str, RunPart] = {}
    for recipient in recipients:
        to = address or recipient.email
        part = RunPart(
            run=run,
            recipient=recipient,
            address=to,
            recipient_name=recipient.name,
            recipient_email=recipient.email,
            attributes=dict(recipient.attributes or {}),
            key=str((recipient.attributes or {}).get(attribute, "")) if attribute else "",
        )
        if attribute and not part.key:
            part.status, part.finished_at = Status.FAILED, timezone.now()
            part.error = (
                f"{recipient.email} has no '{attribute}' attribute, so no rows could be theirs: nothing was sent."
            )
        planned.setdefault(to.lower(), part)
    RunPart.objects.bulk_create(planned.values(), ignore_conflicts=True, batch_size=1000)


_ASSIGN_BATCH = 1000
_DATA = RunPart._meta.get_field("data")


def _write_rows(batch: list[tuple[Any, int, int]]) -> None:
    """Each part's (data, row count) by its id: one UPDATE statement, run for every part in a batch.

    Not bulk_update: it builds a CASE … WHEN of every part, which Django and the database take
    seconds to build and plan for 10,000 parts; psycopg sends these in a pipeline instead.
    """
    if not batch:
        return
    table, data, count, pk = (
        connection.ops.quote_name(name) for name in (RunPart._meta.db_table, "data", "row_count", "id")
    )
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET {data} = %s, {count} = %s WHERE {pk} = %s", batch)


def assign_rows(run: ReportRun, report: Report, data: Any) -> str:
    """Give each waiting part of a split run its own rows; a note on the rows that matched nobody ('' if none).

    The parts are taken in the order of their keys, as the rows come sorted by them: one key's
    rows are held at a time, not every recipient's.
    """
    rows = fetch.select_rows(data, report.records_path)
    pending = run.parts.filter(status=Status.PENDING, data__isnull=True).exclude(key="")
    waiting: list[tuple[str, int]] = sorted(pending.values_list("key", "pk"))
    divided = split.KeyOrder(rows, run.split_field, {key for key, _pk in waiting})
    groups = iter(divided)
    group = next(groups, None)
    batch: list[tuple[Any, int, int]] = []
    for key, pk in waiting:
        while group is not None and group[0] < key:  # the rows of the keys before this one
            group = next(groups, None)
        mine = group[1] if group is not None and group[0] == key else []
        data = _DATA.get_db_prep_save(split.data_with_rows(report.records_path, mine), connection)
        batch.append((data, len(mine), pk))
        if len(batch) == _ASSIGN_BATCH:
            _write_rows(batch)
            batch = []
    _write_rows(batch)
    if not divided.unmatched:
        return ""
    return (
        f"{divided.unmatched:,} of {len(rows):,} rows matched no recipient (their '{run.split_field}' was missing, "
        "empty, of another kind, or nobody's): they were sent to nobody."
    )


def open_part_ids(run_id: int) -> list[int]:
    waiting = RunPart.objects.filter(run_id=run_id, status__in=RunPart.OPEN).order_by("pk")
    return list(waiting.values_list("pk", flat=True))


# --- one part ---------------------------------------------------------------------------


def _lease() -> timedelta:
    return timedelta(seconds=conf.REPORTING["RUN_LEASE_SECONDS"])


def _fetching() -> timedelta:
    return timedelta(seconds=conf.REPORTING["FETCH_TOTAL_SECONDS"]) + _lease()


def load(run_id: int, part_ids: list[int]) -> dict[int, RunPart]:
    """The parts of a batch not yet at an end, read at once (one query for the batch, not one per part)."""
    return {part.pk: part for part in RunPart.objects.filter(run_id=run_id, pk__in=part_ids, status__in=RunPart.OPEN)}


def claim(part_id: int, run_id: int) -> RunPart | None:
    """Take the part for this worker, or None: finished, waiting to retry, or held by a live worker."""
    part = load(run_id, [part_id]).get(part_id)
    return part if part is not None and take(part) else None


def _claimable(now: datetime) -> Q:
    """Waiting and due (or nearly: see _CLOCK_SLACK), or held by a worker whose lease ran out."""
    due = Q(not_before__isnull=True) | Q(not_before__lte=now + _CLOCK_SLACK)
    return Q(status=Status.PENDING) & due | Q(status=Status.WORKING, lease_expires_at__lt=now)


def _as_read(parts: list[RunPart], *, since: int = 0) -> Q:
    """Only as they were read (`since` attempts later): a part another worker touched meanwhile is left alone.

    One term per number of attempts (most parts of a batch have the same), not one per part.
    """
    by_attempts: dict[int, list[int]] = {}
    for part in parts:
        by_attempts.setdefault(part.attempts + since, []).append(part.pk)
    return reduce(or_, (Q(pk__in=ids, attempts=attempts) for attempts, ids in by_attempts.items()))


def _taken(part: RunPart, lease: datetime) -> None:
    """Bring the part read earlier up to date in memory, as the UPDATE that took it left it."""
    part.status, part.lease_expires_at, part.not_before = Status.WORKING, lease, None
    part.attempts += 1


def take(part: RunPart) -> bool:
    """Take a part read by `load` for this worker: a conditional UPDATE, whose row count says who won.

    False when it is finished, waiting to retry, or held by a live worker. The part read
    earlier is brought up to date in memory rather than read again.
    """
    now = timezone.now()
    # A part whose data is still to be fetched is held for as long as the fetch may last (its own
    # bound) and then some, so that no other worker takes it meanwhile.
    lease = now + (_fetching() if part.data is None and part.rendered_at is None else _lease())
    taken = RunPart.objects.filter(_claimable(now), _as_read([part])).update(
        status=Status.WORKING, lease_expires_at=lease, not_before=None, attempts=F("attempts") + 1
    )
    if not taken:
        attempts = part.attempts
        part.refresh_from_db()
        return part.attempts != attempts and part.status in RunPart.OPEN and take(part)
    _taken(part, lease)
    return True


def take_ready(batch: list[RunPart]) -> set[int]:
    """Take at once, in one UPDATE, the parts of a batch whose data is here (to render and send only); their ids.

    Those it could not take (held by another worker, touched since they were read) are left
    to `take`, one by one, as are those still to be fetched: a fetch may last long enough for
    the lease of a part waiting its turn to run out. Before each part is worked on, `keep`
    makes sure it is still this worker's.
    """
    ready = [part for part in batch if part.data is not None or part.rendered_at is not None]
    if not ready:
        return set()
    now = timezone.now()
    lease = now + _lease()
    count = RunPart.objects.filter(_claimable(now), _as_read(ready)).update(
        status=Status.WORKING, lease_expires_at=lease, not_before=None, attempts=F("attempts") + 1
    )
    if count == len(ready):
        won = ready
    elif count:  # which: those now carrying this very lease, one attempt on from how they were read
        ours = RunPart.objects.filter(_as_read(ready, since=1), lease_expires_at=lease)
        mine = set(ours.values_list("pk", flat=True))
        won = [part for part in ready if part.pk in mine]
    else:
        won = []
    for part in won:
        _taken(part, lease)
    return {part.pk for part in won}


def keep(part: RunPart) -> bool:
    """Whether a part taken earlier (`take_ready`) is still this worker's, its lease renewed when half of it
    has gone by; False when its lease ran out and another worker took it meanwhile."""
    now = timezone.now()
    if part.lease_expires_at is not None and part.lease_expires_at - now > _lease() / 2:
        return True
    lease = now + _lease()
    kept = RunPart.objects.filter(pk=part.pk, attempts=part.attempts, status=Status.WORKING).update(
        lease_expires_at=lease
    )
    if kept:
        part.lease_expires_at = lease
    return bool(kept)


def seconds_held(part_id: int) -> float | None:
    """How long until the lease on a part being worked on runs out (at least 1 s); None when nobody holds it."""
    held = RunPart.objects.filter(pk=part_id, status=Status.WORKING).values_list("lease_expires_at", flat=True)
    lease = held.first()
    return None if lease is None else max(1.0, (lease - timezone.now()).total_seconds() + 1)


@dataclass
class Connections:
    """The connections the parts of one task share, each opened when first needed: one to the mail
    server, and one session to the data source (a fetch-per-recipient run's fetches kept alive)."""

    opened: BaseEmailBackend | None = None
    _context: Any = None
    _session: requests.Session | None = None

    def backend(self) -> BaseEmailBackend:
        if self.opened is None:
            self._context = deliver.connection()
            self.opened = self._context.__enter__()
        return self.opened

    def session(self, request: fetch.FetchRequest) -> requests.Session:
        if self._session is None:
            self._session = fetch.source_session(request)
        return self._session

    def close_mail(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self.opened = self._context = None

    def close(self) -> None:
        self.close_mail()
        if self._session is not None:
            self._session.close()
            self._session = None


def work_on(part: RunPart, *, run: ReportRun, report: Report, connections: Connections) -> float | None:
    """Make and send one recipient's report; the seconds to wait before retrying it, or None when it ended."""
    try:
        if part.rendered_at is None and not _prepare(part, run, report, connections):
            return None
        if part.rendered_at is None:
            email = _render(part, run, report)
            _send_first(part, run, email, connections.backend)
        else:
            _deliver(part, run, connections.backend)
    except fetch.FetchError as exc:
        tried = {"request_url": part.request_url}  # the URL their fetch asked for, to say what failed
        return _failed_or_retry(
            part, exc.message, exc.detail, permanent=exc.permanent, retry_after=exc.retry_after, **tried
        )
    except deliver.DeliveryError as exc:  # the mail server could not be reached at all
        connections.close_mail()
        return _failed_or_retry(part, exc.message, "", permanent=False, retry_after=None)
    except render.RenderError as exc:
        _end(part, Status.FAILED, error=exc.message, error_detail=exc.detail, **_fetched(part))
    except Exception as exc:
        log.exception("run %s: the report for %s failed unexpectedly", run.pk, part.address)
        message = f"Unexpected error: {type(exc).__name__}: {exc}"
        _end(part, Status.FAILED, error=message, error_detail=traceback.format_exc(), **_fetched(part))
    return None


def recipient_values(part: RunPart) -> dict[str, str]:
    return split.recipient_values(email=part.recipient_email, name=part.recipient_name, attributes=part.attributes)


def _prepare(part: RunPart, run: ReportRun, report: Report, connections: Connections) -> bool:
    """Their data (fetched now in a fetch-per-recipient run); False when they have no rows and are not sent."""
    if part.data is None:
        if run.split_field:
            raise render.RenderError("Their rows were not assigned (the run's data was not split); re-run it.")
        _fetch(part, run, report, connections)
    rows = fetch.select_rows(part.data, report.records_path)
    if rows or report.when_no_rows == WhenNoRows.SEND_EMPTY or part.released_by_id is not None:
        return True
    if report.when_no_rows == WhenNoRows.HOLD:
        _end(
            part,
            Status.HELD,
            error="They have no rows this period: held for staff, as the report says.",
            **_fetched(part),
        )
    else:
        _end(
            part, Status.SKIPPED, error="They have no rows this period: skipped, as the report says.", **_fetched(part)
        )
    return False


def _fetch(part: RunPart, run: ReportRun, report: Report, connections: Connections) -> None:
    request = fetch_request_for(report, run.period, recipient=recipient_values(part))
    # The part was taken with a lease as long as the fetch may last (see `take`).
    part.request_url = request.url[:2000]  # written with what comes of it
    with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as body:
        downloaded = fetch.download_for_archive(request, body, session=connections.session(request))
    # Kept with what is written next (their email, or why they got none): one UPDATE fewer per recipient.
    part.data, part.request_url = downloaded.data, downloaded.url[:2000]
    part._fetched_now = True


def _fetched(part: RunPart) -> dict:
    """What was fetched for the part in this attempt and is not written yet ({} when nothing)."""
    if not getattr(part, "_fetched_now", False):
        return {}
    return {"data": part.data, "request_url": part.request_url}


def _render(part: RunPart, run: ReportRun, report: Report) -> deliver.OutgoingEmail:
    """Render and archive the part's email and files; the email to send, as archived."""
    request = replace(
        render_request_for(
            report,
            run.period,
            part.data,
            recipient=recipient_values(part),
            key=part.key,
            test=run.trigger == ReportRun.Trigger.TEST,
        ),
        link_files=attachments.links_to_files(run.pk, part.pk),
    )
    email = render.render(request)
    if len(email.subject) > 998:
        raise render.RenderError(
            f"The rendered subject is {len(email.subject):,} characters long; at most 998 are allowed."
        )
    # A first attempt has no files to replace: one DELETE fewer per recipient (a later attempt replaces them).
    email, linked = attachments.store(run, request, email, part=part, replace=part.attempts > 1)
    _update(
        part,
        **_fetched(part),
        subject=email.subject,
        body_html=email.html,
        body_text=email.text,
        rendered_at=timezone.now(),
        error=linked,
        lease_expires_at=timezone.now() + _lease(),
        row_count=len(request.rows),
    )
    part._fetched_now = False
    return deliver.OutgoingEmail(
        subject=email.subject, html=email.html, text=email.text, attachments=email.attachments, **sender_of(run)
    )


def _send_first(
    part: RunPart, run: ReportRun, email: deliver.OutgoingEmail, backend: Callable[[], BaseEmailBackend]
) -> None:
    """Send the email just rendered: its delivery written as "sending" first, then sent, then recorded.

    Three statements instead of reading back what was just written; when a delivery already
    exists (an earlier attempt got that far), the careful way of `_deliver` takes over.
    """
    # In autocommit (a worker) a refused INSERT leaves nothing to roll back: no transaction of
    # its own (two round trips fewer per recipient); inside one (a test, a caller's), a savepoint.
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            delivery = Delivery.objects.create(
                run=run, part=part, address=part.address, kind=Delivery.Kind.ORIGINAL, status=Delivery.Status.SENDING
            )
    except IntegrityError:
        _deliver(part, run, backend)
        return
    send_one(email, delivery, backend())
    _ended_by(part, delivery)


def _deliver(part: RunPart, run: ReportRun, backend: Callable[[], BaseEmailBackend]) -> None:
    """Send the archived email, resuming after an earlier attempt: a delivery left "sending" is never sent again."""
    Delivery.objects.bulk_create(
        [Delivery(run=run, part=part, address=part.address, kind=Delivery.Kind.ORIGINAL)], ignore_conflicts=True
    )
    originals = part.deliveries.filter(kind=Delivery.Kind.ORIGINAL)
    # Still "sending" from an attempt whose worker died: the server may have taken it.
    originals.filter(status=Delivery.Status.SENDING).update(status=Delivery.Status.FAILED, error=INTERRUPTED)
    queued = list(originals.filter(status=Delivery.Status.QUEUED))
    if queued:
        send_deliveries(part, queued, backend=backend())
    original = originals.first()
    assert original is not None, "made above when missing"
    _ended_by(part, original)


def _ended_by(part: RunPart, delivery: Delivery) -> None:
    if delivery.status in Delivery.ACCEPTED:
        _end(part, Status.SENT, error=part.error)  # a note on a linked attachment stays
    else:
        _end(part, Status.FAILED, error=delivery.error)


def _failed_or_retry(
    part: RunPart, message: str, detail: str, *, permanent: bool, retry_after: float | None, **fields: object
) -> float | None:
    if permanent or part.attempts > conf.REPORTING["FETCH_MAX_RETRIES"]:
        _end(part, Status.FAILED, error=message, error_detail=detail, **fields)
        return None
    delay = retry_delay(part.attempts - 1, retry_after)
    _update(
        part,
        status=Status.PENDING,
        lease_expires_at=None,
        not_before=timezone.now() + timedelta(seconds=delay),
        error=f"Will retry: {message}",
        **fields,
    )
    return delay


def _end(part: RunPart, status: str, **fields: object) -> None:
    _update(part, status=status, lease_expires_at=None, finished_at=timezone.now(), **fields)


def _update(part: RunPart, **fields: object) -> None:
    for name, value in fields.items():
        setattr(part, name, value)
    RunPart.objects.filter(pk=part.pk).update(**fields)


# --- the run as a whole -----------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    status: str  # the run's status
    error: str  # who did not get their report, and why
    note: str  # the counts, in words


def summarize(run: ReportRun) -> Summary:
    """The run's end from its parts: sent, partially sent, held or failed, naming who did not get theirs."""
    counts = dict(run.parts.values_list("status").annotate(Count("pk")).order_by())
    sent, skipped = counts.get(Status.SENT, 0), counts.get(Status.SKIPPED, 0)
    held, failed = counts.get(Status.HELD, 0), counts.get(Status.FAILED, 0)
    total = sum(counts.values())
    note = (
        f"Recipient reports: {sent:,} of {total:,} sent, {skipped:,} skipped with no rows, "
        f"{held:,} held, {failed:,} failed."
    )
    if not failed and not held:
        return Summary(status=ReportRun.Status.SENT, error="", note=note)
    problems = []
    if failed:
        problems.append(f"{failed:,} of {total:,} recipients did not get their report: " + _named(run, Status.FAILED))
    if held:
        problems.append(f"{held:,} recipients' reports are held for staff: " + _named(run, Status.HELD))
    if sent:
        status = ReportRun.Status.PARTIALLY_SENT
    elif failed:
        status = ReportRun.Status.FAILED
    else:
        status = ReportRun.Status.HELD
    return Summary(status=status, error="\n".join(problems), note=note)


def _named(run: ReportRun, status: str, shown: int = 10) -> str:
    parts = list(run.parts.filter(status=status).order_by("pk")[: shown + 1])
    named = "; ".join(f"{part.who}: {part.error}" for part in parts[:shown])
    if len(parts) > shown:
        more = run.parts.filter(status=status).count() - shown
        named += f"; and {more:,} more (see the run's recipient reports)"
    return named


def not_received(run: ReportRun) -> tuple[list[RunPart], list[RunPart]]:
    """Who of a finished run did not get their report: (surely not, perhaps) — a part failed before its email was
    sent, or while it was being sent (the mail server may have accepted it)."""
    failed = list(run.parts.filter(status=Status.FAILED).select_related("recipient").order_by("pk"))
    interrupted = set(
        Delivery.objects.filter(part__in=failed, kind=Delivery.Kind.ORIGINAL, error=INTERRUPTED).values_list(
            "part_id", flat=True
        )
    )
    surely = [part for part in failed if part.pk not in interrupted]
    return surely, [part for part in failed if part.pk in interrupted]


def sent_or_sending_later(run: ReportRun) -> set[int]:
    """Recipients given their report of `run`'s period by a later run of its report (sent, or on its way)."""
    later = RunPart.objects.filter(
        run__report_id=run.report_id,
        run__period_key=run.period_key,
        run__created_at__gt=run.created_at,
        status__in=(*RunPart.OPEN, Status.SENT),
        recipient__isnull=False,
    ).exclude(run__trigger=ReportRun.Trigger.TEST)
    return set(later.values_list("recipient_id", flat=True))


def release_held(part_id: int, *, released_by_id: int | None) -> RunPart | None:
    """A part held with no rows, waiting again to be sent (empty) anyway, and its run working again; None when
    it is no longer held (a second click). The run's status is worked out again when the part ends."""
    released = RunPart.objects.filter(pk=part_id, status=Status.HELD).update(
        status=Status.PENDING, released_by_id=released_by_id, error="", finished_at=None, lease_expires_at=None
    )
    if not released:
        return None
    part = RunPart.objects.select_related("run").get(pk=part_id)
    ReportRun.objects.filter(pk=part.run_id).exclude(status__in=ReportRun.WORKING).update(
        status=ReportRun.Status.SENDING,
        finished_at=None,
        lease_expires_at=None,
        deadline_at=timezone.now() + timedelta(seconds=conf.REPORTING["RUN_QUEUE_DEADLINE_SECONDS"]),
    )
    return part


def skip_open(run_id: int, reason: str) -> int:
    """Skip the parts not yet at an end (the run was skipped by its report's condition); how many."""
    return RunPart.objects.filter(run_id=run_id, status__in=RunPart.OPEN).update(
        status=Status.SKIPPED, error=reason, lease_expires_at=None, finished_at=timezone.now()
    )


def close_open(run_id: int, message: str) -> int:
    """Fail the parts not yet at an end (the run failed at its deadline); how many."""
    now = timezone.now()
    return RunPart.objects.filter(run_id=run_id, status__in=RunPart.OPEN).update(
        status=Status.FAILED, error=message, lease_expires_at=None, finished_at=now
    )
