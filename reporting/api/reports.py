"""Reports: list, read, create, change (schedule and recipients too); run now and send a test."""

from datetime import date
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Path, Query, Router, Status

from reporting.api import schemas
from reporting.api.access import ADD_REPORTS, CHANGE_REPORTS, RUN_REPORTS, VIEW_REPORTS, token
from reporting.api.errors import answers
from reporting.api.runs import run_brief
from reporting.forms import RunNowForm
from reporting.models import Report
from reporting.services import reports_as_code
from reporting.services import runs as services_runs

router = Router(tags=["reports"])
ReportId = Path(..., ge=1, le=schemas.MAX_INT)


PAGE = Query(...)


@router.get(
    "/reports", response=answers({200: schemas.ReportPage}), operation_id="list_reports", auth=token(VIEW_REPORTS)
)
def list_reports(request: HttpRequest, page: schemas.Page = PAGE) -> dict[str, Any]:
    """The reports by name, a page at a time."""
    found = Report.objects.order_by("name", "pk")
    chosen = found.select_related("owner", "data_source", "periodic_task__crontab")
    items = [reports_as_code.report_values(report) for report in chosen[page.offset : page.offset + page.limit]]
    return {"count": found.count(), "items": items}


@router.get(
    "/reports/{report_id}",
    response=answers({200: schemas.ReportOut}),
    operation_id="get_report",
    auth=token(VIEW_REPORTS),
)
def get_report(request: HttpRequest, report_id: int = ReportId) -> dict[str, Any]:
    return reports_as_code.report_values(get_object_or_404(Report, pk=report_id))


@router.post(
    "/reports", response=answers({201: schemas.ReportOut}), operation_id="create_report", auth=token(ADD_REPORTS)
)
def create_report(request: HttpRequest, values: schemas.NewReportIn) -> Status:
    """A new report, checked as the admin's form checks it; its owner, unless given, is the token's user."""
    given = values.model_dump(exclude_unset=True)
    report = reports_as_code.save_report_values(values=given, report=None, actor=request.user)
    return Status(201, reports_as_code.report_values(report))


@router.patch(
    "/reports/{report_id}",
    response=answers({200: schemas.ReportOut}),
    operation_id="update_report",
    auth=token(CHANGE_REPORTS),
)
def update_report(request: HttpRequest, values: schemas.ReportIn, report_id: int = ReportId) -> dict[str, Any]:  # type: ignore[valid-type]
    """Change the fields given (the rest stay), checked as the admin's form checks the whole report."""
    report = get_object_or_404(Report, pk=report_id)
    given = values.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
    report = reports_as_code.save_report_values(values=given, report=report, actor=request.user)
    return reports_as_code.report_values(report)


@router.post(
    "/reports/{report_id}/run",
    response=answers({202: schemas.RunsQueued}),
    operation_id="run_report_now",
    auth=token(RUN_REPORTS),
)
def run_now(request: HttpRequest, body: schemas.RunRequest, report_id: int = ReportId) -> Status:
    """Queue a run of the report for a period, sent to its recipients, as the admin's "Run now"."""
    report = get_object_or_404(Report, pk=report_id)
    created = services_runs.run_now(report_ids=[report.pk], period_day=_period_day(body), actor=request.user)
    return Status(202, {"runs": [run_brief(run) for run in created]})


@router.post(
    "/reports/{report_id}/test",
    response=answers({202: schemas.RunsQueued}),
    operation_id="send_test",
    auth=token(RUN_REPORTS),
)
def send_test(request: HttpRequest, body: schemas.TestRequest, report_id: int = ReportId) -> Status:
    """Queue a test of the report sent only to the token's user's own address."""
    report = get_object_or_404(Report, pk=report_id)
    created = services_runs.send_test(
        report_ids=[report.pk],
        period_day=_period_day(body),
        actor=request.user,  # type: ignore[arg-type]
        for_recipient_id=body.recipient_id,
    )
    return Status(202, {"runs": [run_brief(run) for run in created]})


def _period_day(body: schemas.RunRequest) -> date | None:
    """The day as the admin's form checks it (its period must fit in the calendar); ValidationError if not."""
    form = RunNowForm({"period_day": body.period_day.isoformat() if body.period_day else ""})
    if not form.is_valid():
        raise ValidationError(form.errors.as_data())
    return form.cleaned_data["period_day"]
