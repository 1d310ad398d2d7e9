"""The API against its own schema: requests generated from docs/openapi.json's operations (schemathesis) are sent
in-process through Django's WSGI handler with a superuser's token; no answer is a server error, and every answer
conforms to the schema (status documented, body of the documented shape). Deterministic: derandomized."""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from tests import factories
from tests.test_api_permissions import world  # noqa: F401  (one of each object, for ids that exist)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("permission_groups")]
# Left out: "a schema-valid request is accepted". The schema says what a request looks like; whether its values
# make a report (a data source by that name, a template that renders, a schedule beat can run) is the form's
# to say, with a 422 in words, and generated values mostly do not.
# Left out for negative requests: "a schema-violating request is refused". Unknown query parameters are ignored, as
# HTTP APIs commonly do (an unknown body field is refused: tests/test_api.py), and the token this test adds back
# to every request makes a generated "missing Authorization" request a valid one.
EXCLUDED = {GenerationMode.POSITIVE: [positive_data_acceptance], GenerationMode.NEGATIVE: [negative_data_rejection]}
EXAMPLES = 40  # per operation and mode: the whole test stays under half a minute


@pytest.fixture
def schema():
    """The served schema, loaded through the WSGI handler the requests go to (in this test's transaction)."""
    # As Django's test client does: a request's end must not close the test's database connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/v1/openapi.json", WSGIHandler())
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error_or_an_answer_outside_the_schema(
    schema,
    staff,
    world,  # noqa: F811
    mode,
):
    """Requests that fit the schema (positive) and requests that do not (negative: each must be refused, 4xx)."""
    headers = {"Authorization": f"Bearer {factories.api_token(staff)}"}
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            case.call_and_validate(headers=headers, excluded_checks=EXCLUDED[mode])

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; the failures are listed together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
