"""The demo API: deterministic portfolio JSON for the demo reports to read."""

from __future__ import annotations

from datetime import date, datetime

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from reporting.demo import data

MAX_RANGE_DAYS = 400
# Enough of a client id the caller sent to recognise it in the error, and no more.
MAX_ECHOED_CHARS = 40


class BadRequest(Exception):
    """The query string is wrong; the message says how, for the caller."""


@require_GET
def daily_portfolio(request: HttpRequest) -> JsonResponse:
    try:
        day = _date_param(request, "date")
    except BadRequest as exc:
        return _error(str(exc))
    return JsonResponse(data.daily_portfolio(day))


@require_GET
def monthly_performance(request: HttpRequest) -> JsonResponse:
    try:
        start, end = _date_param(request, "from"), _date_param(request, "to")
        _check_range(start, end)
    except BadRequest as exc:
        return _error(str(exc))
    return JsonResponse(data.performance(start, end))


@require_GET
def clients_positions(request: HttpRequest) -> JsonResponse:
    try:
        day = _date_param(request, "date")
    except BadRequest as exc:
        return _error(str(exc))
    return JsonResponse(data.clients_positions(day))


@require_GET
def client_statement(request: HttpRequest, client_id: str) -> JsonResponse:
    # Only a known id is looked up: the URL takes any text here so that a wrong one is refused in words.
    client = data.CLIENTS_BY_ID.get(client_id)
    if client is None:
        return _error(f"There is no client {client_id[:MAX_ECHOED_CHARS]!r}.", status=404)
    try:
        start, end = _date_param(request, "from"), _date_param(request, "to")
        _check_range(start, end)
    except BadRequest as exc:
        return _error(str(exc))
    return JsonResponse(data.client_statement(client, start, end))


def _date_param(request: HttpRequest, name: str) -> date:
    value = request.GET.get(name, "")
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise BadRequest(f"Give '{name}' as a date in the form YYYY-MM-DD (got {value!r}).") from None


def _check_range(start: date, end: date) -> None:
    if start > end:
        raise BadRequest(f"'from' ({start}) is after 'to' ({end}).")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise BadRequest(f"The range is longer than {MAX_RANGE_DAYS} days.")


def _error(message: str, *, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)
