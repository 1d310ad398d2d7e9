"""Services on destinations besides email: resend a run's message to a Slack, Teams or webhook destination."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import transaction

from reporting import audit, destinations
from reporting.models import AuditEvent, Delivery
from reporting.services.enqueue import SEND_TO_DESTINATIONS, enqueue

Action = AuditEvent.Action
User = AbstractBaseUser | AnonymousUser | None


def plan_destination_resend(*, run_id: int, delivery_id: int) -> Delivery:
    """The destination delivery of the run that would be sent again; ValidationError in words when it cannot be."""
    delivery = (
        Delivery.objects.select_related("run", "destination")
        .exclude(channel=Delivery.Channel.EMAIL)
        .filter(run_id=run_id, pk=delivery_id)
        .first()
    )
    if delivery is None:
        raise ValidationError(f"Run #{run_id} has no such delivery to a destination.")
    destinations.check_resendable(delivery)
    return delivery


def resend_to_destination(*, run_id: int, delivery_id: int, actor: User) -> Delivery:
    """Send a destination's archived message of a run again, as a new delivery: recorded, audited, then published.

    Raises ValidationError (nothing written) as plan_destination_resend.
    """
    requested_by_id = actor.pk if actor is not None and actor.is_authenticated else None
    with transaction.atomic():
        delivery = plan_destination_resend(run_id=run_id, delivery_id=delivery_id)
        resend = destinations.record_resend(delivery, requested_by_id=requested_by_id)
        run = delivery.run
        summary = f"Resent run #{run.pk} ({run.period_label}) to {delivery.target}."
        audit.record(actor=actor, action=Action.RESENT, summary=summary, run=run)
        enqueue(SEND_TO_DESTINATIONS, run_id=run.pk, delivery_ids=[resend.pk])
    return resend


def send_to_destinations(*, run_id: int, delivery_ids: list[int]) -> None:
    """In a worker: send a recorded resend's queued deliveries to their destinations."""
    destinations.send_queued(run_id=run_id, delivery_ids=delivery_ids)
