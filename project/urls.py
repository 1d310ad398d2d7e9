from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from reporting.admin.login import VERIFY_URL_NAME, verify_view
from reporting.views import healthz, prometheus_metrics

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("metrics", prometheus_metrics, name="metrics"),  # Prometheus: a bearer token or staff (README)
    path("admin/verify/", verify_view, name=VERIFY_URL_NAME),  # the second factor, when required
    path("admin/", admin.site.urls),
    path("api/v1/", include("reporting.api.urls")),  # the REST API (README "REST API")
    path("anymail/", include("anymail.urls")),  # ESP tracking webhooks
    path("demo-api/", include("reporting.demo.urls")),
]
