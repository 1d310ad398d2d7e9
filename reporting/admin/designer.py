"""The report form's layout designer and live preview: a sample of the live answer, and the email
as the form has it now (saved or not). JSON for reporting/static/reporting/layout_designer.js.

Both take the whole form as posted, build the report from it without saving anything, and
fetch live data as the Preview page does: nothing is sent, archived or written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat

from reporting import preview
from reporting.models import Recipient, Report
from reporting.periods import PeriodOutOfRange

# What a sample needs from the form; what the preview needs besides.
FETCH_FIELDS = ("data_source", "path", "query_params", "period_kind", "timezone", "audience", "per_recipient_data")
RENDER_FIELDS = ("records_path", "template", "subject_template", "layout", "locale", "charts", "email_max_rows",
                 "split_field", "split_attribute", "when_no_rows")  # fmt: skip
DAY_FIELD, REPORT_FIELD, RECIPIENT_FIELD = "_design_day", "_design_report", "_design_recipient"


class MethodNotAllowed(Exception):
    """Only a posted form is designed or previewed."""


def only_posted(view):
    """405 to anything but a POST (after the permission check: a visitor without it learns nothing)."""

    def answer(admin: ModelAdmin, request: HttpRequest) -> HttpResponse:
        try:
            return view(admin, request)
        except MethodNotAllowed:
            return HttpResponseNotAllowed(["POST"])

    return answer


@only_posted
def sample_view(admin: ModelAdmin, request: HttpRequest) -> JsonResponse:
    """A sample of the live answer for the form's data settings: its lists of rows, fields and first rows."""
    report, form, problems = _draft(admin, request, FETCH_FIELDS)
    if problems:
        return _refused(problems)
    records_path = request.POST.get("records_path", "").strip()

    def described() -> dict:
        whose = _whose(request, report, form)
        found = preview.sample(report, period_day=_day(request), whose=whose, records_path=records_path)
        return {"period": found.period.label, "request_url": found.request_url, "rows": found.rows, **found.described}

    return _answer(described)


@only_posted
def preview_view(admin: ModelAdmin, request: HttpRequest) -> JsonResponse:
    """The email as the form has it now, for the sample period, with live data."""
    report, form, problems = _draft(admin, request, FETCH_FIELDS + RENDER_FIELDS)
    if problems:
        return _refused(problems)

    def previewed() -> dict:
        shown = preview.preview_draft(report, period_day=_day(request), whose=_whose(request, report, form))
        return {
            "period": shown.period.label,
            "request_url": shown.request_url,
            "row_count": shown.row_count,
            "subject": shown.subject,
            "html": shown.html,
            "recipient": shown.recipient,
            "recipient_note": shown.recipient_note,
            "checks_failed": shown.checks_failed,
            "skipped": shown.skipped,
            "files": [
                {"filename": file.filename, "size": filesizeformat(file.size), "inline": file.inline}
                for file in shown.files
            ],
        }

    return _answer(previewed)


def _answer(make: Callable[[], dict]) -> JsonResponse:
    """What `make` returns as JSON; what stopped it, in words, as a 400."""
    try:
        return JsonResponse(make())
    except preview.PreviewError as exc:
        return _refused([exc.message], request_url=exc.request_url)
    except (PeriodOutOfRange, ValueError) as exc:  # a day past the last period, or not a day at all
        return _refused([str(exc)])


def _draft(admin: ModelAdmin, request: HttpRequest, needed: tuple[str, ...]) -> tuple[Report, object, list[str]]:
    """The report as the posted form has it (never saved), and what stops it being fetched or rendered, in words."""
    report_id = request.POST.get(REPORT_FIELD, "")
    existing = get_object_or_404(Report, pk=report_id) if report_id.isdigit() else None
    if not admin.has_preview_permission(request) or not (  # type: ignore[attr-defined]
        admin.has_change_permission(request, existing) if existing else admin.has_add_permission(request)
    ):
        raise PermissionDenied
    if request.method != "POST":
        raise MethodNotAllowed
    form_class = admin.get_form(request, obj=existing)
    form = form_class(request.POST, instance=existing or Report())
    form.is_valid()  # builds form.instance from the fields that are valid; nothing is saved
    problems = []
    for name in needed:
        if name in form.errors:
            label = form.fields[name].label if name in form.fields else name
            problems += [f"{label or name}: {message}" for message in form.errors[name]]
    if "data_source" in needed and form.instance.data_source_id is None and not problems:
        problems.append("Choose a data source first.")
    return form.instance, form, problems


def _day(request: HttpRequest) -> date | None:
    text = request.POST.get(DAY_FIELD, "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"'{text[:20]}' is not a day (YYYY-MM-DD).") from exc


def _whose(request: HttpRequest, report: Report, form) -> Recipient | None:
    """Whom a per-recipient report is previewed as: the chosen one, or the first of the form's recipients."""
    if not report.is_per_recipient:
        return None
    cleaned = getattr(form, "cleaned_data", {})
    lists = cleaned.get("recipient_lists")
    typed = cleaned.get("recipient_addresses") or []
    candidates = Recipient.objects.filter(active=True)
    if lists is not None or typed:
        candidates = candidates.filter(Q(lists__in=list(lists or [])) | Q(email__in=typed)).distinct()
    elif report.pk:
        candidates = report.active_recipients()
    else:
        return None
    chosen = request.POST.get(RECIPIENT_FIELD, "")
    if chosen.isdigit():
        return candidates.filter(pk=int(chosen)).first()
    return candidates.order_by("email").first()


def _refused(problems: list[str], *, request_url: str = "") -> JsonResponse:
    return JsonResponse({"errors": problems, "request_url": request_url}, status=400)
