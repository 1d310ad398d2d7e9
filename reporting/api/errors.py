"""The one error shape of the API: {"error": {"code": "...", "message": "words", "fields": {name: [words]}}}."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import (
    NON_FIELD_ERRORS,
    ObjectDoesNotExist,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    ValidationError,
)
from django.db import IntegrityError
from django.db.models import ProtectedError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as RequestInvalid

from reporting.pipeline.fetch import FetchError
from reporting.pipeline.render import RenderError

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    500: "server_error",
}
ERROR_STATUSES = frozenset({400, 401, 403, 404, 409, 413, 422})  # what any endpoint may answer besides its own


def answers(ok: dict[int, Any]) -> dict[Any, Any]:
    """An endpoint's documented answers: its own, and the error shape for every error status."""
    return {**ok, ERROR_STATUSES: ErrorOut}


class ErrorDetail(Schema):
    code: str
    message: str
    fields: dict[str, list[str]] = {}


class ErrorOut(Schema):
    error: ErrorDetail


class ApiError(Exception):
    """An answer in words with a status, e.g. ApiError(403, "This token may not …")."""

    def __init__(self, status: int, message: str, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields or {}


def error_response(status: int, message: str, fields: dict[str, list[str]] | None = None) -> HttpResponse:
    body = {"error": {"code": CODES.get(status, "error"), "message": message, "fields": fields or {}}}
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def install_handlers(api: NinjaAPI) -> None:
    """Every error the API can meet, in the one shape; anything unexpected is logged and answered 500."""
    handlers: list[tuple[type[Exception], Any]] = [
        (ApiError, lambda request, exc: error_response(exc.status, exc.message, exc.fields)),
        (AuthenticationError, lambda request, exc: error_response(401, _UNAUTHORIZED)),
        (HttpError, lambda request, exc: error_response(exc.status_code, str(exc))),
        (RequestInvalid, lambda request, exc: error_response(422, _INVALID_REQUEST, request_fields(exc.errors))),
        (ValidationError, lambda request, exc: error_response(422, *validation_words(exc))),
        (FetchError, lambda request, exc: error_response(422, str(getattr(exc, "message", exc)))),
        (RenderError, lambda request, exc: error_response(422, str(getattr(exc, "message", exc)))),
        (RequestDataTooBig, lambda request, exc: error_response(413, "The request body is too large.")),
        (SuspiciousOperation, lambda request, exc: error_response(400, "The request was refused as malformed.")),
        (ProtectedError, lambda request, exc: error_response(409, _PROTECTED)),
        (IntegrityError, lambda request, exc: error_response(409, _CONFLICT)),
        (ObjectDoesNotExist, lambda request, exc: error_response(404, "There is no such object.")),
        (Http404, lambda request, exc: error_response(404, str(exc) or "There is no such object.")),
        (PermissionDenied, lambda request, exc: error_response(403, str(exc) or "Not allowed.")),
        (Exception, _unexpected),
    ]
    for exc_class, handler in handlers:
        api.add_exception_handler(exc_class, handler)


_UNAUTHORIZED = "Give a valid API token: the header Authorization: Bearer <token> (a token revoked or expired, or "
_UNAUTHORIZED += "one of an inactive user, is refused)."
_INVALID_REQUEST = "The request does not match the API's schema: see fields."
_CONFLICT = "It conflicts with what another request stored at the same moment (e.g. the same address): try again."
_PROTECTED = "It is still in use (e.g. a report with archived runs): it cannot be deleted."


def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.error("API: unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "Something went wrong on our side; it is logged. Try again later.")


def validation_words(exc: ValidationError) -> tuple[str, dict[str, list[str]]]:
    """A Django ValidationError as a message and the words for each field."""
    if not hasattr(exc, "error_dict"):
        return " ".join(exc.messages), {}
    fields = {name: [str(message) for message in messages] for name, messages in exc.message_dict.items()}
    general = fields.pop(NON_FIELD_ERRORS, [])
    return " ".join(general) or "Some values were refused: see fields.", fields


def request_fields(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Pydantic's errors by field: "body.name", "query.limit", …"""
    fields: dict[str, list[str]] = {}
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ())) or "request"
        fields.setdefault(where, []).append(str(error.get("msg", "invalid")))
    return fields
