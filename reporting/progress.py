"""A run's progress while it works, for the run page that follows it (reporting/static/reporting/run_progress.js)."""

from __future__ import annotations

from typing import Any

from reporting.models import Delivery, ReportRun

Status = ReportRun.Status
STEPS = ["queued", "fetching", "rendering", "sending", "done"]
_STEP = {Status.RETRYING: "queued"}  # waiting to retry: back before the fetch


def run_progress(*, run_id: int) -> dict[str, Any]:
    """Where the run is (one of STEPS), its status in words, and each delivery so far: two queries."""
    run = ReportRun.objects.only("status", "error").get(pk=run_id)
    finished = run.status not in ReportRun.WORKING
    deliveries = [
        {
            "address": delivery.address,
            "kind": delivery.kind,
            "status": delivery.status,
            "status_label": delivery.get_status_display(),
            "error": delivery.error,
        }
        for delivery in Delivery.objects.filter(run_id=run_id).only("address", "kind", "status", "error")
    ]
    return {
        "status": run.status,
        "status_label": run.get_status_display(),
        "step": "done" if finished else _STEP.get(run.status, run.status),
        "finished": finished,
        "error": run.error,
        "deliveries": deliveries,
    }
