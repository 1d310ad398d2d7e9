"""A run's progress while it works, for the run page that follows it (reporting/static/reporting/run_progress.js)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count

from reporting.models import Delivery, ReportRun, RunPart

Status = ReportRun.Status
STEPS = ["queued", "fetching", "rendering", "sending", "done"]
DELIVERIES_SHOWN = 100  # the latest; a per-recipient run may have thousands, counted instead
_STEP: dict[str, str] = {Status.RETRYING: "queued"}  # waiting to retry: back before the fetch


def run_progress(*, run_id: int) -> dict[str, Any]:
    """Where the run is (one of STEPS), its status in words, and its latest deliveries (a per-recipient run:
    and its recipient reports counted by status)."""
    run = ReportRun.objects.only("status", "error", "per_recipient").get(pk=run_id)
    finished = run.status not in ReportRun.WORKING
    latest = (
        Delivery.objects.filter(run_id=run_id)
        .only("address", "channel", "target", "kind", "status", "error")
        .order_by("-pk")
    )
    deliveries = [
        {
            "address": delivery.to,  # an email's address, or a destination (Slack, Teams, a webhook)
            "kind": delivery.kind,
            "status": delivery.status,
            "status_label": delivery.get_status_display(),
            "error": delivery.error,
        }
        for delivery in reversed(latest[:DELIVERIES_SHOWN])
    ]
    return {
        "status": run.status,
        "status_label": run.get_status_display(),
        "step": "done" if finished else _STEP.get(run.status, run.status),
        "finished": finished,
        "error": run.error,
        "deliveries": deliveries,
        "recipient_reports": _parts_in_words(run_id) if run.per_recipient else "",
    }


def _parts_in_words(run_id: int) -> str:
    counts = dict(RunPart.objects.filter(run_id=run_id).values_list("status").annotate(Count("pk")).order_by())
    total = sum(counts.values())
    shown = ", ".join(
        f"{counts[status]:,} {label.lower()}" for status, label in RunPart.Status.choices if counts.get(status)
    )
    return f"Recipient reports ({total:,}): {shown}." if total else ""
