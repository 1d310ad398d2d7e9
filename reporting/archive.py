"""The archive's read side and resends: an archived run's email, data and images, sent again as it was."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection, connections, router
from django.db.models import Field, QuerySet
from django.utils import timezone

from reporting.addresses import clean_addresses
from reporting.models import Delivery, ReportRun, RunPart
from reporting.pipeline import deliver, fetch, render

Status = ReportRun.Status
SENDING = Delivery.Status.SENDING


def send_deliveries(
    item: ReportRun | RunPart,
    deliveries: list[Delivery],
    *,
    after_each: Callable[[], None] | None = None,
    backend: BaseEmailBackend | None = None,
    email: deliver.OutgoingEmail | None = None,
) -> None:
    """Send the archived email of `item` (a run, or one recipient's part) for each queued delivery.

    One connection for all: `backend` when the caller holds one open, else a new one.
    `after_each` is called after every message (the orchestrator renews its lease there).
    `email`: the email as the caller has just archived it (else it is read from the archive).
    """
    if not deliveries:
        return
    email = email or archived_email(item)
    if backend is not None:
        _send_each(email, deliveries, backend, after_each)
        return
    with deliver.connection() as opened:
        _send_each(email, deliveries, opened, after_each)


def _send_each(
    email: deliver.OutgoingEmail,
    deliveries: list[Delivery],
    backend: BaseEmailBackend,
    after_each: Callable[[], None] | None,
) -> None:
    """Send each delivery this worker claims: claimed (queued → sending) before its message goes, recorded after.

    What the server said of one message is recorded in the UPDATE that claims the next: N + 1
    statements for N addresses, not 2N, and still never a message sent before its claim is committed.
    """
    sent: tuple[Delivery, dict[str, object]] | None = None  # sent, its outcome not written yet
    for delivery in deliveries:
        claimed = _claim(delivery, recording=sent)
        sent = None
        if not claimed:
            continue  # another worker's, or no longer queued
        sent = (delivery, _outcome(email, delivery, backend))
        if after_each is not None:
            after_each()
    if sent is not None:
        delivery, outcome = sent
        _record_delivery(delivery, **outcome)


def _claim(delivery: Delivery, *, recording: tuple[Delivery, dict[str, object]] | None) -> bool:
    """Turn `delivery` from queued to sending (whoever does, sends it); with `recording`, write that too.

    `recording` is (a delivery of the same run, sent, what to record of it). Both rows go with
    their run, so the row count says whether the claim was won: 2 with it, 1 without.

    Written as SQL: this statement runs once per message, and building it as an ORM update of
    CASE expressions took more of a worker's time than PostgreSQL took to run it.
    """
    table, pk, status = _DELIVERY_TABLE, _column("id"), _column("status")
    where = f"{pk} = %s AND {status} = %s"
    params: list[Any] = [delivery.pk, Delivery.Status.QUEUED]
    sets = [f"{status} = %s"]
    values: list[Any] = [SENDING]
    if recording is not None:
        done, fields = recording
        for name, value in fields.items():
            setattr(done, name, value)
        sets, values = [], []
        for name, value in fields.items():
            otherwise = "%s" if name == "status" else _column(name)
            sets.append(f"{_column(name)} = CASE WHEN {pk} = %s THEN %s ELSE {otherwise} END")
            values += [done.pk, _prepared(name, value)] + ([SENDING] if name == "status" else [])
        where = f"{pk} = %s OR ({where})"
        params = [done.pk, *params]
    alias = router.db_for_write(Delivery)
    with connections[alias].cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {', '.join(sets)} WHERE {where}", [*values, *params])
        return cursor.rowcount == (1 if recording is None else 2)


_DELIVERY_TABLE = connection.ops.quote_name(Delivery._meta.db_table)


def _column(name: str) -> str:
    field = Delivery._meta.get_field(name)
    assert isinstance(field, Field) and field.column, name
    return connection.ops.quote_name(field.column)


def _prepared(name: str, value: object) -> object:
    """`value` as the database takes it for the field `name` (a datetime in UTC on SQLite)."""
    field = Delivery._meta.get_field(name)
    assert isinstance(field, Field), name
    return field.get_db_prep_save(value, connection=connections[router.db_for_write(Delivery)])


def send_one(email: deliver.OutgoingEmail, delivery: Delivery, backend: BaseEmailBackend) -> None:
    """Send `email` for a delivery this worker holds ("sending"), and record what the server said."""
    _record_delivery(delivery, **_outcome(email, delivery, backend))


def _outcome(email: deliver.OutgoingEmail, delivery: Delivery, backend: BaseEmailBackend) -> dict[str, object]:
    """Send `email` for `delivery`; what to record of it."""
    try:
        result = deliver.send(email, delivery.address, backend=backend)
    except deliver.DeliveryError as exc:
        return {"status": Delivery.Status.FAILED, "error": exc.message}
    return {
        "status": Delivery.Status.SENT,
        "message_id": result.message_id,
        "esp_status": result.esp_status,
        "sent_at": timezone.now(),
    }


def _record_delivery(delivery: Delivery, **fields: object) -> None:
    for name, value in fields.items():
        setattr(delivery, name, value)
    Delivery.objects.filter(pk=delivery.pk).update(**fields)


def own_attachments(item: ReportRun | RunPart) -> QuerySet:
    """The files of a run's own email, or of one recipient's part (a run's parts keep their own)."""
    if isinstance(item, RunPart):
        return item.attachments.all()
    return item.attachments.filter(part__isnull=True)


def archived_email(item: ReportRun | RunPart) -> deliver.OutgoingEmail:
    """The email exactly as archived: subject, both parts and the stored attachments (but the linked ones)."""
    attachments = []
    for attachment in own_attachments(item).filter(linked=False):  # a linked one is too large: the body links to it
        with attachment.file.open("rb") as stored:
            content = stored.read()
        attachments.append(
            render.Attachment(attachment.filename, content, attachment.mimetype, content_id=attachment.content_id)
        )
    run = item.run if isinstance(item, RunPart) else item
    return deliver.OutgoingEmail(
        subject=item.subject, html=item.body_html, text=item.body_text, attachments=attachments, **sender_of(run)
    )


def sender_of(run: ReportRun) -> dict[str, str]:
    """The sender a run's emails carry, as the report said when the run was made (resends say the same)."""
    return {"from_email": run.from_email, "reply_to": run.reply_to, "list_unsubscribe": run.list_unsubscribe}


def html_with_images_inline(item: ReportRun | RunPart) -> str:
    """The archived HTML with each image it shows (cid:) as a data: URI, for viewing in a browser."""
    html = item.body_html
    for attachment in own_attachments(item).exclude(content_id="").exclude(file=""):  # "": removed by retention
        with attachment.file.open("rb") as stored:
            encoded = base64.b64encode(stored.read()).decode("ascii")
        html = html.replace(f"cid:{attachment.content_id}", f"data:{attachment.mimetype};base64,{encoded}")
    return html


def resend_targets(item: ReportRun | RunPart, addresses: list[str] | None) -> list[str]:
    """Exactly who a resend of `item` (a run, or one recipient's report) goes to: `addresses`, or whom it went to.

    Raises ValidationError in words when it cannot be resent as it was or an address is invalid.
    """
    if isinstance(item, ReportRun) and item.per_recipient:
        raise ValidationError(
            f"Run #{item.pk} sent each recipient their own report: resend one from its page "
            "(the run's recipient reports)."
        )
    what = f"Run #{item.pk}" if isinstance(item, ReportRun) else f"The report of {item.who} in run #{item.run_id}"
    if not item.is_rendered:
        raise ValidationError(f"{what} has no archived email to resend: {_why_not_rendered(item)}.")
    if own_attachments(item).filter(file="", linked=False).exists():
        raise ValidationError(
            f"{what}'s attachments were removed by the retention of the archive (see the run's notes), so it "
            "cannot be resent as it was. Use Run now for its period to send it again with fresh data."
        )
    originals = item.recipients if isinstance(item, ReportRun) else [item.address]
    targets = clean_addresses(addresses if addresses is not None else originals)
    if not targets:
        raise ValidationError("There is no address to resend to.")
    return targets


def _why_not_rendered(item: ReportRun | RunPart) -> str:
    if isinstance(item, RunPart):
        return {  # type: ignore[call-overload]
            RunPart.Status.SKIPPED: "it was skipped, with no rows",
            RunPart.Status.HELD: "it was held, with no rows",
        }.get(item.status, "it failed before rendering; re-run the run instead")
    return {  # type: ignore[call-overload]
        Status.HELD: "it was held by a data check: send it anyway or re-run it from its page",
        Status.MISSED: "it was missed: use Run now for its period",
        Status.SKIPPED: "it was skipped, as the report's 'Send only if' says: re-run it to send it",
    }.get(item.status, "it failed before rendering; re-run it instead")


def record_resend(item: ReportRun | RunPart, targets: list[str], *, requested_by_id: int | None) -> list[Delivery]:
    """The resend's deliveries, queued: one per address, written before anything is sent."""
    run, part = (item.run, item) if isinstance(item, RunPart) else (item, None)
    return Delivery.objects.bulk_create(
        [
            Delivery(run=run, part=part, address=address, kind=Delivery.Kind.RESEND, requested_by_id=requested_by_id)
            for address in targets
        ]
    )


def send_resend(*, run_id: int, delivery_ids: list[int]) -> None:
    """Send a recorded resend's queued deliveries (each with its own email: the run's, or a recipient's).

    A mail server that cannot be reached fails them in words.
    """
    run = ReportRun.objects.get(pk=run_id)
    resends = run.deliveries.filter(pk__in=delivery_ids, kind=Delivery.Kind.RESEND)
    try:
        for part_id in sorted(set(resends.values_list("part_id", flat=True)), key=lambda each: each or 0):
            item = run if part_id is None else RunPart.objects.get(pk=part_id)
            send_deliveries(item, list(resends.filter(part_id=part_id)))
    except deliver.DeliveryError as exc:
        fail_queued_deliveries(resends, exc.message)


def fail_queued_deliveries(deliveries: QuerySet, message: str) -> None:
    deliveries.filter(status=Delivery.Status.QUEUED).update(status=Delivery.Status.FAILED, error=message)


def snapshot_data(run: ReportRun) -> object | None:
    """The archived data as parsed JSON, or None when nothing was fetched (a large answer's rows streamed)."""
    if not run.data_snapshot:
        return None
    with run.data_snapshot.storage.open(str(run.data_snapshot.name), "rb") as snapshot:
        return fetch.parse_answer(snapshot, run.report.records_path)
