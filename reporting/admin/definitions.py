"""The admin for definitions: data sources, recipients and recipient lists."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from reporting import recipient_history, recipients_io
from reporting.forms import DataSourceForm
from reporting.models import (
    DataSource,
    Recipient,
    RecipientList,
)
from reporting.services import recipients as services_recipients

MAX_IMPORT_BYTES = 20_000_000
EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@admin.register(DataSource)
class DataSourceAdmin(admin.ModelAdmin):
    form = DataSourceForm
    list_display = ["name", "url", "auth_scheme", "secret_env_var", "secret_available"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["secret_available"]
    fieldsets = [
        (None, {"fields": ["name", "base_url"]}),
        ("Authentication", {"fields": ["auth_scheme", "auth_header_name", "secret_env_var", "secret_available"]}),
        ("Connection", {"fields": ["connect_timeout", "read_timeout", "verify_tls"]}),
        ("Archive", {"fields": ["drop_fields"]}),
    ]

    @admin.display(description="base URL", ordering="base_url")
    def url(self, source: DataSource) -> str:
        """The base URL without any user:password saved before such URLs were refused (fetching refuses them)."""
        parts = urlsplit(source.base_url)
        if parts.username is None and parts.password is None:
            return source.base_url
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    @admin.display(description="secret set on this web server", boolean=True)
    def secret_available(self, source: DataSource) -> bool | None:
        """Whether the named variable is set here; never the value itself."""
        if not source.secret_env_var:
            return None
        return bool(os.environ.get(source.secret_env_var))


class RecipientForm(forms.ModelForm):
    """The attributes as "name = value" lines, checked as the model checks them, in words."""

    attributes = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60, "spellcheck": "false"}),
        help_text="One per line as name = value, e.g. client_id = C001. What a per-recipient report knows "
        "about this recipient: it selects their rows or fills the path and query of their fetch.",
    )

    class Meta:
        model = Recipient
        fields = ["email", "name", "active", "attributes"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["attributes"] = recipients_io.attributes_as_text(self.instance.attributes or {})

    def clean_attributes(self) -> dict[str, str]:
        attributes, problems = recipients_io.attributes_from_text(self.cleaned_data["attributes"])
        if problems:
            raise ValidationError(problems)
        return attributes


class RecipientImportForm(forms.Form):
    file = forms.FileField(
        help_text="A .csv (UTF-8) or .xlsx file: columns email, name, active, lists, then one per attribute."
    )
    dry_run = forms.BooleanField(required=False, label="Only check the file; change nothing")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise ValidationError(f"The file is larger than {MAX_IMPORT_BYTES // 1_000_000} MB.")
        try:
            recipients_io.format_of(upload.name)
        except recipients_io.TableError as exc:
            raise ValidationError(str(exc)) from exc
        return upload


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin):
    form = RecipientForm
    list_display = ["email", "name", "active", "attributes_brief"]
    list_filter = ["active", "lists"]
    search_fields = ["email", "name"]
    search_help_text = "Search by email, name, or an attribute's value (e.g. a client id)."
    change_form_template = "admin/reporting/recipient/change_form.html"
    change_list_template = "admin/reporting/recipient/change_list.html"

    @admin.display(description="attributes")
    def attributes_brief(self, recipient: Recipient) -> str:
        return recipients_io.attributes_brief(recipient.attributes or {})

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        """Email and name as usual, or any attribute: the JSON as text, which both SQLite and PostgreSQL can search."""
        queryset = queryset.annotate(attributes_text=Cast("attributes", TextField()))
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            found = found | queryset.filter(attributes_text__icontains=term)
        return found, may_have_duplicates

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        context = dict(extra_context or {})
        recipient = self.get_object(request, object_id) if str(object_id).isdigit() else None
        if recipient is not None and request.user.has_perm("reporting.view_reportrun"):
            received, more = recipient_history.received_by(recipient)
            context.update(
                received=received,
                received_more=more,
                received_limit=recipient_history.LATEST,
                archive_url=recipient_history.archive_search_url(recipient),
            )
        return super().change_view(request, object_id, form_url, context)

    def changelist_view(self, request: HttpRequest, extra_context=None):
        context = {
            "may_import": self.has_import_permission(request),
            "may_export": self.has_view_permission(request),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("import/", wrap(self.import_view), name="reporting_recipient_import"),
            path("export/", wrap(self.export_view), name="reporting_recipient_export"),
            *super().get_urls(),
        ]

    def has_import_permission(self, request: HttpRequest) -> bool:
        """An import adds and changes recipients: both permissions."""
        return self.has_add_permission(request) and self.has_change_permission(request)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload a CSV or XLSX file of recipients; every row is checked, and any problem means nothing changes."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = RecipientImportForm(request.POST or None, request.FILES or None)
        result = None
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            result = services_recipients.import_recipients(
                content=upload.read(),
                filename=upload.name,
                actor=request.user,
                dry_run=form.cleaned_data["dry_run"],
            )
            if result.written:
                messages.success(request, f"Imported {upload.name}: {result.summary}.")
                return HttpResponseRedirect(reverse("admin:reporting_recipient_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import recipients",
            "opts": self.model._meta,
            "form": form,
            "result": result,
            "list_names": RecipientList.objects.values_list("name", flat=True)[:50],
        }
        return TemplateResponse(request, "admin/reporting/recipient/import.html", context)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Every recipient as a CSV (?format=csv, the default) or XLSX file, in the shape the import reads."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        file_format = request.GET.get("format", "csv")
        if file_format not in recipients_io.FORMATS:
            raise Http404("Export as csv or xlsx.")
        content = services_recipients.export_recipients(recipients=Recipient.objects.all(), file_format=file_format)
        response = HttpResponse(content, content_type=EXPORT_TYPES[file_format])
        response["Content-Disposition"] = f'attachment; filename="recipients.{file_format}"'
        return response


@admin.register(RecipientList)
class RecipientListAdmin(admin.ModelAdmin):
    list_display = ["name", "size"]
    search_fields = ["name"]
    filter_horizontal = ["recipients"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(size=Count("recipients"))

    @admin.display(ordering="size")
    def size(self, recipient_list: RecipientList) -> int:
        return recipient_list.size  # type: ignore[attr-defined]
