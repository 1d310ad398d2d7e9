"""The NinjaAPI: version 1, every endpoint behind a bearer token, every error in one shape."""

from __future__ import annotations

from ninja import NinjaAPI

from reporting.api import errors, recipients, reports, runs
from reporting.api.access import BearerToken

DESCRIPTION = """\
Scheduled Reports' REST API. Authenticate with `Authorization: Bearer <token>`: a token made on the admin's
"API tokens" page, shown once. Each endpoint needs a scope of the token **and** the permission the admin checks
for the same act, held by the token's (staff) user.

Lists take `limit` (1-200, default 50) and `offset`, and answer `{"count": …, "items": […]}`.

Every error has one shape: `{"error": {"code": "not_found", "message": "words", "fields": {"name": ["words"]}}}`,
with code one of bad_request (400), unauthorized (401), forbidden (403), not_found (404), method_not_allowed (405),
conflict (409), too_large (413), invalid (422), server_error (500).
"""

api = NinjaAPI(
    title="Scheduled Reports API",
    version="1",
    description=DESCRIPTION,
    auth=BearerToken(access=None),  # each endpoint names its own; one that forgets is closed to everyone
    urls_namespace="reporting_api",
    docs_url="/docs",  # Swagger UI from ninja's static files, which the CSP allows ("ninja" in INSTALLED_APPS)
)
errors.install_handlers(api)
api.add_router("", reports.router)
api.add_router("", runs.router)
api.add_router("", recipients.router)
