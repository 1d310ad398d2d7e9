"""Who may call what: a bearer token (hash lookup), and for each endpoint a scope of the token AND the
permission the admin checks for the same act, held by the token's user (a staff member, as in the admin)."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest
from ninja.security import HttpBearer

from reporting.api.errors import ApiError
from reporting.models import ApiToken
from reporting.services import tokens as services_tokens

Scope = ApiToken.Scope


class BearerToken(HttpBearer):
    """Authorization: Bearer <token>: the token of an active user, neither revoked nor expired (or 401), which
    may make this call (or 403, before the request is read): `access` is what the endpoint needs."""

    def __init__(self, access: Access | None) -> None:
        super().__init__()
        self.access = access

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        found = services_tokens.authenticate(secret=token)
        if found is None:
            return None
        request.user = found.user
        check(found, self.access)
        return found


@dataclass(frozen=True)
class Access:
    """What an endpoint needs: the token's scope, and the user's permission (the admin's for that act)."""

    scope: str
    permission: str


# The admin's checks, act by act (reporting/admin/: has_*_permission, the views' has_perm).
VIEW_REPORTS = Access(Scope.REPORTS_READ, "reporting.view_report")
ADD_REPORTS = Access(Scope.REPORTS_WRITE, "reporting.add_report")
CHANGE_REPORTS = Access(Scope.REPORTS_WRITE, "reporting.change_report")
RUN_REPORTS = Access(Scope.RUNS_RUN, "reporting.run_report")  # run now, send test (ReportAdmin.has_run_permission)
VIEW_RUNS = Access(Scope.RUNS_READ, "reporting.view_reportrun")  # runs, deliveries, attachments (attachment_view)
RESEND_RUNS = Access(Scope.ARCHIVE_RESEND, "reporting.resend_reportrun")  # ReportRunAdmin.has_resend_permission
VIEW_RECIPIENTS = Access(Scope.RECIPIENTS_READ, "reporting.view_recipient")
ADD_RECIPIENTS = Access(Scope.RECIPIENTS_WRITE, "reporting.add_recipient")
CHANGE_RECIPIENTS = Access(Scope.RECIPIENTS_WRITE, "reporting.change_recipient")
DELETE_RECIPIENTS = Access(Scope.RECIPIENTS_WRITE, "reporting.delete_recipient")
VIEW_LISTS = Access(Scope.RECIPIENTS_READ, "reporting.view_recipientlist")
ADD_LISTS = Access(Scope.RECIPIENTS_WRITE, "reporting.add_recipientlist")
CHANGE_LISTS = Access(Scope.RECIPIENTS_WRITE, "reporting.change_recipientlist")
DELETE_LISTS = Access(Scope.RECIPIENTS_WRITE, "reporting.delete_recipientlist")


def token(access: Access) -> BearerToken:
    """An endpoint's authentication: a token that may make the call `access` describes."""
    return BearerToken(access)


def check(token: ApiToken, access: Access | None) -> None:
    """Refuse (403, in words) a call the token's scopes or its user's permissions do not allow."""
    user = token.user
    if access is None:
        raise ApiError(403, "This endpoint declares no access: nobody may call it.")
    if access.scope not in token.scopes:
        raise ApiError(403, f"This token does not have the scope {access.scope}; make one that has.")
    if not user.is_staff:
        raise ApiError(403, "Only staff may use the API, as the admin.")
    if not user.has_perm(access.permission):
        raise ApiError(403, f"Your user does not have the permission {access.permission}.")
