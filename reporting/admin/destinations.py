"""The admin for destinations besides email (Slack, Teams, webhooks), and a run's resend to one of them."""

from __future__ import annotations

import os

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from reporting.forms import DestinationForm
from reporting.models import Destination
from reporting.services import destinations as services_destinations


@admin.register(Destination)
class DestinationAdmin(admin.ModelAdmin):
    form = DestinationForm
    list_display = ["name", "kind", "enabled", "secret_env_var", "secret_available", "slack_channel"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "slack_channel", "secret_env_var"]
    readonly_fields = ["secret_available"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "enabled"]}),
        (
            "Where",
            {
                "fields": ["secret_env_var", "secret_available", "slack_channel"],
                "description": "Tokens and URLs are secrets: set them as environment variables on the workers "
                "and name the variable here. Teams and webhook URLs must be on a host listed in "
                "REPORTING_ALLOWED_DESTINATION_HOSTS.",
            },
        ),
        ("Files", {"fields": ["attach_csv", "attach_xlsx"]}),
        ("Webhook", {"fields": ["signing_secret_env_var"]}),
    ]

    @admin.display(description="set on this web server", boolean=True)
    def secret_available(self, destination: Destination) -> bool | None:
        """Whether the named variable is set here; never the value itself."""
        if not destination.secret_env_var:
            return None
        return bool(os.environ.get(destination.secret_env_var))


def resend_to_destination_page(
    model_admin: admin.ModelAdmin, request: HttpRequest, run_id: int, delivery_id: int
) -> HttpResponse:
    """A run's "Resend…" to one destination: what will be sent again and where, then a POST sends it."""
    if not request.user.has_perm("reporting.resend_reportrun"):
        raise PermissionDenied
    change_url = reverse("admin:reporting_reportrun_change", args=[run_id])
    try:
        delivery = services_destinations.plan_destination_resend(run_id=run_id, delivery_id=delivery_id)
    except ValidationError as exc:
        model_admin.message_user(request, " ".join(exc.messages), messages.ERROR)
        return HttpResponseRedirect(change_url)
    if request.method == "POST":
        try:
            services_destinations.resend_to_destination(run_id=run_id, delivery_id=delivery_id, actor=request.user)
        except ValidationError as exc:
            model_admin.message_user(request, " ".join(exc.messages), messages.ERROR)
        else:
            model_admin.message_user(
                request, f"Resend of run #{run_id} to {delivery.target} is queued.", messages.SUCCESS
            )
        return HttpResponseRedirect(change_url)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Resend run #{run_id} to {delivery.target}",
        "opts": model_admin.model._meta,
        "run": delivery.run,
        "delivery": delivery,
        "change_url": change_url,
    }
    return TemplateResponse(request, "admin/reporting/reportrun/resend_destination.html", context)
