"""The app's own pages besides its admin, for a project's urls.py: path("reports/", include("reporting.urls")).

/healthz (for a load balancer), /metrics (Prometheus: a bearer token or staff) and the second factor's page
(only used with REPORTING_REQUIRE_2FA), and the REST API under api/v1/ (its schema: api/v1/openapi.json).
The demo API is apart and optional: include("reporting.demo.urls").
"""

from django.urls import include, path

from reporting.admin.login import VERIFY_URL_NAME, verify_view
from reporting.views import healthz, prometheus_metrics

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", prometheus_metrics, name="metrics"),
    path("verify/", verify_view, name=VERIFY_URL_NAME),
    path("api/v1/", include("reporting.api.urls")),
]
