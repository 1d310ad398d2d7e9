"""The admin for recipient reports: each recipient's own report within a per-recipient run, found, read, resent."""

from __future__ import annotations

import json
from functools import reduce
from operator import and_

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from reporting import archive
from reporting.admin.archive import ARCHIVED_HTML_HEADERS
from reporting.forms import ResendForm
from reporting.models import Delivery, RunPart
from reporting.services import archive as services_archive
from reporting.services import runs as services_runs

DATA_PREVIEW_CHARACTERS = 200_000


class PartDeliveryInline(admin.TabularInline):
    model = Delivery
    fk_name = "part"
    extra = 0
    can_delete = False
    readonly_fields = (
        "address",
        "kind",
        "status",
        "message_id",
        "sent_at",
        "requested_by",
        "error",
    )
    fields = readonly_fields
    verbose_name_plural = "emails"

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm("reporting.view_reportrun")


class RunFilter(admin.SimpleListFilter):
    """The recipient reports of one run (the link on the run's page); shows only the chosen run."""

    title = "run"
    parameter_name = "run"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        chosen = self.value()
        return [(chosen, f"Run #{chosen}")] if chosen and chosen.isdigit() else []

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        chosen = self.value()
        if chosen is None:
            return queryset
        return queryset.filter(run_id=chosen) if chosen.isdigit() else queryset.none()


@admin.register(RunPart)
class RunPartAdmin(admin.ModelAdmin):
    """Read-only, with the archive's permissions: whoever may view runs may view their recipients' reports."""

    list_display = ["recipient", "report", "period", "status", "row_count", "sent_at", "run_link"]
    list_filter = ["status", RunFilter]
    list_select_related = ["run"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    search_fields = ["recipient_email"]  # the search box; get_search_results does the work
    search_help_text = (
        "Words of a recipient (email, name, or the value their rows were matched on, e.g. C001), "
        'a report and a period, e.g. "C001 October 2026": every word must match.'
    )
    inlines = [PartDeliveryInline]
    change_form_template = "admin/reporting/runpart/change_form.html"
    view_on_site = False
    readonly_fields = (
        "run_link",
        "report",
        "period",
        "recipient_link",
        "address",
        "attributes_in_words",
        "key",
        "status",
        "error_in_words",
        "row_count",
        "request_url",
        "rendered_at",
        "finished_at",
        "attempts",
    )
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("run", "recipient")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        """Every word must match the recipient (email, name, key), the report's name or the period's label."""
        words = search_term.split()
        if not words:
            return queryset, False
        matches = [
            Q(recipient_email__iexact=word)
            | Q(address__iexact=word)
            | Q(key__iexact=word)
            | Q(recipient_name__icontains=word)
            | Q(run__report_name__icontains=word)
            | Q(run__period_label__icontains=word)
            for word in words
        ]
        return queryset.filter(reduce(and_, matches)), False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("reporting.view_reportrun")

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm("reporting.view_reportrun")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # part of the archive: it goes with its run, by retention

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("reporting.resend_reportrun")

    @admin.display(description="recipient", ordering="recipient_email")
    def recipient(self, part: RunPart) -> str:
        return part.who

    @admin.display(description="report")
    def report(self, part: RunPart) -> str:
        return part.run.report_name

    @admin.display(description="period")
    def period(self, part: RunPart) -> str:
        return part.run.period_label

    @admin.display(description="sent")
    def sent_at(self, part: RunPart):
        return part.finished_at if part.status == RunPart.Status.SENT else None

    @admin.display(description="run")
    def run_link(self, part: RunPart):
        return format_html('<a href="{}">Run #{}</a>', part.run.get_absolute_url(), part.run_id)

    @admin.display(description="recipient")
    def recipient_link(self, part: RunPart):
        if part.recipient_id is None:
            return f"{part.who} (no longer a recipient)"
        url = reverse("admin:reporting_recipient_change", args=[part.recipient_id])
        return format_html('<a href="{}">{}</a>', url, part.who)

    @admin.display(description="attributes")
    def attributes_in_words(self, part: RunPart) -> str:
        return ", ".join(f"{name} = {value}" for name, value in sorted(part.attributes.items())) or "—"

    @admin.display(description="error")
    def error_in_words(self, part: RunPart) -> str:
        return part.error or "—"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:part_id>/email.html", wrap(self.email_html_view), name="reporting_runpart_email_html"),
            path("<int:part_id>/resend/", wrap(self.resend_view), name="reporting_runpart_resend"),
            path("<int:part_id>/send-anyway/", wrap(self.send_anyway_view), name="reporting_runpart_send_anyway"),
            path(
                "<int:part_id>/attachment/<int:attachment_id>/",
                wrap(self.attachment_view),
                name="reporting_runpart_attachment",
            ),
            *super().get_urls(),
        ]

    def render_change_form(
        self, request: HttpRequest, context: dict, add: bool = False, change: bool = False, form_url: str = "", obj=None
    ) -> HttpResponse:
        if obj is not None:
            context = {
                "part": obj,
                "attachments": obj.attachments.all(),
                "data_preview": _data_preview(obj),
                "can_resend": self.has_resend_permission(request) and obj.is_rendered,
                "can_send_anyway": request.user.has_perm("reporting.release_reportrun")
                and obj.status == RunPart.Status.HELD,
                **context,
            }
        return super().render_change_form(request, context, add, change, form_url, obj)

    def email_html_view(self, request: HttpRequest, part_id: int) -> HttpResponse:
        """The recipient's archived email, for the page's frame: inert, as a run's."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        part = get_object_or_404(RunPart, pk=part_id)
        if not part.is_rendered:
            raise Http404("This recipient's report has no archived email.")
        html = archive.html_with_images_inline(part)
        return HttpResponse(html, content_type="text/html; charset=utf-8", headers=ARCHIVED_HTML_HEADERS)

    def attachment_view(self, request: HttpRequest, part_id: int, attachment_id: int) -> FileResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        part = get_object_or_404(RunPart, pk=part_id)
        attachment = get_object_or_404(part.attachments, pk=attachment_id)
        if not attachment.file:
            raise Http404("This file was removed by the retention of the archive.")
        stored = attachment.file.open("rb")
        return FileResponse(stored, as_attachment=True, filename=attachment.filename, content_type=attachment.mimetype)

    def send_anyway_view(self, request: HttpRequest, part_id: int) -> HttpResponse:
        """Send a recipient's report held with no rows anyway (empty): a POST from its page."""
        if not request.user.has_perm("reporting.release_reportrun"):
            raise PermissionDenied
        part = get_object_or_404(RunPart, pk=part_id)
        if request.method != "POST":
            return HttpResponseRedirect(part.get_absolute_url())
        if services_runs.send_part_anyway(part_id=part.pk, actor=request.user):
            self.message_user(request, f"{part.who}'s report is being sent anyway.", messages.SUCCESS)
        else:
            self.message_user(request, f"{part.who}'s report was no longer held; nothing was done.", messages.WARNING)
        return HttpResponseRedirect(part.get_absolute_url())

    def resend_view(self, request: HttpRequest, part_id: int) -> HttpResponse:
        """Resend one recipient's report alone: choose who gets it, see exactly who will, then send."""
        if not self.has_resend_permission(request):
            raise PermissionDenied
        part = get_object_or_404(RunPart.objects.select_related("run"), pk=part_id)
        step = request.POST.get("step")
        form = ResendForm(request.POST if step in ("review", "send", "edit") else None)
        form.fields["target"].choices = [  # type: ignore[attr-defined]
            (ResendForm.ORIGINAL, f"{part.address}, where it went"),
            (ResendForm.TYPED, "Only the addresses typed below"),
        ]
        plan = None
        if step in ("review", "send") and form.is_valid():
            addresses = form.cleaned_data["address_list"]
            try:
                if step == "send":
                    done = services_archive.resend_part(part_id=part.pk, addresses=addresses, actor=request.user)
                    to = ", ".join(done.addresses)
                    self.message_user(request, f"Resend of {part.who}'s report to {to} is queued.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:reporting_runpart_change", args=[part.pk]))
                plan = services_archive.plan_part_resend(part_id=part.pk, addresses=addresses)
            except ValidationError as exc:
                form.add_error(None, exc)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Resend {part.who}'s report",
            "opts": self.model._meta,
            "part": part,
            "form": form,
            "plan": plan,
        }
        return TemplateResponse(request, "admin/reporting/runpart/resend.html", context)


def _data_preview(part: RunPart) -> str:
    if part.data is None:
        return ""
    text = json.dumps(part.data, indent=2, ensure_ascii=False)
    if len(text) > DATA_PREVIEW_CHARACTERS:
        return text[:DATA_PREVIEW_CHARACTERS] + "\n… (truncated; the full data is archived)"
    return text
