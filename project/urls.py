from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from reporting.views import healthz

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("anymail/", include("anymail.urls")),  # ESP tracking webhooks
    path("demo-api/", include("reporting.demo.urls")),
]
