"""Runs, the archive: list (by report and status), read with deliveries, download an attachment, resend."""

from typing import Any, Literal

from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Field, Path, Query, Router, Status

from reporting.api import schemas
from reporting.api.access import RESEND_RUNS, VIEW_RUNS, token
from reporting.api.errors import answers
from reporting.models import Delivery, ReportRun, RunAttachment
from reporting.services import archive as services_archive

router = Router(tags=["runs"])
RunId = Path(..., ge=1, le=schemas.MAX_INT)
AttachmentId = Path(..., ge=1, le=schemas.MAX_INT)


class RunFilters(schemas.Page):
    report: int | None = Field(None, ge=1, le=schemas.MAX_INT, description="Only this report's runs.")
    status: Literal[tuple(ReportRun.Status.values)] | None = None  # type: ignore[valid-type]


FILTERS = Query(...)


def run_brief(run: ReportRun) -> dict[str, Any]:
    return {name: getattr(run, name) for name in schemas.RunBrief.model_fields}


def _run_detail(run: ReportRun) -> dict[str, Any]:
    return {
        **{
            name: getattr(run, name)
            for name in schemas.RunOut.model_fields
            if name not in ("deliveries", "attachments")
        },
        "deliveries": [_delivery(delivery) for delivery in run.deliveries.order_by("pk")],
        "attachments": [_attachment(run, attachment) for attachment in run.attachments.filter(part__isnull=True)],
    }


def _delivery(delivery: Delivery) -> dict[str, Any]:
    return {name: getattr(delivery, name) for name in schemas.DeliveryOut.model_fields}


def _attachment(run: ReportRun, attachment: RunAttachment) -> dict[str, Any]:
    url = reverse("reporting_api:download_attachment", args=[run.pk, attachment.pk])
    values = {name: getattr(attachment, name) for name in ("id", "filename", "mimetype", "size")}
    return {**values, "available": bool(attachment.file), "url": url}


def _runs(filters: RunFilters) -> QuerySet[ReportRun]:
    found = ReportRun.objects.order_by("-created_at", "-pk")
    if filters.report is not None:
        found = found.filter(report_id=filters.report)
    if filters.status is not None:
        found = found.filter(status=filters.status)
    return found


@router.get("/runs", response=answers({200: schemas.RunPage}), operation_id="list_runs", auth=token(VIEW_RUNS))
def list_runs(request: HttpRequest, filters: RunFilters = FILTERS) -> dict[str, Any]:
    """The runs, newest first, a page at a time; ?report=<id> and ?status=<status> narrow them."""
    found = _runs(filters)
    page = found[filters.offset : filters.offset + filters.limit]
    return {"count": found.count(), "items": [run_brief(run) for run in page]}


@router.get("/runs/{run_id}", response=answers({200: schemas.RunOut}), operation_id="get_run", auth=token(VIEW_RUNS))
def get_run(request: HttpRequest, run_id: int = RunId) -> dict[str, Any]:
    """A run with its deliveries (each address, original or resend, and its status) and attachments."""
    return _run_detail(get_object_or_404(ReportRun, pk=run_id))


@router.get(
    "/runs/{run_id}/attachments/{attachment_id}",
    response=answers({200: None}),
    operation_id="download_attachment",
    url_name="download_attachment",
    openapi_extra={"responses": {200: {"description": "The file", "content": {"application/octet-stream": {}}}}},
    auth=token(VIEW_RUNS),
)
def download_attachment(request: HttpRequest, run_id: int = RunId, attachment_id: int = AttachmentId) -> FileResponse:
    """The archived file, streamed (as the archive's page in the admin serves it)."""
    attachment = get_object_or_404(RunAttachment, pk=attachment_id, run_id=run_id)
    if not attachment.file:
        raise Http404("This file was removed by the retention of the archive.")
    return FileResponse(
        attachment.file.open("rb"), as_attachment=True, filename=attachment.filename, content_type=attachment.mimetype
    )


@router.post(
    "/runs/{run_id}/resend",
    response=answers({202: schemas.ResendOut}),
    operation_id="resend_run",
    auth=token(RESEND_RUNS),
)
def resend(request: HttpRequest, body: schemas.ResendRequest, run_id: int = RunId) -> Status:
    """Send the archived email again (nothing fetched again) to its original recipients or to `addresses`."""
    run = get_object_or_404(ReportRun, pk=run_id)
    [planned] = services_archive.resend(run_ids=[run.pk], addresses=body.addresses, actor=request.user)
    deliveries = planned.run.deliveries.filter(kind=Delivery.Kind.RESEND).order_by("-pk")[: len(planned.addresses)]
    return Status(
        202,
        {
            "run_id": run.pk,
            "addresses": planned.addresses,
            "deliveries": [_delivery(delivery) for delivery in reversed(list(deliveries))],
        },
    )
