"""The Django admin: definitions, schedules, the archive, and the run-now and resend pages."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, QuerySet, Subquery
from django.db.models.functions import JSONArray
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import get_script_prefix, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from reporting import audit, overview, preview, progress, runs, schedules, tasks
from reporting.forms import PreviewForm, ReportForm, ResendForm, RunNowForm
from reporting.models import (
    AuditEvent,
    DataSource,
    Delivery,
    Recipient,
    RecipientList,
    Report,
    ReportRun,
    RunAttachment,
)
from reporting.overview import count_of
from reporting.pipeline import fetch

SNAPSHOT_PREVIEW_BYTES = 200_000
OVERVIEW_PAGE_SIZE = 100
RUN_HISTORY_LENGTH = 10
# A mark per status for the run history: shape and colour (see report/change_list.html).
RUN_MARKS = {
    ReportRun.Status.SENT: ("sent", "●"),
    ReportRun.Status.PARTIALLY_SENT: ("partial", "◐"),
    ReportRun.Status.FAILED: ("failed", "✕"),
    ReportRun.Status.HELD: ("held", "⏸"),
    ReportRun.Status.MISSED: ("missed", "◌"),
}
RUN_MARK_WORKING = ("working", "○")
# The archived email is data from elsewhere: shown inert, in a sandbox, and only in our own frame.
ARCHIVED_HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
}


class DataSourceForm(forms.ModelForm):
    class Meta:
        model = DataSource
        fields = [
            "name",
            "base_url",
            "auth_scheme",
            "auth_header_name",
            "secret_env_var",
            "connect_timeout",
            "read_timeout",
            "verify_tls",
        ]

    def clean_base_url(self) -> str:
        """Only a host in REPORTING_ALLOWED_SOURCE_HOSTS (checked by name here, by address when fetching)."""
        url = self.cleaned_data["base_url"]
        try:
            fetch.check_source_url(url)
        except fetch.FetchError as exc:
            raise ValidationError(exc.message) from exc
        return url


@admin.register(DataSource)
class DataSourceAdmin(admin.ModelAdmin):
    form = DataSourceForm
    list_display = ["name", "base_url", "auth_scheme", "secret_env_var", "secret_available"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["secret_available"]
    fieldsets = [
        (None, {"fields": ["name", "base_url"]}),
        ("Authentication", {"fields": ["auth_scheme", "auth_header_name", "secret_env_var", "secret_available"]}),
        ("Connection", {"fields": ["connect_timeout", "read_timeout", "verify_tls"]}),
    ]

    @admin.display(description="secret set on this web server", boolean=True)
    def secret_available(self, source: DataSource) -> bool | None:
        """Whether the named variable is set here; never the value itself."""
        if not source.secret_env_var:
            return None
        return bool(os.environ.get(source.secret_env_var))


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    list_display = ["email", "name", "active"]
    list_filter = ["active", "lists"]
    search_fields = ["email", "name"]


@admin.register(RecipientList)
class RecipientListAdmin(admin.ModelAdmin):
    list_display = ["name", "size"]
    search_fields = ["name"]
    filter_horizontal = ["recipients"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(size=Count("recipients"))

    @admin.display(ordering="size")
    def size(self, recipient_list: RecipientList) -> int:
        return recipient_list.size


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    form = ReportForm

    class Media:
        js = ["reporting/local_times.js"]

    list_display = ["name", "period_kind", "schedule_in_words", "next_run", "enabled", "last_run", "run_history"]
    list_filter = ["enabled", "period_kind", "data_source"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["recipients", "recipient_lists"]
    readonly_fields = ["schedule_in_words", "next_runs", "runs_link"]
    actions = ["run_now", "send_test"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "owner", "enabled", "runs_link"]}),
        ("Data", {"fields": ["data_source", "path", "query_params", "records_path"]}),
        (
            "Period and schedule",
            {
                "fields": [
                    "period_kind",
                    "timezone",
                    "schedule_enabled",
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
                    "email_max_rows",
                    "charts",
                    "recipients",
                    "recipient_lists",
                ]
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

    def save_model(self, request: HttpRequest, report: Report, form: ReportForm, change: bool) -> None:
        # The audit's "before", read from the database: `report` already holds the form's values.
        form.audit_before = _audit_state(report.pk) if change else {}
        with transaction.atomic():
            super().save_model(request, report, form, change)
            spec = form.schedule_spec()
            if spec is None:
                schedules.delete_schedule(report)
                Report.objects.filter(pk=report.pk).update(periodic_task=None)
                report.periodic_task = None
            else:
                schedules.save_schedule(report=report, spec=spec)

    def save_related(self, request: HttpRequest, form: ReportForm, formsets, change: bool) -> None:
        super().save_related(request, form, formsets, change)  # the recipients (M2M) are saved here
        report = form.instance
        changes = audit.changes_between(form.audit_before, _audit_state(report.pk))
        if change and not changes:
            return
        summary = f"Changed {', '.join(_audit_label(name) for name in changes)}." if change else "Created the report."
        action = AuditEvent.Action.CHANGED if change else AuditEvent.Action.CREATED
        audit.record(actor=request.user, action=action, summary=summary, report=report, changes=changes)

    def delete_model(self, request: HttpRequest, report: Report) -> None:
        with transaction.atomic():  # the event goes if the delete fails (a report with runs is protected)
            _record_deleted(request, report)
            super().delete_model(request, report)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            for report in queryset:
                _record_deleted(request, report)
            super().delete_queryset(request, queryset)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        buttons = []
        if self.has_preview_permission(request) and str(object_id).isdigit():
            buttons.append((reverse("admin:reporting_report_preview", args=[object_id]), "Preview…"))
        if self.has_run_permission(request) and str(object_id).isdigit():
            buttons += [
                (reverse("admin:reporting_report_run_now", args=[object_id]), "Run now…"),
                (reverse("admin:reporting_report_send_test", args=[object_id]), "Send test…"),
            ]
        # One query: the latest events of this report, with the actor's name kept on the event.
        events = AuditEvent.objects.filter(report_id=object_id).order_by("-at", "-pk")[:AUDIT_EVENTS_SHOWN]
        context = {"report_buttons": buttons, "audit_events": events if str(object_id).isdigit() else []}
        return super().change_view(request, object_id, form_url, {**context, **(extra_context or {})})

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:report_id>/run-now/", wrap(self.run_now_view), name="reporting_report_run_now"),
            path("<int:report_id>/send-test/", wrap(self.send_test_view), name="reporting_report_send_test"),
            path("<int:report_id>/preview/", wrap(self.preview_view), name="reporting_report_preview"),
            path("overview/", wrap(self.overview_view), name="reporting_report_overview"),
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

    def has_preview_permission(self, request: HttpRequest) -> bool:
        """Who may fetch live data to look at a report: whoever may edit it or send it."""
        return request.user.has_perm("reporting.change_report") or self.has_run_permission(request)

    def preview_view(self, request: HttpRequest, report_id: int) -> HttpResponse:
        """The report rendered for a chosen period with live data: nothing is sent or archived."""
        if not self.has_preview_permission(request):
            raise PermissionDenied
        report = get_object_or_404(Report, pk=report_id)
        form = PreviewForm(request.GET or None)
        result = error = None
        if form.is_valid() or not request.GET:
            day = form.cleaned_data.get("period_day") if form.is_bound else None
            try:
                result = preview.preview_report(report_id=report.pk, period_day=day)
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
        url = reverse("admin:reporting_reportrun_change", args=[report.last_run_id])
        status = ReportRun.Status(report.recent_statuses[0]).label
        return format_html('<a href="{}">{} · {}</a>', url, status, f"{report.last_run_at:%d %b %H:%M}")

    @admin.display(description=f"last {RUN_HISTORY_LENGTH} runs")
    def run_history(self, report: Report):
        """The latest runs' statuses as marks, oldest first, linking to the report's runs."""
        statuses = [status for status in reversed(getattr(report, "recent_statuses", None) or []) if status]
        if not statuses:
            return "—"
        marks = mark_safe("".join(RUN_MARK_HTML[status] for status in statuses))  # each one from format_html
        url = _runs_of_report_url(report.pk)
        words = ", ".join(RUN_STATUS_LABELS[status].lower() for status in statuses)
        return format_html(
            '<a class="run-history" href="{}" aria-label="Runs, oldest first: {}">{}</a>', url, words, marks
        )

    @admin.display(description="archive")
    def runs_link(self, report: Report):
        if not report.pk:
            return "—"
        url = _runs_of_report_url(report.pk)
        return format_html('<a href="{}">All runs of this report</a>', url)

    @admin.action(description="Run now (choose the period)", permissions=["run"])
    def run_now(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._period_page(request, queryset, action="run_now", title="Run now")

    @admin.action(description="Send a test to my own address", permissions=["run"])
    def send_test(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if not request.user.email:
            self.message_user(request, "Your user has no email address: add one to your profile first.", messages.ERROR)
            return None
        return self._period_page(request, queryset, action="send_test", title="Send a test")

    def _period_page(self, request: HttpRequest, queryset: QuerySet, *, action: str, title: str) -> HttpResponse | None:
        form = RunNowForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid() and not _refuse_to_run(form, queryset, action, request.user.email):
            period_day = form.cleaned_data["period_day"]
            created = [self._create_run(request, report, action, period_day) for report in queryset]
            for run in created:
                tasks.execute_run.delay_on_commit(run_id=run.pk)
                _record_run(request, run, action)
            self._announce(request, created, action)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "reports": queryset,
            "form": form,
            "action": action,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "user_email": request.user.email,
        }
        return TemplateResponse(request, "admin/reporting/report/run_now.html", context)

    def _create_run(self, request: HttpRequest, report: Report, action: str, period_day: date | None) -> ReportRun:
        if action == "send_test":
            return runs.create_test_run(
                report_id=report.pk,
                period_day=period_day,
                user_email=request.user.email,
                requested_by_id=request.user.pk,
            )
        return runs.create_manual_run(report_id=report.pk, period_day=period_day, requested_by_id=request.user.pk)

    def _announce(self, request: HttpRequest, created: list[ReportRun], action: str) -> None:
        for run in created:
            url = reverse("admin:reporting_reportrun_change", args=[run.pk])
            what = f"A test of {run.report} to {request.user.email}" if action == "send_test" else f"{run.report}"
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
_AUDIT_LABELS = {"schedule": "schedule", "recipients": "recipients", "recipient_lists": "recipient lists"}


def _audit_state(report_id: int) -> dict[str, object]:
    """The report as staff edit it, as text per field (its schedule and recipients included)."""
    report = Report.objects.select_related("data_source", "owner", "periodic_task__crontab").get(pk=report_id)
    state: dict[str, object] = {}
    for field in Report._meta.concrete_fields:
        if field.editable and field.name not in ("id", "created_at", "updated_at"):
            value = getattr(report, field.name)
            state[field.name] = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else _text(value)
    spec = schedules.spec_for(report)
    state["schedule"] = (
        f"{spec.minute} {spec.hour} {spec.day_of_month} {spec.month_of_year} {spec.day_of_week} ({spec.timezone})"
        if spec
        else "not scheduled"
    )
    state["recipients"] = sorted(report.recipients.values_list("email", flat=True))
    state["recipient_lists"] = sorted(report.recipient_lists.values_list("name", flat=True))
    return state


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _audit_label(name: str) -> str:
    return _AUDIT_LABELS.get(name) or str(Report._meta.get_field(name).verbose_name)


def _record_deleted(request: HttpRequest, report: Report) -> None:
    summary = f"Deleted the report {report.name}."
    audit.record(actor=request.user, action=AuditEvent.Action.DELETED, summary=summary, report=report)


def _record_run(request: HttpRequest, run: ReportRun, action: str) -> None:
    if action == "send_test":
        summary = f"Sent a test of run #{run.pk} ({run.period_label}) to {', '.join(run.recipients)}."
        audit.record(actor=request.user, action=AuditEvent.Action.TEST_SENT, summary=summary, run=run)
    else:
        summary = f"Ran #{run.pk} now ({run.period_label}) for {', '.join(run.recipients) or 'no one'}."
        audit.record(actor=request.user, action=AuditEvent.Action.RAN, summary=summary, run=run)


def _refuse_to_run(form: RunNowForm, reports: QuerySet, action: str, user_email: str) -> bool:
    """Add an error in words to the run-now form when a run could only fail to send; True if so."""
    if action == "send_test":
        try:
            runs.clean_addresses([user_email])
        except ValidationError:
            form.add_error(None, f"Your email address ({user_email}) is not valid: correct it in your profile first.")
    else:
        empty = [report.name for report in reports if not report.recipient_addresses()]
        if empty:
            form.add_error(
                None, f"No active recipients: {', '.join(empty)}. Add a recipient or a recipient list first."
            )
    return bool(form.errors)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = ["address", "kind", "status", "message_id", "esp_status", "sent_at", "requested_by", "error"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("requested_by")


class ReportFilter(admin.SimpleListFilter):
    """The run list's filter by report, showing only the chosen report.

    A link per report would put thousands of links on every page of the archive. The
    filter is chosen from the report column, a report's page ("Runs") or the report list's
    run history; here it shows which report is chosen, and "All" clears it.
    """

    title = "report"
    parameter_name = "report__id__exact"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        chosen = self.value()
        if chosen is None:
            return []
        name = Report.objects.filter(pk=chosen).values_list("name", flat=True).first() if chosen.isdigit() else None
        return [(chosen, name or f"Report #{chosen}")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        chosen = self.value()
        if chosen is None:
            return queryset
        if not chosen.isdigit():
            raise IncorrectLookupParameters(f"Not a report id: {chosen!r}")
        return queryset.filter(report_id=chosen)


class RunChangeList(ChangeList):
    """The run list, whose date hierarchy does not read every run to draw its links."""

    def date_hierarchy_links(self) -> dict:
        """Django's date hierarchy, with the links spanning the first to the last run in the list.

        Django lists the years (or a year's months) that have runs with a DISTINCT over every
        run in range: a scan of the whole archive on its landing page. Here they come from
        the MIN and MAX of the date, two index probes; a year or month in between without a
        run still shows, and lists none. Once a month is chosen, Django's own query reads
        that month's runs only, and is used as it is.
        """
        field = self.date_hierarchy
        year = self.params.get(f"{field}__year")
        if self.params.get(f"{field}__month") or self.params.get(f"{field}__day"):
            return date_hierarchy(self)
        bounds = self.queryset.aggregate(first=Min(field), last=Max(field))
        if bounds["first"] is None:
            return {"show": True, "back": None, "choices": []}
        first, last = timezone.localtime(bounds["first"]), timezone.localtime(bounds["last"])
        if year is None and first.year != last.year:
            return self._hierarchy(None, [(str(each), {"year": each}) for each in range(first.year, last.year + 1)])
        if year is not None or first.month != last.month:
            year = int(year or first.year)
            months = [date(year, month, 1) for month in range(first.month, last.month + 1)]
            choices = [
                (_date_title(month, "YEAR_MONTH_FORMAT"), {"year": year, "month": month.month}) for month in months
            ]
            return self._hierarchy(({}, _("All dates")), choices)
        days = [date(first.year, first.month, day) for day in range(first.day, last.day + 1)]
        choices = [
            (_date_title(day, "MONTH_DAY_FORMAT"), {"year": day.year, "month": day.month, "day": day.day})
            for day in days
        ]
        return self._hierarchy(({"year": first.year}, str(first.year)), choices)

    def _hierarchy(self, back: tuple[dict, str] | None, choices: list[tuple[str, dict]]) -> dict:
        """The context of admin/date_hierarchy.html, from (title, {"year": …, …}) pairs."""
        prefix = f"{self.date_hierarchy}__"

        def link(parts: dict) -> str:
            return self.get_query_string({prefix + part: str(value) for part, value in parts.items()}, [prefix])

        return {
            "show": True,
            "back": {"link": link(back[0]), "title": back[1]} if back else None,
            "choices": [{"link": link(parts), "title": title} for title, parts in choices],
        }


def _date_title(day: date, format_name: str) -> str:
    return capfirst(formats.date_format(day, format_name))


@dataclass(frozen=True)
class HeldRunAction:
    """A button on a held run's page: its words, its service, and how it is audited."""

    label: str
    explanation: str
    service: Callable[..., bool]  # (run_id=, user_id=) → whether this request took the run out of "held"
    audit: str
    summary_words: str  # formatted with the run and its reasons
    done: str

    def summary(self, run: ReportRun) -> str:
        return self.summary_words.format(run=run, reasons=" ".join(run.error.splitlines()))


HELD_RUN_ACTIONS = {
    "release": HeldRunAction(
        label="Send anyway",
        explanation="The email is made from the data already fetched (the archived snapshot), without the checks, "
        "and sent to the run's recipients.",
        service=lambda *, run_id, user_id: runs.release_held_run(run_id=run_id, released_by_id=user_id),
        audit=AuditEvent.Action.RELEASED,
        summary_words="Sent held run #{run.pk} ({run.period_label}) anyway, despite: {reasons}",
        done="Run #{run.pk} is being sent anyway.",
    ),
    "rerun": HeldRunAction(
        label="Re-run",
        explanation="The data is fetched again and checked again: the email is sent if the checks pass, "
        "and the run is held again if they do not.",
        service=lambda *, run_id, user_id: runs.rerun_held_run(run_id=run_id, requested_by_id=user_id),
        audit=AuditEvent.Action.RERAN,
        summary_words="Re-ran held run #{run.pk} ({run.period_label}) with fresh data; it was held because: {reasons}",
        done="Run #{run.pk} is fetching its data again.",
    ),
}


@admin.register(ReportRun)
class ReportRunAdmin(admin.ModelAdmin):
    list_display = ["__str__", "report_runs", "period", "trigger", "status", "created_at", "delivery_summary"]
    list_display_links = ["__str__"]
    list_filter = ["status", "trigger", ReportFilter]
    list_select_related = ["report"]
    date_hierarchy = "created_at"
    # Only columns with an index behind them sort: any other order sorts the whole archive.
    sortable_by = ["created_at"]
    # The archive is large: no second COUNT(*) of every run beside a filtered count, and no
    # per-filter counts (facets), each a scan of the whole table.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    search_fields = ["report__name", "report__slug"]
    search_help_text = "Search by report name or slug, or by a whole email address to find the runs sent to it."
    actions = ["resend", "rerun", "set_legal_hold", "clear_legal_hold"]
    inlines = [DeliveryInline]
    change_form_template = "admin/reporting/reportrun/change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "report",
                    "period",
                    "trigger",
                    "requested_by",
                    "status",
                    "error_in_words",
                    "notes",
                    "legal_hold",
                ]
            },
        ),
        ("Timings", {"fields": ["created_at", "started_at", "fetched_at", "rendered_at", "finished_at", "attempts"]}),
        ("Data", {"fields": ["request_url", "row_count"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Counted by correlated subqueries on the deliveries' run index, not a JOIN + GROUP BY
        # of every run with every delivery: the database evaluates them only for the rows it
        # returns (a page after its LIMIT, one run), and COUNT(*) and the date hierarchy's
        # queries leave them out.
        deliveries = Delivery.objects.filter(run=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .select_related("report")
            .annotate(
                accepted_count=count_of(deliveries.filter(status__in=Delivery.ACCEPTED)),
                delivery_count=count_of(deliveries),
            )
        )

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return RunChangeList

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        """A whole email address finds the runs sent to it; other words match the report's name or slug.

        The address is looked up with EXISTS on the deliveries' address index rather than a
        join, so the list needs no DISTINCT over every run and its deliveries.
        """
        term = search_term.strip()
        if "@" in term and len(term.split()) == 1:
            sent_to = Delivery.objects.filter(run=OuterRef("pk"), address__iexact=term)
            return queryset.filter(Exists(sent_to)), False
        return super().get_search_results(request, queryset, search_term)

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the archive is read-only; views need only the view permission

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("reporting.resend_reportrun")

    def has_rerun_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("reporting.run_report")

    @admin.display(description="period", ordering="period_start")
    def period(self, run: ReportRun) -> str:
        return run.period_label

    @admin.display(description="report")
    def report_runs(self, run: ReportRun):
        url = _runs_of_report_url(run.report_id)
        return format_html('<a href="{}" title="Only the runs of this report">{}</a>', url, run.report)

    @admin.display(description="emails")
    def delivery_summary(self, run: ReportRun) -> str:
        return f"{run.accepted_count} of {run.delivery_count} sent" if run.delivery_count else "—"

    @admin.display(description="error")
    def error_in_words(self, run: ReportRun) -> str:
        return run.error or "—"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:run_id>/attachment/<int:attachment_id>/",
                wrap(self.attachment_view),
                name="reporting_reportrun_attachment",
            ),
            path("<int:run_id>/email.html", wrap(self.email_html_view), name="reporting_reportrun_email_html"),
            path("<int:run_id>/resend/", wrap(self.resend_view), name="reporting_reportrun_resend"),
            path("<int:run_id>/send-anyway/", wrap(self.release_view), name="reporting_reportrun_release"),
            path("<int:run_id>/rerun-held/", wrap(self.rerun_held_view), name="reporting_reportrun_rerun_held"),
            path("<int:run_id>/progress.json", wrap(self.progress_view), name="reporting_reportrun_progress"),
            *super().get_urls(),
        ]

    def progress_view(self, request: HttpRequest, run_id: int) -> JsonResponse:
        """Where a working run is, for its page to follow without a reload."""
        if not request.user.has_perm("reporting.view_reportrun"):
            raise PermissionDenied
        try:
            answer = progress.run_progress(run_id=run_id)
        except ReportRun.DoesNotExist as exc:
            raise Http404("No such run.") from exc
        return JsonResponse(answer, headers={"Cache-Control": "no-store"})

    def render_change_form(
        self, request: HttpRequest, context: dict, add: bool = False, change: bool = False, form_url: str = "", obj=None
    ) -> HttpResponse:
        if obj is not None:
            context = {
                "run": obj,
                "attachments": obj.attachments.all(),
                "snapshot_preview": _snapshot_preview(obj),
                "can_resend": self.has_resend_permission(request) and obj.is_rendered,
                "resend_url": reverse("admin:reporting_reportrun_resend", args=[obj.pk]),
                "can_release": self.has_release_permission(request) and obj.status == ReportRun.Status.HELD,
                "release_url": reverse("admin:reporting_reportrun_release", args=[obj.pk]),
                "rerun_held_url": reverse("admin:reporting_reportrun_rerun_held", args=[obj.pk]),
                "working": obj.status in ReportRun.WORKING,
                "progress_url": reverse("admin:reporting_reportrun_progress", args=[obj.pk]),
                "progress_steps": [
                    ("queued", "Queued"),
                    ("fetching", "Fetching"),
                    ("rendering", "Rendering"),
                    ("sending", "Sending"),
                    ("done", "Done"),
                ],
                **context,
            }
        return super().render_change_form(request, context, add, change, form_url, obj)

    def email_html_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """The archived email's HTML, for the run page's frame: inert (no scripts, forms or network)."""
        if not request.user.has_perm("reporting.view_reportrun"):
            raise PermissionDenied
        run = get_object_or_404(ReportRun.objects.only("body_html", "rendered_at"), pk=run_id)
        if not run.is_rendered:
            raise Http404("This run has no archived email.")
        html = runs.html_with_images_inline(run)  # its charts as data: URIs, which the CSP allows
        return HttpResponse(html, content_type="text/html; charset=utf-8", headers=ARCHIVED_HTML_HEADERS)

    def attachment_view(self, request: HttpRequest, run_id: int, attachment_id: int) -> FileResponse:
        if not request.user.has_perm("reporting.view_reportrun"):
            raise PermissionDenied
        attachment = get_object_or_404(RunAttachment, pk=attachment_id, run_id=run_id)
        if not attachment.file:
            raise Http404("This file was removed by the retention of the archive.")
        return FileResponse(
            attachment.file.open("rb"),
            as_attachment=True,
            filename=attachment.filename,
            content_type=attachment.mimetype,
        )

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("reporting.release_reportrun")

    def release_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """The "Send anyway…" page of a held run: its archived data, rendered without the checks, sent."""
        return self._held_run_page(request, run_id, HELD_RUN_ACTIONS["release"])

    def rerun_held_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """The "Re-run…" page of a held run: fetch the data again and check it again."""
        return self._held_run_page(request, run_id, HELD_RUN_ACTIONS["rerun"])

    def _held_run_page(self, request: HttpRequest, run_id: int, action: HeldRunAction) -> HttpResponse:
        if not self.has_release_permission(request):
            raise PermissionDenied
        run = get_object_or_404(ReportRun.objects.select_related("report"), pk=run_id)
        change_url = reverse("admin:reporting_reportrun_change", args=[run.pk])
        if run.status != ReportRun.Status.HELD:
            self.message_user(request, f"Run #{run.pk} is not held (it is {run.get_status_display().lower()}).")
            return HttpResponseRedirect(change_url)
        if request.method == "POST":
            with transaction.atomic():
                if action.service(run_id=run.pk, user_id=request.user.pk):
                    audit.record(actor=request.user, action=action.audit, run=run, summary=action.summary(run))
                    self.message_user(request, action.done.format(run=run), messages.SUCCESS)
                else:  # a second click, or someone else's
                    self.message_user(request, f"Run #{run.pk} was no longer held; nothing was done.", messages.WARNING)
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action.label}: run #{run.pk}",
            "opts": self.model._meta,
            "run": run,
            "reasons": run.error.splitlines(),
            "action": action,
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/reporting/reportrun/held_run.html", context)

    def resend_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        return self._resend_page(request, ReportRun.objects.filter(pk=run_id))

    @admin.action(description="Resend the archived email", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._resend_page(request, queryset)

    def _resend_page(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        if not self.has_resend_permission(request):
            raise PermissionDenied
        chosen = list(queryset.select_related("report"))
        form = ResendForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            try:
                self._queue_resends(request, chosen, form.cleaned_data["address_list"])
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                target = chosen[0].pk if len(chosen) == 1 else None
                url = (
                    reverse("admin:reporting_reportrun_change", args=[target])
                    if target
                    else reverse("admin:reporting_reportrun_changelist")
                )
                return HttpResponseRedirect(url)
        context = {
            **self.admin_site.each_context(request),
            "title": "Resend archived email",
            "opts": self.model._meta,
            "chosen_runs": chosen,
            "form": form,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/reporting/reportrun/resend.html", context)

    def _queue_resends(self, request: HttpRequest, chosen: list[ReportRun], addresses: list[str] | None) -> None:
        with transaction.atomic():
            for run in chosen:
                deliveries = runs.queue_resend(run_id=run.pk, addresses=addresses, requested_by_id=request.user.pk)
                ids = [delivery.pk for delivery in deliveries]
                tasks.send_resend.delay_on_commit(run_id=run.pk, delivery_ids=ids)
                summary = f"Resent run #{run.pk} ({run.period_label}) to {', '.join(d.address for d in deliveries)}."
                audit.record(actor=request.user, action=AuditEvent.Action.RESENT, summary=summary, run=run)
                self.message_user(
                    request,
                    f"Resend of run #{run.pk} to {', '.join(d.address for d in deliveries)} is queued.",
                    messages.SUCCESS,
                )

    @admin.action(description="Re-run: fetch and render the same period again as a new run", permissions=["rerun"])
    def rerun(self, request: HttpRequest, queryset: QuerySet) -> None:
        for run in queryset.select_related("report"):
            new_run = runs.create_manual_run(
                report_id=run.report_id, period_day=run.period_start, requested_by_id=request.user.pk
            )
            tasks.execute_run.delay_on_commit(run_id=new_run.pk)
            self.message_user(
                request, f"Re-run of {run.report} for {run.period_label} queued as run #{new_run.pk}.", messages.SUCCESS
            )

    def has_legal_hold_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("reporting.legal_hold_reportrun")

    @admin.action(description="Put on legal hold (never pruned by retention)", permissions=["legal_hold"])
    def set_legal_hold(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._legal_hold(request, queryset, held=True)

    @admin.action(description="Release from legal hold", permissions=["legal_hold"])
    def clear_legal_hold(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._legal_hold(request, queryset, held=False)

    def _legal_hold(self, request: HttpRequest, queryset: QuerySet, *, held: bool) -> None:
        with transaction.atomic():
            changed = list(queryset.exclude(legal_hold=held).select_related("report"))
            ReportRun.objects.filter(pk__in=[run.pk for run in changed]).update(legal_hold=held)
            for run in changed:
                what = "Put run #{} ({}) on legal hold." if held else "Released run #{} ({}) from legal hold."
                summary = what.format(run.pk, run.period_label)
                audit.record(actor=request.user, action=AuditEvent.Action.LEGAL_HOLD, summary=summary, run=run)
        state = "on legal hold" if held else "released from legal hold"
        self.message_user(request, f"{len(changed)} run{'s' if len(changed) != 1 else ''} {state}.", messages.SUCCESS)


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


def _runs_of_report_url(report_id: int) -> str:
    """The run list filtered to one report: resolved once, not once per row of a list."""
    return f"{_run_list_url(get_script_prefix())}?report__id__exact={report_id}"


@functools.lru_cache(maxsize=16)
def _run_list_url(script_prefix: str) -> str:
    return reverse("admin:reporting_reportrun_changelist")  # under the current script prefix, the key


def _run_mark(status: str) -> str:
    css_class, mark = RUN_MARKS.get(status, RUN_MARK_WORKING)
    return format_html('<span class="run-mark run-{}" title="{}">{}</span>', css_class, status.label, mark)


RUN_MARK_HTML = {status: _run_mark(status) for status in ReportRun.Status}
RUN_STATUS_LABELS = dict(ReportRun.Status.choices)


def _snapshot_preview(run: ReportRun) -> str:
    if not run.data_snapshot:
        return ""
    with run.data_snapshot.open("rb") as snapshot:
        content = snapshot.read(SNAPSHOT_PREVIEW_BYTES + 1)
    if len(content) > SNAPSHOT_PREVIEW_BYTES:
        return (
            content[:SNAPSHOT_PREVIEW_BYTES].decode("utf-8", "replace") + "\n… (truncated; the full data is archived)"
        )
    try:
        return json.dumps(json.loads(content), indent=2, ensure_ascii=False)
    except ValueError:
        return content.decode("utf-8", "replace")
