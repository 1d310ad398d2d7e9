"""The REST API: each endpoint's behaviour, through the service layer and the audit trail."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from reporting.api.app import api
from reporting.api.schema_file import schema_text
from reporting.models import ApiToken, AuditEvent, Delivery, Recipient, RecipientList, Report, ReportRun, RunAttachment
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1"


class Api:
    """The test client speaking to the API with a bearer token."""

    def __init__(self, client, token: str | None) -> None:
        self.client, self.token = client, token

    def __call__(self, method: str, path: str, body: object = None, **query):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if method == "get":
            return self.client.get(API + path, query, headers=headers)
        data = json.dumps(body) if body is not None else ""
        return getattr(self.client, method)(API + path, data, content_type="application/json", headers=headers)


@pytest.fixture
def kim(staff):
    return staff


@pytest.fixture(autouse=True)
def _owned(request):
    """The report has an owner to alert: the admin's form (and so the API) refuses an enabled report without one."""
    if "report" in request.fixturenames:
        report = request.getfixturevalue("report")
        Report.objects.filter(pk=report.pk).update(owner=factories.owner())


@pytest.fixture
def call(client, kim):
    return Api(client, factories.api_token(kim))


@pytest.fixture
def sent_run(report):
    now = timezone.now()
    run = ReportRun.objects.create(
        report=report,
        period_start=now.date(),
        period_end=now.date(),
        period_key=f"manual-{now:%Y%m%d}",
        trigger=ReportRun.Trigger.MANUAL,
        status=ReportRun.Status.SENT,
        recipients=["ann@example.com", "bob@example.com"],
        rendered_at=now,
        subject="Portfolio — today",
        body_html="<p>Total 1,234</p>",
        body_text="Total 1,234",
    )
    RunAttachment.objects.create(
        run=run, filename="rows.csv", mimetype="text/csv", size=7, file=ContentFile(b"a,b\n1,2", name="rows.csv")
    )
    Delivery.objects.create(run=run, address="ann@example.com", status=Delivery.Status.SENT)
    return run


def new_report_body(report: Report, **changes) -> dict:
    body = {
        "name": "Collections",
        "slug": "collections",
        "data_source": report.data_source.name,
        "path": "positions",
        "records_path": "data.positions",
        "template": "reports/table.html",
        "subject_template": "Collections — {{ period.label }}",
        "timezone": "Europe/London",
        "recipients": ["cfo@example.com", "Ann@Example.com"],
        "schedule": {"minute": "30", "hour": "6", "day_of_week": "mon-fri"},
    }
    return {**body, **changes}


# --- reports --------------------------------------------------------------------------------------------


def test_it_lists_reports_a_page_at_a_time(call, report):
    factories.report(report.data_source, name="Another", slug="another", addresses=["cfo@example.com"])

    first = call("get", "/reports", limit=1).json()
    second = call("get", "/reports", limit=1, offset=1).json()

    assert first["count"] == second["count"] == 2
    assert [first["items"][0]["name"], second["items"][0]["name"]] == ["Another", "Portfolio"]


def test_it_reads_a_report_with_its_recipients_and_schedule(call, report):
    factories.schedule(report, minute="15", hour="8")

    answer = call("get", f"/reports/{report.pk}").json()

    assert answer["id"] == report.pk
    assert answer["recipients"] == ["ann@example.com", "bob@example.com"]
    assert answer["schedule"]["minute"] == "15" and answer["schedule"]["hour"] == "8"
    assert answer["data_source"] == report.data_source.name


def test_it_creates_a_report_with_its_schedule_and_recipients_audited(call, report, kim):
    response = call("post", "/reports", new_report_body(report))

    assert response.status_code == 201, response.json()
    created = Report.objects.get(slug="collections")
    assert response.json()["id"] == created.pk
    crontab = created.periodic_task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week, str(crontab.timezone)) == (
        "30",
        "6",
        "mon-fri",
        "Europe/London",
    )
    assert sorted(created.recipients.values_list("email", flat=True)) == ["ann@example.com", "cfo@example.com"]
    assert created.owner == kim  # the token's user, as the admin's page for a new report
    event = AuditEvent.objects.get(report=created)
    assert (event.action, event.actor, event.summary) == ("created", kim, "Created the report.")
    assert LogEntry.objects.get_for_object(created).filter(actor=kim).exists()  # django-auditlog names the user too


def test_it_changes_only_the_fields_given_and_audits_them(call, report, kim):
    factories.schedule(report, minute="0", hour="7")

    response = call("patch", f"/reports/{report.pk}", {"name": "Portfolio (EU)", "schedule": {"hour": "9"}})

    assert response.status_code == 200, response.json()
    report.refresh_from_db()
    assert (report.name, report.slug, report.periodic_task.crontab.hour) == ("Portfolio (EU)", "portfolio", "9")
    assert sorted(report.recipients.values_list("email", flat=True)) == ["ann@example.com", "bob@example.com"]
    event = AuditEvent.objects.get(report=report, action="changed")
    assert event.actor == kim
    assert event.changes["name"] == ["Portfolio", "Portfolio (EU)"]


def test_the_schedule_follows_the_reports_timezone_as_in_the_admin(call, report):
    factories.schedule(report, minute="0", hour="7")

    response = call("patch", f"/reports/{report.pk}", {"timezone": "America/New_York"})

    assert response.json()["schedule"]["timezone"] == "America/New_York"
    report.refresh_from_db()
    assert (str(report.periodic_task.crontab.timezone), report.periodic_task.crontab.hour) == ("America/New_York", "7")


def test_a_null_schedule_makes_the_report_run_only_by_hand(call, report):
    factories.schedule(report, minute="0", hour="7")

    call("patch", f"/reports/{report.pk}", {"schedule": None})

    report.refresh_from_db()
    assert report.periodic_task is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"schedule": {"minute": "61"}}, "schedule.minute"),
        ({"recipients": ["not an address"]}, "recipients"),
        ({"subject_template": "{% if %}"}, "subject_template"),
        ({"data_source": "No such source"}, "data_source"),
        ({"recipients": [], "enabled": True}, "recipients"),  # an enabled report needs someone to send to
    ],
)
def test_it_refuses_what_the_admin_form_refuses_and_stores_nothing(call, report, changes, field):
    response = call("post", "/reports", new_report_body(report, **changes))

    assert response.status_code == 422
    assert field in response.json()["error"]["fields"]
    assert not Report.objects.filter(slug="collections").exists()
    assert AuditEvent.objects.count() == 0


def test_an_unknown_field_is_refused(call, report):
    response = call("patch", f"/reports/{report.pk}", {"name": "X", "secret_sauce": 1})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"
    assert Report.objects.get(pk=report.pk).name == "Portfolio"


def test_run_now_sends_the_report_to_its_recipients(call, report, kim, django_capture_on_commit_callbacks, mailoutbox):
    with django_capture_on_commit_callbacks(execute=True):
        response = call("post", f"/reports/{report.pk}/run", {})

    assert response.status_code == 202, response.json()
    run = ReportRun.objects.get()
    assert response.json()["runs"][0]["id"] == run.pk
    assert (run.trigger, run.status, run.requested_by) == ("manual", ReportRun.Status.SENT, kim)
    assert sorted(message.to[0] for message in mailoutbox) == ["ann@example.com", "bob@example.com"]
    assert "Acme Corp" in mailoutbox[0].body
    assert AuditEvent.objects.get(action="ran").actor == kim


def test_run_now_for_a_day_whose_period_leaves_the_calendar_is_refused(call, report):
    response = call("post", f"/reports/{report.pk}/run", {"period_day": "9999-12-31"})

    assert response.status_code == 422
    assert ReportRun.objects.count() == 0


def test_send_test_goes_to_the_token_users_own_address_only(
    call, report, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=True):
        response = call("post", f"/reports/{report.pk}/test", {})

    assert response.status_code == 202
    assert [message.to for message in mailoutbox] == [["kim@example.com"]]
    assert ReportRun.objects.get().trigger == ReportRun.Trigger.TEST
    assert AuditEvent.objects.get(action="test_sent").actor.username == "kim"


def test_send_test_without_an_own_address_says_so(call, report, kim):
    kim.email = ""
    kim.save()

    response = call("post", f"/reports/{report.pk}/test", {})

    assert response.status_code == 422
    assert "no email address" in response.json()["error"]["message"]


# --- runs and the archive -----------------------------------------------------------------------------------


def test_it_lists_runs_filtered_by_report_and_status(call, sent_run):
    ReportRun.objects.create(
        report=sent_run.report,
        period_start=sent_run.period_start,
        period_end=sent_run.period_end,
        period_key="failed",
        trigger=ReportRun.Trigger.MANUAL,
        status=ReportRun.Status.FAILED,
    )

    failed = call("get", "/runs", report=sent_run.report_id, status="failed").json()
    other_report = call("get", "/runs", report=sent_run.report_id + 1000).json()

    assert failed["count"] == 1 and failed["items"][0]["status"] == "failed"
    assert other_report == {"count": 0, "items": []}


def test_a_run_shows_its_deliveries_and_attachments(call, sent_run):
    answer = call("get", f"/runs/{sent_run.pk}").json()

    assert [(d["address"], d["status"], d["kind"]) for d in answer["deliveries"]] == [
        ("ann@example.com", "sent", "original")
    ]
    [attachment] = answer["attachments"]
    assert attachment["filename"] == "rows.csv"
    assert attachment["url"] == f"{API}/runs/{sent_run.pk}/attachments/{attachment['id']}"


def test_an_attachment_is_downloaded_as_archived(call, sent_run):
    attachment = sent_run.attachments.get()

    response = call("get", f"/runs/{sent_run.pk}/attachments/{attachment.pk}")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"a,b\n1,2"
    assert 'filename="rows.csv"' in response["Content-Disposition"]


def test_an_attachment_of_another_run_is_not_found(call, sent_run):
    attachment = sent_run.attachments.get()

    response = call("get", f"/runs/{sent_run.pk + 1}/attachments/{attachment.pk}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_resend_to_typed_addresses_records_deliveries_and_sends(
    call, sent_run, kim, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=True):
        response = call("post", f"/runs/{sent_run.pk}/resend", {"addresses": ["eve@example.com"]})

    assert response.status_code == 202, response.json()
    assert response.json()["addresses"] == ["eve@example.com"]
    delivery = Delivery.objects.get(kind="resend")
    assert (delivery.address, delivery.status, delivery.requested_by) == ("eve@example.com", "sent", kim)
    assert [(m.to, m.subject) for m in mailoutbox] == [(["eve@example.com"], "Portfolio — today")]
    assert AuditEvent.objects.get(action="resent").actor == kim


def test_resend_without_addresses_goes_to_the_original_recipients(
    call, sent_run, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=True):
        response = call("post", f"/runs/{sent_run.pk}/resend", {})

    assert response.status_code == 202
    assert sorted(Delivery.objects.filter(kind="resend").values_list("address", flat=True)) == [
        "ann@example.com",
        "bob@example.com",
    ]


def test_resend_of_a_run_never_rendered_is_refused_in_words(call, sent_run):
    ReportRun.objects.filter(pk=sent_run.pk).update(rendered_at=None, body_html="", status="failed")

    response = call("post", f"/runs/{sent_run.pk}/resend", {"addresses": ["eve@example.com"]})

    assert response.status_code == 422
    assert "no archived email" in response.json()["error"]["message"]
    assert not Delivery.objects.filter(kind="resend").exists()


def test_resend_to_an_invalid_address_is_refused(call, sent_run):
    response = call("post", f"/runs/{sent_run.pk}/resend", {"addresses": ["eve@"]})

    assert response.status_code == 422
    assert not Delivery.objects.filter(kind="resend").exists()


# --- recipients and lists ---------------------------------------------------------------------------------


def test_recipients_are_created_changed_and_deleted_in_the_audit_log(call, kim):
    created = call(
        "post", "/recipients", {"email": "cfo@example.com", "name": "CFO", "attributes": {"client_id": "C1"}}
    )
    recipient_id = created.json()["id"]
    changed = call("patch", f"/recipients/{recipient_id}", {"active": False})
    deleted = call("delete", f"/recipients/{recipient_id}")

    assert (created.status_code, changed.status_code, deleted.status_code) == (201, 200, 204)
    assert changed.json()["active"] is False
    assert not Recipient.objects.filter(pk=recipient_id).exists()
    entries = LogEntry.objects.filter(object_pk=str(recipient_id), content_type__model="recipient")
    assert sorted(entries.values_list("action", flat=True)) == [0, 1, 2]  # created, changed, deleted
    assert set(entries.values_list("actor__username", flat=True)) == {"kim"}


def test_a_recipient_with_a_bad_attribute_name_is_refused(call):
    response = call("post", "/recipients", {"email": "cfo@example.com", "attributes": {"1bad": "x"}})

    assert response.status_code == 422
    assert "attributes" in response.json()["error"]["fields"]
    assert not Recipient.objects.exists()


def test_a_duplicate_recipient_is_refused(call, report):
    response = call("post", "/recipients", {"email": "ann@example.com"})

    assert response.status_code == 422
    assert "email" in response.json()["error"]["fields"]


def test_recipient_lists_are_made_with_their_members(call, report):
    ann = Recipient.objects.get(email="ann@example.com")

    created = call("post", "/recipient-lists", {"name": "Board", "members": [ann.pk]})
    renamed = call("patch", f"/recipient-lists/{created.json()['id']}", {"name": "The board"})

    assert created.status_code == 201
    assert renamed.json() == {"id": created.json()["id"], "name": "The board", "members": [ann.pk]}
    assert list(RecipientList.objects.get().recipients.all()) == [ann]


def test_recipients_and_lists_are_read_a_page_at_a_time_and_a_list_deleted(call, report, kim):
    board = factories.recipient_list("Board", ["cfo@example.com", "ann@example.com"])
    ann = Recipient.objects.get(email="ann@example.com")

    recipients = call("get", "/recipients", limit=2).json()
    one = call("get", f"/recipients/{ann.pk}").json()
    lists = call("get", "/recipient-lists").json()
    deleted = call("delete", f"/recipient-lists/{board.pk}")

    assert recipients["count"] == 3
    assert [r["email"] for r in recipients["items"]] == ["ann@example.com", "bob@example.com"]
    assert one == {"id": ann.pk, "email": "ann@example.com", "name": "", "active": True, "attributes": {}}
    assert lists["items"][0]["name"] == "Board" and ann.pk in lists["items"][0]["members"]
    assert deleted.status_code == 204 and not RecipientList.objects.exists()
    assert Recipient.objects.count() == 3  # its members stay
    entry = LogEntry.objects.filter(content_type__model="recipientlist", action=2).get()
    assert entry.actor == kim


def test_a_list_with_an_unknown_member_is_refused(call):
    response = call("post", "/recipient-lists", {"name": "Board", "members": [123456]})

    assert response.status_code == 422
    assert not RecipientList.objects.exists()


# --- hostile input and the error shape ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [{"limit": 100000}, {"limit": 0}, {"offset": -1}, {"limit": "many"}, {"offset": 2**40}],
)
def test_a_page_outside_the_bounds_is_refused_in_the_error_shape(call, report, query):
    response = call("get", "/reports", **query)

    assert response.status_code == 422
    assert set(response.json()["error"]) == {"code", "message", "fields"}


@pytest.mark.parametrize("path", ["/reports/999999", "/runs/999999", "/recipients/999999", "/recipient-lists/99999"])
def test_a_missing_object_is_404_in_the_error_shape(call, path):
    response = call("get", path)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_unknown_path_and_a_wrong_method_answer_in_the_error_shape(call):
    unknown = call("get", "/nothing/here")
    wrong = call("put", "/reports")

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")


def test_a_body_that_is_not_json_is_refused(call, report):
    response = call.client.patch(
        f"{API}/reports/{report.pk}",
        "{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {call.token}",
    )

    assert response.status_code in (400, 422)
    assert "error" in response.json()


def test_deleting_a_report_is_not_offered(call, report):
    assert call("delete", f"/reports/{report.pk}").status_code == 405
    assert Report.objects.filter(pk=report.pk).exists()


# --- the token and the schema -----------------------------------------------------------------------------


def test_a_token_is_stored_only_as_its_hash_and_notes_its_last_use(call, report):
    token = ApiToken.objects.get()

    call("get", "/reports")

    token.refresh_from_db()
    assert call.token not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert call.token.startswith(token.prefix)
    assert token.last_used_at is not None


def test_the_committed_schema_is_the_one_the_code_serves(call):
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")

    assert committed == schema_text(api), "docs/openapi.json is stale: run  python manage.py export_openapi"


def test_the_schema_is_served_and_documents_the_error_shape(client):
    schema = client.get(f"{API}/openapi.json").json()

    assert schema["components"]["schemas"]["ErrorOut"]["properties"]["error"]
    assert schema["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"


def test_the_docs_page_is_served_from_the_sites_own_static_files(client):
    page = client.get(f"{API}/docs")

    assert page.status_code == 200
    assert "cdn" not in page.content.decode().lower()  # a CDN's script would be blocked by the CSP


def test_the_command_writes_the_schema(tmp_path):
    call_command("export_openapi", output=str(tmp_path / "openapi.json"))

    assert json.loads((tmp_path / "openapi.json").read_text())["info"]["title"] == "Scheduled Reports API"


def test_a_body_over_the_upload_limit_is_413_in_the_error_shape(call, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    response = call("post", "/recipients", {"email": "cfo@example.com", "name": "x" * 200})

    assert (response.status_code, response.json()["error"]["code"]) == (413, "too_large")
    assert not Recipient.objects.exists()


# --- tokens in the admin -------------------------------------------------------------------------------------


@pytest.fixture
def editor(django_user_model):
    return factories.staff_user("eddie", "view_report", "change_report")


def make_token_in_the_admin(client, user, scopes=("reports:read",)) -> str:
    """The secret the admin shows once, after making the token."""
    client.force_login(user)
    response = client.post(
        reverse("admin:reporting_apitoken_add"), {"name": "dashboard", "scopes": list(scopes)}, follow=True
    )
    [secret] = [
        found.group(1) for m in response.context["messages"] if (found := re.search(r"(rpt_\S+) — copy", str(m)))
    ]
    return secret


def test_staff_make_a_token_in_the_admin_and_see_its_secret_once(client, editor, report):
    secret = make_token_in_the_admin(client, editor)

    token = ApiToken.objects.get()
    assert (token.user, token.scopes, token.key_hash) == (
        editor,
        ["reports:read"],
        hashlib.sha256(secret.encode()).hexdigest(),
    )
    assert secret not in client.get(reverse("admin:reporting_apitoken_change", args=[token.pk])).content.decode()
    assert secret not in client.get(reverse("admin:reporting_apitoken_changelist")).content.decode()
    client.logout()
    assert Api(client, secret)("get", "/reports").status_code == 200


def test_a_token_revoked_in_the_admin_is_refused_from_then_on(client, editor, report):
    secret = make_token_in_the_admin(client, editor)
    token = ApiToken.objects.get()

    client.post(reverse("admin:reporting_apitoken_change", args=[token.pk]), {"revoked": "on"})
    client.logout()

    assert ApiToken.objects.get().revoked is True
    assert Api(client, secret)("get", "/reports").status_code == 401


def test_staff_see_and_change_only_their_own_tokens_and_a_superuser_sees_all(client, editor, kim):
    factories.api_token(kim, name="kim's")
    factories.api_token(editor, name="eddie's")
    kims = ApiToken.objects.get(name="kim's")

    client.force_login(editor)
    listed = client.get(reverse("admin:reporting_apitoken_changelist")).content.decode()
    revoking = client.post(reverse("admin:reporting_apitoken_change", args=[kims.pk]), {"revoked": "on"})

    assert "eddie&#x27;s" in listed and "kim&#x27;s" not in listed
    assert revoking.status_code == 302 and ApiToken.objects.get(pk=kims.pk).revoked is False
    client.force_login(kim)
    assert "eddie&#x27;s" in client.get(reverse("admin:reporting_apitoken_changelist")).content.decode()


def test_an_unknown_scope_is_refused_when_making_a_token(client, editor):
    client.force_login(editor)

    response = client.post(reverse("admin:reporting_apitoken_add"), {"name": "x", "scopes": ["admin:everything"]})

    assert response.status_code == 200
    assert not ApiToken.objects.exists()


def test_a_write_that_loses_a_race_is_409_in_the_error_shape(call, monkeypatch):
    """Two requests for the same new address at once: both pass the check, the database refuses the second."""
    monkeypatch.setattr(Recipient, "full_clean", lambda self, *args, **kwargs: None)  # the check the loser passed
    Recipient.objects.create(email="cfo@example.com")  # the winner's

    response = call("post", "/recipients", {"email": "cfo@example.com"})

    assert (response.status_code, response.json()["error"]["code"]) == (409, "conflict")
    assert Recipient.objects.filter(email="cfo@example.com").count() == 1


def test_the_audit_logs_actor_is_the_callers_inside_and_the_requests_after(django_user_model):
    """audit.acting_as names its user for django-auditlog, then gives the request's own back."""
    from auditlog.context import set_actor

    from reporting import audit

    alice = django_user_model.objects.create_user("alice", is_staff=True)
    bob = django_user_model.objects.create_user("bob", is_staff=True)
    with set_actor(alice):
        with audit.acting_as(bob):
            inside = Recipient.objects.create(email="in@example.com")
        after = Recipient.objects.create(email="after@example.com")

    assert LogEntry.objects.get_for_object(inside).get().actor == bob
    assert LogEntry.objects.get_for_object(after).get().actor == alice
