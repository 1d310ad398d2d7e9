"""What a recipient received: their own reports in per-recipient runs, and every email sent to their address."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from django.db.models import Q
from django.urls import NoReverseMatch, reverse

from reporting.models import Delivery, Recipient, ReportRun, RunPart

LATEST = 200  # per kind, newest first; the archive's search by address has them all


@dataclass(frozen=True)
class Received:
    """One line of the recipient's page: a run's email to them, or their own report within a run."""

    what: str  # "Email" or "Own report"
    report_name: str
    period_label: str
    status: str
    address: str
    at: datetime | None
    run_url: str
    part_url: str


def received_by(recipient: Recipient, *, limit: int = LATEST) -> tuple[list[Received], bool]:
    """The latest parts and deliveries for `recipient`, newest first, and whether there are more than `limit`."""
    parts = (
        RunPart.objects.filter(Q(recipient=recipient) | Q(recipient_email__iexact=recipient.email))
        .select_related("run")
        .order_by("-run__created_at", "-pk")
    )
    deliveries = (
        Delivery.objects.filter(address__iexact=recipient.email)
        .select_related("run", "part")
        .order_by("-created_at", "-pk")
    )
    part_rows = [_from_part(part) for part in parts[: limit + 1]]
    delivery_rows = [_from_delivery(delivery) for delivery in deliveries[: limit + 1]]
    more = len(part_rows) > limit or len(delivery_rows) > limit
    rows = sorted(part_rows[:limit] + delivery_rows[:limit], key=_newest_first)
    return rows[:limit], more or len(rows) > limit


def archive_search_url(recipient: Recipient) -> str:
    """The archive's list of runs, searched for the recipient's address (which finds the runs sent to it)."""
    return f"{reverse('admin:reporting_reportrun_changelist')}?{urlencode({'q': recipient.email})}"


def _from_part(part: RunPart) -> Received:
    return Received(
        what="Own report",
        report_name=_report_name(part.run),
        period_label=part.run.period_label,
        status=part.get_status_display(),
        address=part.address,
        at=part.finished_at or part.run.created_at,
        run_url=part.run.get_absolute_url(),
        part_url=_part_url(part),
    )


def _from_delivery(delivery: Delivery) -> Received:
    kind = "Resent email" if delivery.kind == Delivery.Kind.RESEND else "Email"
    return Received(
        what=kind,
        report_name=_report_name(delivery.run),
        period_label=delivery.run.period_label,
        status=delivery.get_status_display(),
        address=delivery.address,
        at=delivery.sent_at or delivery.created_at,
        run_url=delivery.run.get_absolute_url(),
        part_url=_part_url(delivery.part) if delivery.part is not None else "",
    )


def _part_url(part: RunPart) -> str:
    """The part's own admin page; none while that page is not there (the archive shows the part on its run)."""
    try:
        return part.get_absolute_url()
    except NoReverseMatch:
        return ""


def _report_name(run: ReportRun) -> str:
    return run.report_name or str(run.report_id)


def _newest_first(row: Received) -> tuple:
    return (row.at is None, -(row.at.timestamp()) if row.at else 0)
