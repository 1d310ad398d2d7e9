"""The archive's read side and resends: an archived run's email, data and images, sent again as it was."""

from __future__ import annotations

import base64
from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone

from reporting.addresses import clean_addresses
from reporting.models import Delivery, ReportRun
from reporting.pipeline import deliver, fetch, render

Status = ReportRun.Status


def send_deliveries(
    run: ReportRun, deliveries: list[Delivery], *, after_each: Callable[[], None] | None = None
) -> None:
    """Send the archived email of `run` for each queued delivery, one connection for all.

    `after_each` is called after every message (the orchestrator renews its lease there).
    """
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
            if after_each is not None:
                after_each()


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


def resend_targets(run: ReportRun, addresses: list[str] | None) -> list[str]:
    """Exactly who a resend of `run` goes to: `addresses`, or the run's original recipients when None.

    Raises ValidationError in words when the run cannot be resent as it was or an address is invalid.
    """
    if not run.is_rendered:
        why = {
            Status.HELD: "it was held by a data check: send it anyway or re-run it from its page",
            Status.MISSED: "it was missed: use Run now for its period",
        }.get(run.status, "it failed before rendering; re-run it instead")
        raise ValidationError(f"Run #{run.pk} has no archived email to resend: {why}.")
    if run.attachments.filter(file="", linked=False).exists():
        raise ValidationError(
            f"Run #{run.pk}'s attachments were removed by the retention of the archive (see its notes), so it "
            "cannot be resent as it was. Use Run now for its period to send it again with fresh data."
        )
    targets = clean_addresses(addresses if addresses is not None else run.recipients)
    if not targets:
        raise ValidationError("There is no address to resend to.")
    return targets


def record_resend(run: ReportRun, targets: list[str], *, requested_by_id: int | None) -> list[Delivery]:
    """The resend's deliveries, queued: one per address, written before anything is sent."""
    return Delivery.objects.bulk_create(
        [
            Delivery(run=run, address=address, kind=Delivery.Kind.RESEND, requested_by_id=requested_by_id)
            for address in targets
        ]
    )


def send_resend(*, run_id: int, delivery_ids: list[int]) -> None:
    """Send a recorded resend's queued deliveries; a mail server that cannot be reached fails them in words."""
    run = ReportRun.objects.get(pk=run_id)
    resends = run.deliveries.filter(pk__in=delivery_ids, kind=Delivery.Kind.RESEND)
    try:
        send_deliveries(run, list(resends))
    except deliver.DeliveryError as exc:
        fail_queued_deliveries(resends, exc.message)


def fail_queued_deliveries(deliveries: QuerySet, message: str) -> None:
    deliveries.filter(status=Delivery.Status.QUEUED).update(status=Delivery.Status.FAILED, error=message)


def snapshot_data(run: ReportRun) -> object | None:
    """The archived data as parsed JSON, or None when nothing was fetched."""
    if not run.data_snapshot:
        return None
    with run.data_snapshot.open("rb") as snapshot:
        return fetch.parse_json_file(snapshot)
