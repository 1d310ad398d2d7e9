"""ESP tracking events (anymail webhooks) → the status of the matching Delivery."""

from __future__ import annotations

import logging

from reporting.models import Delivery

log = logging.getLogger(__name__)

# anymail's normalized event types that change what the archive says about a delivery.
_STATUS_FOR_EVENT = {
    "delivered": Delivery.Status.DELIVERED,
    "bounced": Delivery.Status.BOUNCED,
    "rejected": Delivery.Status.FAILED,
    "failed": Delivery.Status.FAILED,
}


def record_esp_event(*, message_id: str, recipient: str, event_type: str, description: str = "") -> int:
    """Apply one tracking event to the delivery with this ESP message id; return rows changed."""
    status = _STATUS_FOR_EVENT.get(event_type)
    if status is None or not message_id:
        return 0
    deliveries = Delivery.objects.filter(message_id=message_id)
    if recipient:
        deliveries = deliveries.filter(address__iexact=recipient)
    fields = {"status": status, "esp_status": event_type}
    if status != Delivery.Status.DELIVERED:
        fields["error"] = description or f"The email service reports: {event_type}."
    changed = deliveries.update(**fields)
    if not changed:
        log.info("tracking event %s for unknown message id %s", event_type, message_id)
    return changed
