"""Destinations besides email: each run's message to Slack, Teams and webhooks, delivered as an email is.

Each destination of a run is one `Delivery` (its `channel` and `destination` set, no address):

* one original per (run, destination), by a unique constraint, recorded with what it will send
  (its `payload`) before anything is sent;
* claimed by one conditional UPDATE (queued → sending): whoever turns it "sending" sends it;
* one found "sending" when a run is resumed (its worker stopped mid-send) is failed as
  interrupted and never sent again automatically: the service may already have it;
* its end (sent or failed, in words) and the service's answer (status, Slack's message and file
  ids, the tries that had to wait) are kept on it, without any secret;
* a resend sends the archived payload again, as a new delivery.

The orchestrator (reporting.runs) delivers a run's destinations after its emails; a failed one
makes the run partially sent, and its owner is alerted as for an email.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from reporting import conf
from reporting.archive import own_attachments, snapshot_data
from reporting.models import Delivery, Destination, ReportRun, RunAttachment
from reporting.pipeline import fetch, layout, outgoing, render
from reporting.stage_inputs import layout_of

log = logging.getLogger(__name__)
Channel = Delivery.Channel
INTERRUPTED = (
    "Interrupted while sending (the worker stopped). Not sent again automatically, because the service may "
    "already have it; resend it if it did not arrive."
)
FILE_EXTENSIONS = {"attach_csv": ".csv", "attach_xlsx": ".xlsx"}


def deliver_to_destinations(
    run: ReportRun,
    *,
    keep_alive: Callable[[], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    first_attempt: bool = False,
) -> None:
    """Record a delivery for each of the report's enabled destinations (once per run), then send those queued.

    Not for a test send, nor a per-recipient run. `keep_alive` is called before each wait to retry
    and after each destination (the orchestrator renews its lease there); `sleep` is how to wait.
    `first_attempt`: the run's first, so no delivery was recorded before (one query when the report has
    no destination, instead of four).
    """
    if run.trigger == ReportRun.Trigger.TEST or run.per_recipient:
        return
    enabled = list(run.report.destinations.filter(enabled=True).order_by("pk"))
    if first_attempt and not enabled:
        return  # nothing was recorded before, and there is nothing to record
    _record_originals(run, enabled, recorded=set() if first_attempt else None)
    originals = run.deliveries.filter(kind=Delivery.Kind.ORIGINAL).exclude(channel=Channel.EMAIL)
    # Still "sending" from an attempt whose worker died: the service may have taken it.
    originals.filter(status=Delivery.Status.SENDING).update(status=Delivery.Status.FAILED, error=INTERRUPTED)
    queued = list(originals.filter(status=Delivery.Status.QUEUED).select_related("destination").order_by("pk"))
    send_destination_deliveries(queued, keep_alive=keep_alive, sleep=sleep)


def _record_originals(run: ReportRun, enabled: list[Destination], *, recorded: set[int] | None = None) -> None:
    """The run's original delivery for each enabled destination that has none yet, queued with its payload."""
    if recorded is None:
        recorded = set(run.deliveries.filter(destination__isnull=False).values_list("destination_id", flat=True))
    missing = [destination for destination in enabled if destination.pk not in recorded]
    if not missing:
        return
    try:
        message, problem = message_for(run), ""
    except (render.RenderError, fetch.FetchError) as exc:  # e.g. a layout made invalid since the run rendered
        message, problem = None, f"Not sent: its message could not be made. {exc.message}"
    Delivery.objects.bulk_create(
        [_original(run, destination, message, problem) for destination in missing], ignore_conflicts=True
    )


def _original(run: ReportRun, destination: Destination, message: outgoing.Message | None, problem: str) -> Delivery:
    delivery = Delivery(
        run=run,
        kind=Delivery.Kind.ORIGINAL,
        channel=destination.kind,
        destination=destination,
        target=destination.described,
    )
    if message is None:
        delivery.status, delivery.error = Delivery.Status.FAILED, problem
    else:
        delivery.payload = payload_for(destination, message)
    return delivery


def payload_for(destination: Destination, message: outgoing.Message) -> dict:
    """What `destination` is sent of `message`: its kind's payload, with only the files it was chosen to get."""
    wanted = tuple(extension for flag, extension in FILE_EXTENSIONS.items() if getattr(destination, flag))
    files = [file for file in message.files if file.filename.lower().endswith(wanted)] if wanted else []
    return outgoing.payload_for(destination.kind, replace(message, files=files), channel=destination.slack_channel)


def message_for(run: ReportRun) -> outgoing.Message:
    """What every destination is told of `run`: the report, period, headline figures, rows and links."""
    site = conf.REPORTING["SITE_URL"].rstrip("/")
    files = [
        outgoing.File(
            filename=attachment.filename,
            size=attachment.size,
            url=site + reverse("admin:reporting_reportrun_attachment", args=[run.pk, attachment.pk]),
        )
        for attachment in own_attachments(run).filter(content_id="").exclude(file="")  # not the charts in the email
    ]
    return outgoing.Message(
        report={"id": run.report_id, "name": run.report_name or run.report.name, "slug": run.report.slug},
        period={"start": run.period_start.isoformat(), "end": run.period_end.isoformat(), "label": run.period_label},
        headline=headline_of(run),
        row_count=run.row_count,
        run={"id": run.pk, "url": site + run.get_absolute_url()},
        files=files,
    )


def headline_of(run: ReportRun) -> list[dict[str, str]]:
    """The report's headline figures as the email shows them (label, text), from the archived data; [] without."""
    report = run.report
    designed = layout_of(report)
    if designed is None or not designed.headline:
        return []
    data = snapshot_data(run)
    rows = fetch.select_rows(data, report.records_path)
    zone = ZoneInfo(run.period_timezone or report.timezone)
    laid = layout.lay_out(designed, data, rows, shown=0, locale=report.locale, zone=zone)
    return [{"label": figure["label"], "text": figure["text"]} for figure in laid["headline"]]


# --- sending --------------------------------------------------------------------------------------


def send_destination_deliveries(
    deliveries: list[Delivery],
    *,
    keep_alive: Callable[[], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Send each queued delivery that this worker claims (queued → sending); the others are someone else's."""
    for delivery in deliveries:
        if not Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.QUEUED).update(
            status=Delivery.Status.SENDING
        ):
            continue
        send_one(delivery, keep_alive=keep_alive, sleep=sleep)
        if keep_alive is not None:
            keep_alive()


def send_one(
    delivery: Delivery,
    *,
    keep_alive: Callable[[], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Send a delivery this worker holds ("sending"), and record how it ended and what the service said."""
    destination = delivery.destination
    try:
        if destination is None:
            raise outgoing.OutgoingError("The destination was deleted before it was sent.", permanent=True)
        target = outgoing.target_from_environment(
            kind=delivery.channel,
            secret_env_var=destination.secret_env_var,
            channel=delivery.payload.get("channel", ""),
            signing_secret_env_var=destination.signing_secret_env_var,
        )
        answer = outgoing.send(
            target,
            delivery.payload,
            delivery_id=delivery.pk,
            files=_file_contents(delivery),
            attempts=outgoing.Attempts(policy=outgoing.RetryPolicy.from_settings(), sleep=sleep, on_wait=keep_alive),
            done=delivery.answer,
            on_progress=lambda progress: _record(delivery, answer=progress),
        )
    except outgoing.OutgoingError as exc:
        log.warning("delivery %s to %s failed: %s", delivery.pk, delivery.target, exc.message)
        _record(delivery, status=Delivery.Status.FAILED, error=exc.message, answer=exc.answer or delivery.answer)
    except Exception as exc:  # not `{exc}`: a library's message may quote a URL or a token
        log.exception("delivery %s to %s failed unexpectedly", delivery.pk, delivery.target)
        _record(delivery, status=Delivery.Status.FAILED, error=f"Unexpected error: {type(exc).__name__}.")
    else:
        status = answer.get("status")
        _record(
            delivery,
            status=Delivery.Status.SENT,
            answer=answer,
            esp_status=f"HTTP {status}" if status else "",
            message_id=str(answer.get("ts") or "")[:300],
            sent_at=timezone.now(),
        )


def _file_contents(delivery: Delivery) -> list[tuple[str, bytes]]:
    """The archived files a Slack delivery uploads, by name; OutgoingError when retention removed one."""
    if delivery.channel != Channel.SLACK:
        return []
    contents = []
    for filename in delivery.payload.get("files", []):
        attachment = RunAttachment.objects.filter(run_id=delivery.run_id, part__isnull=True, filename=filename).first()
        if attachment is None or not attachment.file:
            raise outgoing.OutgoingError(
                f"The run's file {filename} was removed by the retention of the archive; nothing was sent.",
                permanent=True,
            )
        with attachment.file.open("rb") as stored:
            contents.append((filename, stored.read()))
    return contents


def _record(delivery: Delivery, **fields) -> None:
    for name, value in fields.items():
        setattr(delivery, name, value)
    Delivery.objects.filter(pk=delivery.pk).update(**fields)


def failures_in_words(failed: list[Delivery]) -> str:
    """Why destinations did not get the run's message, for the run's error: "Slack #C1: Finance: …; …"."""
    shown = "; ".join(f"{delivery.to}: {delivery.error}" for delivery in failed[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    noun = "destination" if len(failed) == 1 else "destinations"
    return f"{len(failed)} {noun} did not get the message: {shown}{more}"


# --- resends ----------------------------------------------------------------------------------------


def check_resendable(delivery: Delivery) -> None:
    """ValidationError in words when a destination's delivery cannot be sent again as it was."""
    if delivery.channel == Channel.EMAIL:
        raise ValidationError("This is an email: resend it with Resend… on the run's page.")
    if delivery.destination is None:
        raise ValidationError(f"{delivery.target} was deleted: there is nowhere to resend it.")
    if not delivery.payload:
        raise ValidationError(f"The delivery to {delivery.target} has no archived message to resend: {delivery.error}")


def record_resend(delivery: Delivery, *, requested_by_id: int | None) -> Delivery:
    """A resend of a destination's delivery, queued: the same payload, to the same destination."""
    check_resendable(delivery)
    return Delivery.objects.create(
        run_id=delivery.run_id,
        kind=Delivery.Kind.RESEND,
        channel=delivery.channel,
        destination=delivery.destination,
        target=delivery.target,
        payload=delivery.payload,
        requested_by_id=requested_by_id,
    )


def send_queued(*, run_id: int, delivery_ids: list[int], sleep: Callable[[float], None] | None = None) -> None:
    """Send the given queued deliveries of the run to their destinations (a resend's)."""
    queued = Delivery.objects.filter(run_id=run_id, pk__in=delivery_ids).exclude(channel=Channel.EMAIL)
    send_destination_deliveries(list(queued.select_related("destination").order_by("pk")), sleep=sleep)


def deliveries_of(run: ReportRun) -> list[Delivery]:
    """The run's deliveries to destinations, originals first, for its page."""
    return list(
        run.deliveries.exclude(channel=Channel.EMAIL).select_related("requested_by", "destination").order_by("pk")
    )


def answer_in_words(answer: dict) -> str:
    """A destination's answer as staff read it: "HTTP 200 · Slack message 1700000000.000100 · 1 file (F1)"."""
    said = []
    if answer.get("status"):
        said.append(f"HTTP {answer['status']}")
    if answer.get("ts"):
        said.append(f"Slack message {answer['ts']}")
    if answer.get("files"):
        ids = ", ".join(str(file.get("id")) for file in answer["files"])
        said.append(f"{len(answer['files'])} file{'s' if len(answer['files']) != 1 else ''} ({ids})")
    if answer.get("error"):
        said.append(str(answer["error"]))
    if answer.get("body"):
        said.append(f"answered: {answer['body'][:200]}")
    waited = answer.get("waited") or []
    if waited:
        seconds = ", ".join(f"{wait['seconds']:.0f} s after HTTP {wait['status'] or '—'}" for wait in waited)
        said.append(f"retried {len(waited)} time{'s' if len(waited) != 1 else ''} ({seconds})")
    return " · ".join(said) or "—"
