"""The admin for reports: the definition with its schedule, run now, send test, preview and the overview."""

from __future__ import annotations

import functools
from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import JSONArray
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from reporting import overview, preview, schedules
from reporting.admin import designer
from reporting.admin.common import RUN_MARK_HTML, RUN_STATUS_LABELS, runs_of_report_url
from reporting.audit_log import audit_log_entries
from reporting.forms import PreviewForm, ReportForm, RunNowForm
from reporting.models import AuditEvent, Report, ReportRun
from reporting.services import reports as services_reports
from reporting.services import runs as services_runs

OVERVIEW_PAGE_SIZE = 100
RUN_HISTORY_LENGTH = 10


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    form = ReportForm
    view_on_site = False  # its page is the report itself: "View on site" would only reload it

    class Media:
        js = ["reporting/local_times.js", "reporting/typed_addresses.js", "reporting/schedule_picker.js"]

    list_display = ["name", "period_kind", "schedule_in_words", "next_run", "enabled", "last_run", "run_history"]
    list_filter = ["enabled", "period_kind", "data_source"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["recipient_lists", "destinations"]
    readonly_fields = ["schedule_in_words", "next_runs", "runs_link"]
    actions = ["run_now", "send_test"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "owner", "enabled", "runs_link"]}),
        ("Data", {"fields": ["data_source", "path", "query_params", "records_path"]}),
        (
            "Layout and live preview",
            {
                "fields": ["locale", "layout"],
                "description": "Fetch a sample of the live data, pick the rows, columns, labels, formats, totals "
                "and headline figures; the email is previewed as it would be sent as you change the form.",
            },
        ),
        (
            "Period and schedule",
            {
                "fields": [
                    "period_kind",
                    "timezone",
                    "schedule_enabled",
                    ("schedule_kind", "schedule_time", "schedule_weekday", "schedule_day"),
                    ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"),
                    "schedule_in_words",
                    "next_runs",
                    "catch_up_hours",
                ],
                "description": "Kept in this report's own periodic task; it fires in the report's timezone.",
            },
        ),
        (
            "Email",
            {
                "fields": [
                    "template",
                    "subject_template",
                    "attach_csv",
                    "attach_xlsx",
                    ("attach_pdf", "pdf_paper"),
                    "email_max_rows",
                    "charts",
                    "recipient_addresses",
                    "recipient_lists",
                    ("from_name", "from_address"),
                    "reply_to",
                    "list_unsubscribe",
                ]
            },
        ),
        (
            "Slack, Teams and webhooks",
            {
                "fields": ["destinations"],
                "description": "Besides the email, each run posts its headline figures and links to these "
                "destinations (defined under Destinations), after the emails are sent; each is kept with the run "
                "and can be resent from its page.",
            },
        ),
        (
            "Each recipient their own report",
            {
                "fields": [
                    "audience",
                    "per_recipient_data",
                    ("split_field", "split_attribute"),
                    "when_no_rows",
                ],
                "description": "Each recipient (of the report and its lists) gets an email with their own data "
                "only, chosen by their attributes (edited on the recipient's page, or imported). Their rows "
                "are split from one fetch, or fetched for each with "
                "<code>{{ recipient.client_id }}</code> in the path or a query parameter. Templates see "
                "<code>recipient</code> (email, name, attributes), their <code>rows</code>, "
                "<code>totals</code> of each number column and <code>row_count</code>.",
            },
        ),
        (
            "Data checks",
            {
                "fields": [
                    "check_min_rows",
                    "check_required_fields",
                    ("check_max_age_field", "check_max_age_hours"),
                ],
                "description": "A run whose data fails a check is held, not sent; the owner is told, and staff "
                "can send it anyway or re-run it from the run's page.",
            },
        ),
        (
            "Send only if",
            {
                "fields": [
                    "send_only_if",
                    ("threshold_figure_is", "threshold_figure"),
                    ("threshold_operator", "threshold_value"),
                ],
                "description": "A scheduled run whose data does not meet the condition is <em>skipped</em>: "
                "nothing is sent, the run's notes say why (<q>Not sent: only if the data changed, and it is the "
                "same as run #12 sent on 1 Oct 2026.</q>), and nobody is alerted. Judged after the data checks, "
                "on the rows the records path picks (a per-recipient report: on the whole answer, before it "
                "is split). The figure and threshold are for <em>a figure crosses a threshold</em> only. "
                "Run now, re-runs and tests always send.",
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The list shows each report's latest runs in the same query, not a query per row:
        # correlated subqueries, each a short probe of the (report, -created_at) index that
        # the database evaluates only for the rows it returns (the page, after the LIMIT).
        # One subquery per position, rather than a window over all of a report's runs, keeps
        # the cost independent of how long the archive grows.
        latest = ReportRun.objects.filter(report=OuterRef("pk")).order_by("-created_at", "-pk")
        statuses = [Subquery(latest.values("status")[index : index + 1]) for index in range(RUN_HISTORY_LENGTH)]
        return (
            super()
            .get_queryset(request)
            .select_related("periodic_task__crontab", "data_source")
            .annotate(
                last_run_id=Subquery(latest.values("pk")[:1]),
                last_run_at=Subquery(latest.values("created_at")[:1]),
                recent_statuses=JSONArray(*statuses),
            )
        )

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        """A new report: its owner (who is told when it fails) is whoever creates it; the generic table layout."""
        return {"owner": request.user.pk, "template": DEFAULT_TEMPLATE, **super().get_changeform_initial_data(request)}

    def save_model(self, request: HttpRequest, report: Report, form: ReportForm, change: bool) -> None:
        """Saved with its recipients and schedule in save_related: one service call."""

    def save_related(self, request: HttpRequest, form: ReportForm, formsets, change: bool) -> None:
        services_reports.save_report(
            report=form.instance,
            save_related=form.save_m2m,
            schedule=form.schedule_spec(),
            actor=request.user,
            addresses=form.typed_addresses(),
        )

    def delete_model(self, request: HttpRequest, report: Report) -> None:
        services_reports.delete_reports(reports=[report], actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        services_reports.delete_reports(reports=list(queryset), actor=request.user)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        # An id that is not a number ("abc") is no report: Django's own change view says so
        # (back to the admin index, "… doesn't exist"); a query with it would raise ValueError.
        if not str(object_id).isdigit():
            return super().change_view(request, object_id, form_url, extra_context)
        buttons = []
        if self.has_preview_permission(request):
            buttons.append((reverse("admin:reporting_report_preview", args=[object_id]), "Preview…"))
        if self.has_run_permission(request):
            buttons += [
                (reverse("admin:reporting_report_run_now", args=[object_id]), "Run now…"),
                (reverse("admin:reporting_report_send_test", args=[object_id]), "Send test…"),
            ]
        # One query: the latest events of this report, with the actor's name kept on the event.
        # Staff changes and notable events; every scheduled start would crowd them out.
        events = AuditEvent.objects.filter(report_id=object_id).exclude(action=AuditEvent.Action.SCHEDULED)
        events = events.order_by("-at", "-pk")[:AUDIT_EVENTS_SHOWN]
        report = self.get_object(request, object_id)
        context = {
            "report_buttons": buttons,
            "audit_events": events,
            "audit_log": audit_log_entries(report) if report is not None else [],  # field values before/after
        }
        return super().change_view(request, object_id, form_url, {**context, **(extra_context or {})})

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:report_id>/run-now/", wrap(self.run_now_view), name="reporting_report_run_now"),
            path("<int:report_id>/send-test/", wrap(self.send_test_view), name="reporting_report_send_test"),
            path("<int:report_id>/preview/", wrap(self.preview_view), name="reporting_report_preview"),
            path("overview/", wrap(self.overview_view), name="reporting_report_overview"),
            path("next-runs/", wrap(self.next_runs_view), name="reporting_report_next_runs"),
            path(
                "design/sample/",
                wrap(lambda request: designer.sample_view(self, request)),
                name="reporting_report_design_sample",
            ),
            path(
                "design/preview/",
                wrap(lambda request: designer.preview_view(self, request)),
                name="reporting_report_design_preview",
            ),
            *super().get_urls(),
        ]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        """Every enabled report at a glance: next run, last success, failures, late, missed, held."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        page = Paginator(overview.enabled_reports(), OVERVIEW_PAGE_SIZE).get_page(request.GET.get("page"))
        rows = overview.report_health(list(page))
        context = {
            **self.admin_site.each_context(request),
            "title": "Reports at a glance",
            "opts": self.model._meta,
            "page": page,
            "rows": rows,
            "attention": sum(row.needs_attention for row in rows),
        }
        return TemplateResponse(request, "admin/reporting/report/overview.html", context)

    def next_runs_view(self, request: HttpRequest) -> JsonResponse:
        """A schedule as the form has it now, in words with its next five runs (JSON for schedule_picker.js).

        Query: the cron fields, timezone and rule; one left out is the form's default. A
        schedule that is not valid answers 400 with what is wrong, in words.
        """
        if not (self.has_change_permission(request) or self.has_add_permission(request)):
            raise PermissionDenied
        typed = {name: request.GET[name].strip() for name in NEXT_RUNS_PARAMETERS if name in request.GET}
        too_long = [name for name, value in typed.items() if len(value) > NEXT_RUNS_PARAMETER_LENGTH]
        if too_long:
            return JsonResponse({"errors": [f"{name} is too long." for name in too_long]}, status=400)
        spec = schedules.CronSpec(**typed)
        try:
            schedules.validate(spec)
        except ValidationError as exc:
            return JsonResponse({"errors": exc.messages}, status=400)
        upcoming = _upcoming_slots(spec, timezone.now().replace(second=0, microsecond=0), 5)
        return JsonResponse(
            {
                "words": _schedule_in_words(spec),
                "timezone": spec.timezone,
                "next_runs": [{"iso": iso, "words": words} for iso, words in upcoming],
            }
        )

    def has_preview_permission(self, request: HttpRequest) -> bool:
        """Who may fetch live data to look at a report: whoever may edit it or send it."""
        return request.user.has_perm("reporting.change_report") or self.has_run_permission(request)

    def preview_view(self, request: HttpRequest, report_id: int) -> HttpResponse:
        """The report rendered for a chosen period with live data: nothing is sent or archived."""
        if not self.has_preview_permission(request):
            raise PermissionDenied
        report = get_object_or_404(Report, pk=report_id)
        form = PreviewForm(request.GET or None, recipients=_choosable_recipients([report]))
        result = error = None
        if form.is_valid() or not request.GET:
            day = form.cleaned_data.get("period_day") if form.is_bound else None
            whose = form.cleaned_data.get("recipient") if form.is_bound else None
            try:
                result = preview.preview_report(
                    report_id=report.pk, period_day=day, recipient_id=whose.pk if whose else None
                )
            except preview.PreviewError as exc:
                error = exc
        context = {
            **self.admin_site.each_context(request),
            "title": f"Preview: {report.name}",
            "opts": self.model._meta,
            "original": report,
            "form": form,
            "preview": result,
            "error": error,
        }
        return TemplateResponse(request, "admin/reporting/report/preview.html", context)

    def run_now_view(self, request: HttpRequest, report_id: int) -> HttpResponse:
        """The "Run now…" page of one report (the button on its page)."""
        return self._one_report_page(request, report_id, self.run_now)

    def send_test_view(self, request: HttpRequest, report_id: int) -> HttpResponse:
        return self._one_report_page(request, report_id, self.send_test)

    def _one_report_page(self, request: HttpRequest, report_id: int, action) -> HttpResponse:
        if not self.has_run_permission(request):
            raise PermissionDenied
        get_object_or_404(Report, pk=report_id)
        response = action(request, Report.objects.filter(pk=report_id))
        return response or HttpResponseRedirect(reverse("admin:reporting_report_change", args=[report_id]))

    @admin.display(description="schedule")
    def schedule_in_words(self, report: Report) -> str:
        spec = schedules.spec_for(report) if report.pk else None
        return _schedule_in_words(spec) if spec else "Not scheduled (runs only by hand)"

    @admin.display(description="next run")
    def next_run(self, report: Report) -> str:
        upcoming = self._upcoming(report, 1)
        return _local_time(report, *upcoming[0]) if upcoming else "—"

    @admin.display(description="next five runs")
    def next_runs(self, report: Report):
        upcoming = self._upcoming(report, 5)
        if not upcoming:
            return "—"
        times = ((_local_time(report, *slot),) for slot in upcoming)
        return format_html(
            '<ol class="next-runs">{}</ol><p class="help">In the report\'s timezone ({}); your own beside it.</p>',
            format_html_join("", "<li>{}</li>", times),
            report.timezone,
        )

    def _upcoming(self, report: Report, count: int) -> tuple[tuple[str, str], ...]:
        spec = schedules.spec_for(report) if report.pk and report.enabled else None
        if spec is None:
            return ()
        return _upcoming_slots(spec, timezone.now().replace(second=0, microsecond=0), count)

    @admin.display(description="last run")
    def last_run(self, report: Report):
        if getattr(report, "last_run_id", None) is None:
            return "—"
        url = reverse("admin:reporting_reportrun_change", args=[report.last_run_id])  # type: ignore[attr-defined]
        status = ReportRun.Status(report.recent_statuses[0]).label  # type: ignore[attr-defined]
        return format_html('<a href="{}">{} · {}</a>', url, status, f"{report.last_run_at:%d %b %H:%M}")  # type: ignore[attr-defined]

    @admin.display(description=f"last {RUN_HISTORY_LENGTH} runs")
    def run_history(self, report: Report):
        """The latest runs' statuses as marks, oldest first, linking to the report's runs."""
        statuses = [status for status in reversed(getattr(report, "recent_statuses", None) or []) if status]
        if not statuses:
            return "—"
        marks = mark_safe("".join(RUN_MARK_HTML[status] for status in statuses))  # each one from format_html
        url = runs_of_report_url(report.pk)
        words = ", ".join(RUN_STATUS_LABELS[status].lower() for status in statuses)
        return format_html(
            '<a class="run-history" href="{}" aria-label="Runs, oldest first: {}">{}</a>', url, words, marks
        )

    @admin.display(description="archive")
    def runs_link(self, report: Report):
        if not report.pk:
            return "—"
        url = runs_of_report_url(report.pk)
        return format_html('<a href="{}">All runs of this report</a>', url)

    @admin.action(description="Run now (choose the period)", permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._period_page(request, queryset, action="run_now", title="Run now")

    @admin.action(description="Send a test to my own address", permissions=["run"])
    def send_test(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if not request.user.email:  # type: ignore[union-attr]
            self.message_user(request, "Your user has no email address: add one to your profile first.", messages.ERROR)
            return None
        return self._period_page(request, queryset, action="send_test", title="Send a test")

    def _period_page(self, request: HttpRequest, queryset: QuerySet, *, action: str, title: str) -> HttpResponse | None:
        recipients = _choosable_recipients(list(queryset)) if action == "send_test" else None
        form = RunNowForm(request.POST if "confirm" in request.POST else None, recipients=recipients)
        if form.is_valid():
            try:
                created = self._run_or_test(request, queryset, action, form.cleaned_data)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                self._announce(request, created, action)
                return None
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "reports": queryset,
            "form": form,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "user_email": request.user.email,  # type: ignore[union-attr]
        }
        return TemplateResponse(request, "admin/reporting/report/run_now.html", context)

    def _run_or_test(self, request: HttpRequest, queryset: QuerySet, action: str, cleaned: dict) -> list[ReportRun]:
        report_ids, period_day = [report.pk for report in queryset], cleaned["period_day"]
        if action != "send_test":
            return services_runs.run_now(report_ids=report_ids, period_day=period_day, actor=request.user)
        whose = cleaned.get("recipient")
        whose_id = whose.pk if whose else None
        return services_runs.send_test(
            report_ids=report_ids,
            period_day=period_day,
            actor=request.user,  # type: ignore[arg-type]
            for_recipient_id=whose_id,
        )

    def _announce(self, request: HttpRequest, created: list[ReportRun], action: str) -> None:
        for run in created:
            url = reverse("admin:reporting_reportrun_change", args=[run.pk])
            what = f"A test of {run.report_name} to {request.user.email}" if action == "send_test" else run.report_name  # type: ignore[union-attr]
            self.message_user(
                request,
                format_html(
                    '{} for {} is queued: <a href="{}">follow run #{}</a>.', what, run.period_label, url, run.pk
                ),
                messages.SUCCESS,
            )

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("reporting.run_report")


AUDIT_EVENTS_SHOWN = 20
NEXT_RUNS_PARAMETERS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week", "timezone", "rule")
NEXT_RUNS_PARAMETER_LENGTH = 240  # the longest cron field the form takes
# The layout that works with any API's rows; the demo's own layouts need the demo's fields.
DEFAULT_TEMPLATE = "reports/table.html"


def _choosable_recipients(reports: list[Report]) -> QuerySet | None:
    """Whose report a test or preview of one per-recipient report may show; None for any other choice."""
    if len(reports) != 1 or not reports[0].is_per_recipient:
        return None
    return reports[0].active_recipients()


# The report list shows many reports, often on the same few schedules: each distinct
# schedule is put in words, and its next runs computed, once (per minute for the latter).


@functools.lru_cache(maxsize=1024)
def _schedule_in_words(spec: schedules.CronSpec) -> str:
    return schedules.describe(spec)


@functools.lru_cache(maxsize=1024)
def _upcoming_slots(spec: schedules.CronSpec, minute: datetime, count: int) -> tuple[tuple[str, str], ...]:
    """The next `count` slots after `minute` as (ISO 8601, words in the report's timezone).

    Slots are whole minutes, so they are the same for any moment in `minute`.
    """
    slots = schedules.next_runs(spec, after=minute, count=count)
    return tuple((slot.isoformat(), f"{slot:%a %d %b %Y, %H:%M %Z}") for slot in slots)


def _local_time(report: Report, iso: str, words: str) -> str:
    """A time in the report's timezone; local_times.js adds the viewer's own beside it."""
    return format_html('<time class="local-time" datetime="{}" data-zone="{}">{}</time>', iso, report.timezone, words)
