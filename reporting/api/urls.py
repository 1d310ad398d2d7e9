"""The API's URLs (include("reporting.api.urls") under api/v1/): ninja's own, each answering in the API's error
shape even where ninja or Django would not (a method an endpoint lacks, a path that is none)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import URLPattern, re_path
from django.views.decorators.csrf import csrf_exempt

from reporting.api.app import api
from reporting.api.errors import error_response

_patterns, _ninja_app, app_name = api.urls  # the namespace ninja reverses its own URLs in


def _json_errors(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            answer = error_response(405, f"{request.method} is not allowed here; use {response['Allow']}.")
            answer["Allow"] = response["Allow"]
            return answer
        return response

    return wrapped


@csrf_exempt
def not_found(request: HttpRequest, rest: str) -> HttpResponse:
    return error_response(404, "There is no such endpoint: see the schema at openapi.json.")


def _wrapped(entry: URLPattern) -> URLPattern:
    return URLPattern(entry.pattern, _json_errors(entry.callback), entry.default_args, entry.name)


urlpatterns = [
    *(_wrapped(entry) for entry in _patterns if isinstance(entry, URLPattern)),  # ninja's are all patterns
    re_path(r"^(?P<rest>.*)$", not_found, name="not_found"),
]
