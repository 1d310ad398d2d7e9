"""The Django admin: definitions, schedules, the archive, and the run-now and resend pages."""

from __future__ import annotations

import functools
import json
import os
from datetime import date, datetime

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Exists, F, Func, IntegerField, Max, Min, OuterRef, QuerySet, Subquery
from django.db.models.functions import JSONArray
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import get_script_prefix, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from reporting import runs, schedules, tasks
from reporting.forms import ReportForm, ResendForm, RunNowForm
from reporting.models import DataSource, Delivery, Recipient, RecipientList, Report, ReportRun, RunAttachment

SNAPSHOT_PREVIEW_BYTES = 200_000
RUN_HISTORY_LENGTH = 10
# A mark per status for the run history: shape and colour (see report/change_list.html).
RUN_MARKS = {
    ReportRun.Status.SENT: ("sent", "●"),
    ReportRun.Status.PARTIALLY_SENT: ("partial", "◐"),
    ReportRun.Status.FAILED: ("failed", "✕"),
}
RUN_MARK_WORKING = ("working", "○")


@admin.register(DataSource)
class DataSourceAdmin(admin.ModelAdmin):
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
                    "email_max_rows",
                    "recipients",
                    "recipient_lists",
                ]
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
        with transaction.atomic():
            super().save_model(request, report, form, change)
            spec = form.schedule_spec()
            if spec is None:
                schedules.delete_schedule(report)
                Report.objects.filter(pk=report.pk).update(periodic_task=None)
                report.periodic_task = None
            else:
                schedules.save_schedule(report=report, spec=spec)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        buttons = [("run_now", "Run now…"), ("send_test", "Send test…")] if self.has_run_permission(request) else []
        return super().change_view(request, object_id, form_url, {"report_buttons": buttons, **(extra_context or {})})

    @admin.display(description="schedule")
    def schedule_in_words(self, report: Report) -> str:
        spec = schedules.spec_for(report) if report.pk else None
        return _schedule_in_words(spec) if spec else "Not scheduled (runs only by hand)"

    @admin.display(description="next run")
    def next_run(self, report: Report) -> str:
        upcoming = self._upcoming(report, 1)
        return upcoming[0] if upcoming else "—"

    @admin.display(description="next five runs")
    def next_runs(self, report: Report):
        upcoming = self._upcoming(report, 5)
        if not upcoming:
            return "—"
        return format_html("<ol>{}</ol>", format_html_join("", "<li>{}</li>", ((text,) for text in upcoming)))

    def _upcoming(self, report: Report, count: int) -> tuple[str, ...]:
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
        if form.is_valid():
            period_day = form.cleaned_data["period_day"]
            created = [self._create_run(request, report, action, period_day) for report in queryset]
            for run in created:
                tasks.execute_run.delay_on_commit(run_id=run.pk)
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
        return request.user.has_perm("reporting.add_reportrun")


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


def _count_of(queryset: QuerySet) -> Subquery:
    """The number of rows of a queryset correlated with OuterRef, as a subquery (0 when none)."""
    counted = queryset.order_by().annotate(count=Func(F("pk"), function="COUNT", output_field=IntegerField()))
    return Subquery(counted.values("count"))


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
    actions = ["resend", "rerun"]
    inlines = [DeliveryInline]
    change_form_template = "admin/reporting/reportrun/change_form.html"
    fieldsets = [
        (None, {"fields": ["report", "period", "trigger", "requested_by", "status", "error_in_words"]}),
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
                accepted_count=_count_of(deliveries.filter(status__in=Delivery.ACCEPTED)),
                delivery_count=_count_of(deliveries),
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
        return request.user.has_perm("reporting.add_reportrun")

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
            path("<int:run_id>/resend/", wrap(self.resend_view), name="reporting_reportrun_resend"),
            *super().get_urls(),
        ]

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
                **context,
            }
        return super().render_change_form(request, context, add, change, form_url, obj)

    def attachment_view(self, request: HttpRequest, run_id: int, attachment_id: int) -> FileResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        attachment = get_object_or_404(RunAttachment, pk=attachment_id, run_id=run_id)
        return FileResponse(
            attachment.file.open("rb"),
            as_attachment=True,
            filename=attachment.filename,
            content_type=attachment.mimetype,
        )

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


# The report list shows many reports, often on the same few schedules: each distinct
# schedule is put in words, and its next runs computed, once (per minute for the latter).


@functools.lru_cache(maxsize=1024)
def _schedule_in_words(spec: schedules.CronSpec) -> str:
    return schedules.describe(spec)


@functools.lru_cache(maxsize=1024)
def _upcoming_slots(spec: schedules.CronSpec, minute: datetime, count: int) -> tuple[str, ...]:
    """The next `count` slots after `minute`: slots are whole minutes, so the same for any moment in it."""
    return tuple(f"{slot:%a %d %b %Y, %H:%M %Z}" for slot in schedules.next_runs(spec, after=minute, count=count))


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
