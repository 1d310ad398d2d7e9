"""Who may call what through the API: the admin's groups, and tokens that are missing, revoked, expired or narrow.

Each endpoint needs the token's scope AND the user's permission for the same act in the admin; a refusal
changes nothing (no row, no audit event, no email).
"""

from __future__ import annotations

import datetime

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.utils import timezone

from reporting.api import recipients, reports, runs
from reporting.api.app import api
from reporting.models import (
    ApiToken,
    AuditEvent,
    Delivery,
    Recipient,
    RecipientList,
    Report,
    ReportRun,
    RunAttachment,
)
from tests import factories
from tests.test_api import Api

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery", "permission_groups")]
ROLES = ["viewer", "editor", "sender", "staff"]
GROUPS = {"viewer": "Report viewers", "editor": "Report editors", "sender": "Report senders"}

#                                viewer editor sender staff-without-a-group
EXPECTED = {
    "list_reports": [200, 200, 200, 403],
    "get_report": [200, 200, 200, 403],
    "create_report": [403, 201, 403, 403],
    "update_report": [403, 200, 403, 403],
    "run_report_now": [403, 403, 202, 403],
    "send_test": [403, 403, 202, 403],
    "list_runs": [200, 403, 200, 403],
    "get_run": [200, 403, 200, 403],
    "download_attachment": [200, 403, 200, 403],  # as the admin archive's attachment page
    "resend_run": [403, 403, 202, 403],
    "list_recipients": [200, 200, 403, 403],
    "get_recipient": [200, 200, 403, 403],
    "create_recipient": [403, 201, 403, 403],
    "update_recipient": [403, 200, 403, 403],
    "delete_recipient": [403, 204, 403, 403],
    "list_recipient_lists": [200, 200, 403, 403],
    "get_recipient_list": [200, 200, 403, 403],
    "create_recipient_list": [403, 201, 403, 403],
    "update_recipient_list": [403, 200, 403, 403],
    "delete_recipient_list": [403, 204, 403, 403],
}


def operations() -> dict[str, tuple[str, str]]:
    """Each operation of the served schema, by id: (method, path template)."""
    schema = api.get_openapi_schema(path_prefix="")
    return {
        operation["operationId"]: (method, path)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }


@pytest.fixture
def world(report):
    """One of each object the endpoints act on."""
    Report.objects.filter(pk=report.pk).update(owner=factories.owner())
    now = timezone.now()
    run = ReportRun.objects.create(
        report=report,
        period_start=now.date(),
        period_end=now.date(),
        period_key="manual",
        trigger=ReportRun.Trigger.MANUAL,
        status=ReportRun.Status.SENT,
        recipients=["ann@example.com"],
        rendered_at=now,
        subject="Portfolio — today",
        body_html="<p>Total</p>",
        body_text="Total",
    )
    attachment = RunAttachment.objects.create(
        run=run, filename="rows.csv", mimetype="text/csv", size=3, file=ContentFile(b"a,b", name="rows.csv")
    )
    board = factories.recipient_list("Board", ["cfo@example.com"])
    return {
        "report_id": report.pk,
        "run_id": run.pk,
        "attachment_id": attachment.pk,
        "recipient_id": Recipient.objects.get(email="cfo@example.com").pk,
        "list_id": board.pk,
        "data_source": report.data_source.name,
    }


def request_for(operation: str, world: dict) -> tuple[str, str, dict | None]:
    method, path = operations()[operation]
    bodies = {
        "create_report": {
            "name": "New",
            "slug": "new",
            "data_source": world["data_source"],
            "template": "reports/table.html",
            "recipients": ["new@example.com"],
        },
        "update_report": {"name": "Renamed"},
        "run_report_now": {},
        "send_test": {},
        "resend_run": {"addresses": ["eve@example.com"]},
        "create_recipient": {"email": "new@example.com"},
        "update_recipient": {"name": "Renamed"},
        "create_recipient_list": {"name": "New list"},
        "update_recipient_list": {"name": "Renamed"},
    }
    return method, path.format(**world), bodies.get(operation)


def user_for(role: str, django_user_model, **fields):
    user = django_user_model.objects.create_user(role, f"{role}@example.com", "pw", is_staff=True, **fields)
    if role in GROUPS:
        user.groups.add(Group.objects.get(name=GROUPS[role]))
    return user


def state() -> tuple:
    """What any call could change."""
    return (
        list(Report.objects.order_by("pk").values_list("name", "updated_at")),
        ReportRun.objects.count(),
        Delivery.objects.count(),
        list(Recipient.objects.order_by("pk").values_list("email", "name")),
        list(RecipientList.objects.order_by("pk").values_list("name", flat=True)),
        AuditEvent.objects.count(),
        LogEntry.objects.count(),
    )


def test_every_operation_has_an_expectation_for_every_role():
    assert set(operations()) == set(EXPECTED)


CASES = [(operation, role, row[ROLES.index(role)]) for operation, row in EXPECTED.items() for role in ROLES]


@pytest.mark.parametrize(("operation", "role", "status"), CASES, ids=[f"{o}-{r}" for o, r, _ in CASES])
def test_each_operation_answers_each_role_and_acts_only_for_those_allowed(
    client, world, django_user_model, operation, role, status, django_capture_on_commit_callbacks, mailoutbox
):
    call = Api(client, factories.api_token(user_for(role, django_user_model)))
    method, path, body = request_for(operation, world)
    before = state()

    with django_capture_on_commit_callbacks(execute=True):
        response = call(method, path, body)

    assert response.status_code == status, response.content[:500]
    if status == 403:
        assert response.json()["error"]["code"] == "forbidden"
        assert state() == before
        assert mailoutbox == []


REFUSED_TOKENS = {
    "no token": (None, {}),
    "not a token": ("rpt_not-a-token", {}),
    "revoked": ("token", {"revoked": True}),
    "expired": ("token", {"expires_at": timezone.now() - datetime.timedelta(minutes=1)}),
    "inactive user": ("inactive", {}),
}


@pytest.mark.parametrize("operation", list(EXPECTED))
@pytest.mark.parametrize("case", list(REFUSED_TOKENS))
def test_a_missing_revoked_or_expired_token_is_401_and_changes_nothing(
    client, world, staff, operation, case, django_capture_on_commit_callbacks, mailoutbox
):
    kind, fields = REFUSED_TOKENS[case]
    token = kind
    if kind in ("token", "inactive"):
        token = factories.api_token(staff, **fields)
    if kind == "inactive":
        staff.is_active = False
        staff.save()
    method, path, body = request_for(operation, world)
    before = state()

    with django_capture_on_commit_callbacks(execute=True):
        response = Api(client, token)(method, path, body)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert state() == before
    assert mailoutbox == []


@pytest.mark.parametrize("operation", list(EXPECTED))
def test_a_token_without_the_endpoints_scope_is_refused_even_for_a_superuser(
    client, world, staff, operation, django_capture_on_commit_callbacks, mailoutbox
):
    method, path, body = request_for(operation, world)
    needed = api_access(operation).scope
    token = factories.api_token(staff, *[scope for scope in ApiToken.Scope.values if scope != needed])
    before = state()

    with django_capture_on_commit_callbacks(execute=True):
        response = Api(client, token)(method, path, body)

    assert response.status_code == 403
    assert needed in response.json()["error"]["message"]
    assert state() == before
    assert mailoutbox == []


def test_a_viewer_who_is_not_staff_is_refused_as_the_admin_refuses_them(client, world, django_user_model):
    user = user_for("viewer", django_user_model)
    user.is_staff = False
    user.save()

    response = Api(client, factories.api_token(user))("get", "/reports")

    assert response.status_code == 403


def api_access(operation: str):
    """The Access an operation was declared with (its auth, reporting.api.access.token)."""
    for router in (reports.router, runs.router, recipients.router):
        for path_view in router.path_operations.values():
            for found in path_view.operations:
                if found.operation_id == operation:
                    [auth] = found.auth_callbacks
                    return auth.access
    raise LookupError(operation)


def test_a_caller_without_the_permission_is_refused_before_the_body_is_read(client, world, django_user_model):
    call = Api(client, factories.api_token(user_for("viewer", django_user_model)))

    response = call("patch", f"/reports/{world['report_id']}", {"no such field": 1, "name": 123})

    assert response.status_code == 403  # not 422: what the body holds is nobody's business but the editors'
