"""The admin for the archive: runs and their deliveries, the archived email, resend, re-run, held runs, legal hold."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import reduce
from operator import and_

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, Count, Exists, IntegerField, Max, Min, OuterRef, Q, QuerySet, When
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from reporting import archive, destinations, parts, progress
from reporting.admin import destinations as destinations_admin
from reporting.admin.common import runs_of_report_url
from reporting.forms import ResendForm
from reporting.models import Delivery, Report, ReportRun, RunAttachment, RunPart
from reporting.overview import count_of
from reporting.services import archive as services_archive
from reporting.services import runs as services_runs

SNAPSHOT_PREVIEW_BYTES = 200_000
# The archived email is data from elsewhere: shown inert, in a sandbox, and only in our own frame.
ARCHIVED_HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
}


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    readonly_fields = (
        "address",
        "kind",
        "status",
        "message_id",
        "esp_status",
        "sent_at",
        "requested_by",
        "error",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The emails; Slack, Teams and webhooks are listed apart, with their answers (change_form.html).
        return super().get_queryset(request).filter(channel=Delivery.Channel.EMAIL).select_related("requested_by")


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

    def date_hierarchy_links(self) -> dict | None:
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
    """A button on a held run's page: its words and its service."""

    label: str
    explanation: str
    service: Callable[..., bool]  # (run_id=, actor=) → whether this request took the run out of "held"
    done: str


HELD_RUN_ACTIONS = {
    "release": HeldRunAction(
        label="Send anyway",
        explanation="The email is made from the data already fetched (the archived snapshot), without the checks, "
        "and sent to the run's recipients.",
        service=services_runs.send_anyway,
        done="Run #{run.pk} is being sent anyway.",
    ),
    "rerun": HeldRunAction(
        label="Re-run",
        explanation="The data is fetched again and checked again: the email is sent if the checks pass, "
        "and the run is held again if they do not.",
        service=services_runs.rerun_held,
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
    search_help_text = (
        "Search by report name or slug, period (October 2026), a recipient's name or the value their rows were "
        'matched on (C001), every word matching: "C001 October 2026"; or by a whole email address to find '
        "the runs sent to it."
    )
    actions = ["resend", "rerun", "set_legal_hold", "clear_legal_hold"]
    inlines = [DeliveryInline]
    change_form_template = "admin/reporting/reportrun/change_form.html"
    view_on_site = False
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
        (
            "Timings",
            {
                "fields": [
                    "created_at",
                    "started_at",
                    "fetched_at",
                    "rendered_at",
                    "finished_at",
                    "deadline_at",
                    "attempts",
                ]
            },
        ),
        ("Data", {"fields": ["request_url", "row_count", "rows_hash"]}),
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
        words = term.split()
        if not words:
            return queryset, False
        # Each word names the report, the period or a recipient of a per-recipient run (their name,
        # or the value their rows were matched on): "C001 October 2026" finds what client C001 got.
        return queryset.filter(reduce(and_, (self._word_matches(word) for word in words))), False

    @staticmethod
    def _word_matches(word: str) -> Q:
        # The reports and the recipient reports a word names are each found once, as a set the
        # database hashes, and each run is checked against those sets and its own period label:
        # not a join to its report and a subquery per run, which made the search scan every
        # run with both (0.85 s a page at 200,000 runs; bench/results/admin.md).
        reports = Report.objects.filter(Q(name__icontains=word) | Q(slug__icontains=word)).values("pk")
        recipients = RunPart.objects.filter(Q(key__iexact=word) | Q(recipient_name__icontains=word)).values("run_id")
        return Q(report_id__in=reports) | Q(period_label__icontains=word) | Q(pk__in=recipients)

    def get_inlines(self, request: HttpRequest, obj=None) -> list:
        # A per-recipient run may have thousands of emails: each is on its recipient report's page.
        return [] if obj is not None and obj.per_recipient else self.inlines

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return flatten_fieldsets(self.fieldsets)

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
        url = runs_of_report_url(run.report_id)
        return format_html('<a href="{}" title="Only the runs of this report">{}</a>', url, run.report)

    @admin.display(description="emails")
    def delivery_summary(self, run: ReportRun) -> str:
        return f"{run.accepted_count} of {run.delivery_count} sent" if run.delivery_count else "—"  # type: ignore[attr-defined]

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
            # What an email links to: the run's file of that name, whichever copy a re-render archived last.
            path("<int:run_id>/files/<str:filename>", wrap(self.file_view), name="reporting_reportrun_file"),
            path(
                "<int:run_id>/parts/<int:part_id>/files/<str:filename>",
                wrap(self.file_view),
                name="reporting_reportrun_part_file",
            ),
            path("<int:run_id>/email.html", wrap(self.email_html_view), name="reporting_reportrun_email_html"),
            path("<int:run_id>/resend/", wrap(self.resend_view), name="reporting_reportrun_resend"),
            path(
                "<int:run_id>/destinations/<int:delivery_id>/resend/",
                wrap(self.resend_destination_view),
                name="reporting_reportrun_resend_destination",
            ),
            path("<int:run_id>/send-anyway/", wrap(self.release_view), name="reporting_reportrun_release"),
            path("<int:run_id>/rerun-held/", wrap(self.rerun_held_view), name="reporting_reportrun_rerun_held"),
            path("<int:run_id>/progress.json", wrap(self.progress_view), name="reporting_reportrun_progress"),
            path(
                "<int:run_id>/send-to-the-rest/",
                wrap(self.send_to_the_rest_view),
                name="reporting_reportrun_send_to_the_rest",
            ),
            *super().get_urls(),
        ]

    def send_to_the_rest_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """A per-recipient run's recipients who did not get their report, sent theirs in a new run: confirm, then go."""
        if not self.has_rerun_permission(request):
            raise PermissionDenied
        run = get_object_or_404(ReportRun.objects.select_related("report"), pk=run_id)
        if not run.per_recipient:
            raise Http404("Not a run of a per-recipient report.")
        error = None
        if request.method == "POST":
            try:
                new = services_runs.send_to_the_rest(run_id=run.pk, actor=request.user)
            except ValidationError as exc:
                error = " ".join(exc.messages)
            else:
                self.message_user(
                    request, f"Run #{new.pk} sends their report to {len(new.recipients)} recipients.", messages.SUCCESS
                )
                return HttpResponseRedirect(new.get_absolute_url())
        surely, perhaps = parts.not_received(run)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Send their report to those who did not get it: run #{run.pk}",
            "opts": self.model._meta,
            "run": run,
            "surely": surely,
            "perhaps": perhaps,
            "error": error,
        }
        return TemplateResponse(request, "admin/reporting/reportrun/send_to_the_rest.html", context)

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
                "attachments": archive.own_attachments(obj),
                "snapshot_preview": _snapshot_preview(obj),
                "can_resend": self.has_resend_permission(request) and obj.is_rendered,
                "resend_url": reverse("admin:reporting_reportrun_resend", args=[obj.pk]),
                "can_release": self.has_release_permission(request) and obj.status == ReportRun.Status.HELD,
                "release_url": reverse("admin:reporting_reportrun_release", args=[obj.pk]),
                "rerun_held_url": reverse("admin:reporting_reportrun_rerun_held", args=[obj.pk]),
                "working": obj.status in ReportRun.WORKING,
                "recipient_reports": _recipient_reports(obj) if obj.per_recipient else None,
                # The alert says to re-run a failed run from its page: here is the button. A skipped
                # run's re-run is a run by hand, which sends whatever its report's "Send only if".
                "can_rerun": self.has_rerun_permission(request)
                and obj.status in (ReportRun.Status.FAILED, ReportRun.Status.MISSED, ReportRun.Status.SKIPPED)
                and not obj.per_recipient,
                "can_send_to_the_rest": self.has_rerun_permission(request)
                and obj.per_recipient
                and obj.status in (ReportRun.Status.PARTIALLY_SENT, ReportRun.Status.FAILED),
                "progress_url": reverse("admin:reporting_reportrun_progress", args=[obj.pk]),
                "default_from_email": settings.DEFAULT_FROM_EMAIL,  # of a run made before it kept its sender
                "destination_deliveries": [
                    (delivery, destinations.answer_in_words(delivery.answer))
                    for delivery in destinations.deliveries_of(obj)
                ],
                "can_resend_destinations": self.has_resend_permission(request) and obj.is_rendered,
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
        html = archive.html_with_images_inline(run)  # its charts as data: URIs, which the CSP allows
        return HttpResponse(html, content_type="text/html; charset=utf-8", headers=ARCHIVED_HTML_HEADERS)

    def attachment_view(self, request: HttpRequest, run_id: int, attachment_id: int) -> FileResponse:
        if not request.user.has_perm("reporting.view_reportrun"):
            raise PermissionDenied
        return self._file_response(get_object_or_404(RunAttachment, pk=attachment_id, run_id=run_id))

    def file_view(self, request: HttpRequest, run_id: int, filename: str, part_id: int | None = None) -> FileResponse:
        """A file of the run (or of one recipient's part) by its name: the address its email links to."""
        if not request.user.has_perm("reporting.view_reportrun"):
            raise PermissionDenied
        # part_id None: the run's own file (part IS NULL), not a recipient's of the same name.
        return self._file_response(get_object_or_404(RunAttachment, run_id=run_id, part_id=part_id, filename=filename))

    def _file_response(self, attachment: RunAttachment) -> FileResponse:
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
            if action.service(run_id=run.pk, actor=request.user):
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

    def resend_destination_view(self, request: HttpRequest, run_id: int, delivery_id: int) -> HttpResponse:
        return destinations_admin.resend_to_destination_page(self, request, run_id, delivery_id)

    @admin.action(description="Resend the archived email", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._resend_page(request, queryset)

    def _resend_page(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        """Choose who gets it, see exactly who will, then send: nobody gets it who was not listed."""
        if not self.has_resend_permission(request):
            raise PermissionDenied
        chosen = list(queryset.select_related("report").order_by("pk"))
        if not chosen:  # a run that is not there (the action always has one chosen): no empty page
            raise Http404("No such run.")
        step = request.POST.get("step")
        form = ResendForm(request.POST if step in ("review", "send", "edit") else None)
        plan = None
        if step in ("review", "send") and form.is_valid():
            run_ids, addresses = [run.pk for run in chosen], form.cleaned_data["address_list"]
            try:
                if step == "send":
                    return self._resent(
                        request, services_archive.resend(run_ids=run_ids, addresses=addresses, actor=request.user)
                    )
                plan = services_archive.plan_resend(run_ids=run_ids, addresses=addresses)
            except ValidationError as exc:
                form.add_error(None, exc)
        context = {
            **self.admin_site.each_context(request),
            "title": "Resend archived email",
            "opts": self.model._meta,
            "chosen_runs": chosen,
            "form": form,
            "plan": plan,
            "address_count": sum(len(each.addresses) for each in plan or []),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/reporting/reportrun/resend.html", context)

    def _resent(self, request: HttpRequest, planned: list[services_archive.PlannedResend]) -> HttpResponse:
        for each in planned:
            to = ", ".join(each.addresses)
            self.message_user(request, f"Resend of run #{each.run.pk} to {to} is queued.", messages.SUCCESS)
        if len(planned) == 1:
            return HttpResponseRedirect(reverse("admin:reporting_reportrun_change", args=[planned[0].run.pk]))
        return HttpResponseRedirect(reverse("admin:reporting_reportrun_changelist"))

    @admin.action(description="Re-run: fetch and render the same period again as a new run", permissions=["rerun"])
    def rerun(self, request: HttpRequest, queryset: QuerySet) -> None:
        for run in services_runs.rerun(run_ids=list(queryset.values_list("pk", flat=True)), actor=request.user):
            self.message_user(
                request,
                f"Re-run of {run.report_name} for {run.period_label} queued as run #{run.pk}.",
                messages.SUCCESS,
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
        run_ids = list(queryset.values_list("pk", flat=True))
        changed = services_archive.set_legal_hold(run_ids=run_ids, held=held, actor=request.user)
        state = "on legal hold" if held else "released from legal hold"
        self.message_user(request, f"{changed} run{'s' if changed != 1 else ''} {state}.", messages.SUCCESS)


RECIPIENT_REPORTS_SHOWN = 50


def _recipient_reports(run: ReportRun) -> dict:
    """A per-recipient run's parts at a glance: how many in each state, and the first, those needing attention first."""
    counts = dict(run.parts.values_list("status").annotate(count=Count("pk")).order_by())
    attention = Case(
        When(status__in=(RunPart.Status.FAILED, RunPart.Status.HELD), then=0), default=1, output_field=IntegerField()
    )
    shown = list(run.parts.order_by(attention, "pk")[:RECIPIENT_REPORTS_SHOWN])
    list_url = reverse("admin:reporting_runpart_changelist") + f"?run={run.pk}"
    return {
        "counts": [
            (label, counts.get(status, 0), f"{list_url}&status__exact={status}")
            for status, label in RunPart.Status.choices
            if counts.get(status)
        ],
        "total": sum(counts.values()),
        "shown": shown,
        "list_url": list_url,
    }


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
