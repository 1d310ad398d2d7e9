"""Views outside the admin: the health check."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from reporting import health


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 with the checks when the service can work, 503 when the database, broker or beat is down."""
    healthy, report = health.health()
    return JsonResponse(report, status=200 if healthy else 503)
