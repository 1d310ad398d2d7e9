"""The admin for definitions: data sources, recipients and recipient lists."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from reporting.models import (
    DataSource,
    Recipient,
    RecipientList,
)
from reporting.pipeline import fetch


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
            "drop_fields",
        ]

    def clean_base_url(self) -> str:
        """Only http(s), no user:password, a host in REPORTING_ALLOWED_SOURCE_HOSTS (by name here, by address
        when fetching)."""
        url = self.cleaned_data["base_url"]
        try:
            fetch.check_source_url(url)
        except fetch.FetchError as exc:
            raise ValidationError(exc.message) from exc
        return url


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
