"""Views outside the admin: the health check and the Prometheus metrics."""

import hmac

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from reporting import conf, health, metrics

METRICS_PERMISSION = "reporting.view_reportrun"


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """200 with the checks when the service can work, 503 when the database, broker or beat is down."""
    healthy, report = health.health()
    return JsonResponse(report, status=200 if healthy else 503)


@require_GET
@never_cache
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """The domain's metrics for Prometheus, to a scraper with the bearer token or to staff who may view runs."""
    refused = _metrics_refusal(request)
    if refused is not None:
        return refused
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


def _metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read the metrics; otherwise 401, 403 or (no token configured) 404."""
    token = conf.setting("METRICS_TOKEN")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    user = request.user
    if user.is_authenticated and user.is_staff:
        return None if user.has_perm(METRICS_PERMISSION) else HttpResponse("Forbidden.", status=403)
    if not token:
        return HttpResponse("Not found.", status=404)  # nothing is served to scrapers until a token is set
    refused = HttpResponse("A bearer token is needed.", status=401)
    refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return refused
