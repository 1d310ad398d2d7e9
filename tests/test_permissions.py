"""Who may see and do what in the admin: the three groups of migration 0006, and everyone else."""

import importlib
import re

import pytest
from auditlog.models import LogEntry
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from django_otp.plugins.otp_totp.models import TOTPDevice

from reporting.models import Delivery, Destination, Recipient, Report, ReportRun, RunAttachment, RunPart
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery", "permission_groups")]
MIGRATION = importlib.import_module("reporting.migrations.0006_permission_groups")
ROLES = ["viewer", "editor", "sender", "staff", "user", "anonymous"]


@pytest.fixture
def archived_run(report):
    """A sent run of `report` with its archived email and a CSV attachment."""
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
    return run


def user_for(role: str, django_user_model):
    if role == "anonymous":
        return None
    group = {"viewer": "Report viewers", "editor": "Report editors", "sender": "Report senders"}.get(role)
    user = django_user_model.objects.create_user(
        role, f"{role}@example.com", "pw", is_staff=role != "user", is_superuser=False
    )
    user.groups.add(Group.objects.get(name=group or "Report viewers"))  # "user": a viewer who is not staff
    if role == "staff":
        user.groups.clear()
    return user


@pytest.fixture
def as_role(client, django_user_model):
    def login(role: str):
        user = user_for(role, django_user_model)
        if user is not None:
            client.force_login(user)
        return client

    return login


@pytest.fixture
def held_run(archived_run):
    """A run of the same report held by a data check, for the "Send anyway…" and "Re-run…" pages."""
    return ReportRun.objects.create(
        report=archived_run.report,
        period_start=archived_run.period_start,
        period_end=archived_run.period_end,
        period_key="held-run",
        trigger=ReportRun.Trigger.MANUAL,
        status=ReportRun.Status.HELD,
        recipients=["ann@example.com"],
        error="Held: fewer rows than the report's check asks for.",
    )


@pytest.fixture
def objects(report, archived_run, held_run, django_user_model):
    """One object of each model the admin serves, by (app label, model name), for its object pages."""
    nightly, _ = CrontabSchedule.objects.get_or_create(minute="17", hour="3", timezone="UTC")
    task, _ = PeriodicTask.objects.get_or_create(
        name="Reporting: prune the archive", defaults={"task": "reporting.tasks.prune_archive", "crontab": nightly}
    )
    other = django_user_model.objects.create_user("other", "other@example.com", "pw")
    access = {"user_agent": "test", "ip_address": "10.0.0.9", "username": "other", "http_accept": "*/*"}
    found = {
        ("reporting", "report"): report,
        ("reporting", "reportrun"): archived_run,
        ("reporting", "datasource"): report.data_source,
        ("reporting", "recipient"): Recipient.objects.first(),
        ("reporting", "recipientlist"): factories.recipient_list("Board", ["cfo@example.com"]),
        ("django_celery_beat", "periodictask"): task,
        ("django_celery_beat", "crontabschedule"): task.crontab,
        ("django_celery_beat", "intervalschedule"): IntervalSchedule.objects.get_or_create(every=1, period="minutes")[
            0
        ],
        ("django_celery_beat", "solarschedule"): SolarSchedule.objects.create(event="sunset", latitude=51, longitude=0),
        ("django_celery_beat", "clockedschedule"): ClockedSchedule.objects.create(clocked_time=timezone.now()),
        ("auth", "user"): other,
        ("auth", "group"): Group.objects.get(name="Report viewers"),
        ("axes", "accessattempt"): AccessAttempt.objects.create(**access, failures_since_start=1),
        ("axes", "accesslog"): AccessLog.objects.create(**access),
        ("axes", "accessfailurelog"): AccessFailureLog.objects.create(**access),
        ("otp_totp", "totpdevice"): TOTPDevice.objects.create(user=other, name="Authenticator"),
        ("auditlog", "logentry"): LogEntry.objects.order_by("pk").first(),
    }
    part = RunPart.objects.create(
        run=archived_run,
        address="ann@example.com",
        recipient_email="ann@example.com",
        key="C001",
        status=RunPart.Status.SENT,
        subject="Statement C001",
        body_html="<p>Yours</p>",
        rendered_at=timezone.now(),
    )
    part_file = RunAttachment.objects.create(
        run=archived_run,
        part=part,
        filename="rows.csv",
        mimetype="text/csv",
        size=7,
        file=ContentFile(b"a,b\n1,2", name="rows.csv"),
    )
    found[("reporting", "runpart")] = part
    destination = Destination.objects.create(
        name="Ledger",
        kind="webhook",
        secret_env_var="REPORTING_SECRET_HOOK",
        signing_secret_env_var="REPORTING_SECRET_SIG",
    )
    found[("reporting", "destination")] = destination
    factories.api_token(other)
    found[("reporting", "apitoken")] = other.api_tokens.get()
    to_destination = Delivery.objects.create(
        run=archived_run,
        channel="webhook",
        destination=destination,
        target=destination.described,
        payload={"run": {"id": archived_run.pk}},
        status=Delivery.Status.SENT,
    )
    attachment = archived_run.attachments.get(part__isnull=True)
    return {
        **found,
        "held": held_run,
        "attachment": attachment,
        "part_attachment": part_file,
        "destination_delivery": to_destination,
    }


def admin_patterns(patterns=None, prefix: str = ""):
    """Every named URL pattern of the admin site, with its route, read from the site itself."""
    for entry in admin.site.get_urls() if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from admin_patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif entry.name:
            yield entry.name, prefix + str(entry.pattern)


ADMIN_URLS = dict(admin_patterns())


def model_of(name: str) -> tuple[str, str] | None:
    """("reporting", "report") for "reporting_report_change": the model whose admin serves the URL."""
    for app_label, model in {(m._meta.app_label, m._meta.model_name) for m in admin.site._registry}:
        if name.startswith(f"{app_label}_{model}_"):
            return app_label, model
    return None


def url(name: str, objects) -> str:
    """The URL of admin page `name` for the `objects` fixture, its arguments read from its route."""
    model = model_of(name)
    held_page = name in ("reporting_reportrun_release", "reporting_reportrun_rerun_held")
    values = {
        "object_id": lambda: objects[model or ("reporting", "report")].pk,  # view_on_site: a report
        "report_id": lambda: objects["reporting", "report"].pk,
        "run_id": lambda: (objects["held"] if held_page else objects["reporting", "reportrun"]).pk,
        "attachment_id": lambda: (
            objects["part_attachment" if name.startswith("reporting_runpart") else "attachment"].pk
        ),
        "part_id": lambda: objects["reporting", "runpart"].pk,
        "filename": lambda: objects["part_attachment" if "part_id" in ADMIN_URLS[name] else "attachment"].filename,
        "delivery_id": lambda: objects["destination_delivery"].pk,
        "pk": lambda: objects[model].pk,
        "id": lambda: objects[model].pk,
        "content_type_id": lambda: ContentType.objects.get_for_model(Report).pk,
        "app_label": lambda: "reporting",
    }
    keys = re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", ADMIN_URLS[name])
    kwargs = {key: values[key]() for pair in keys for key in pair if key}
    return reverse(f"admin:{name}", kwargs=kwargs)


ALL = [200] * 4 + [302, 302]  # any staff user; the rest to the login page
#                         viewer editor sender staff user anonymous
STAFF_ONLY_MODEL = {  # models none of the groups holds a permission on: superusers only
    "changelist": [403, 403, 403, 403, 302, 302],
    "add": [403, 403, 403, 403, 302, 302],
    "change": [403, 403, 403, 403, 302, 302],
    "history": [403, 403, 403, 403, 302, 302],
    "delete": [403, 403, 403, 403, 302, 302],
}
VIEWED_EDITED = {  # data sources, recipients, lists: viewers see them, editors edit them, senders neither
    "changelist": [200, 200, 403, 403, 302, 302],
    "add": [403, 200, 403, 403, 302, 302],
    "change": [200, 200, 403, 403, 302, 302],
    "history": [200, 200, 403, 403, 302, 302],
    "delete": [403, 200, 403, 403, 302, 302],
}
SCHEDULES = {  # django-celery-beat's tasks and crontabs: editors view and change (not add or delete) them
    "changelist": [403, 200, 403, 403, 302, 302],
    "add": [403, 403, 403, 403, 302, 302],
    "change": [403, 200, 403, 403, 302, 302],  # a system task's page: read-only to them (test_hardening)
    "history": [403, 200, 403, 403, 302, 302],
    "delete": [403, 403, 403, 403, 302, 302],
}
MODEL_PAGES = {
    ("reporting", "report"): {
        "changelist": [200, 200, 200, 403, 302, 302],
        "add": [403, 200, 403, 403, 302, 302],
        "change": [200, 200, 200, 403, 302, 302],
        "history": [200, 200, 200, 403, 302, 302],
        "delete": [403, 200, 403, 403, 302, 302],
    },
    ("reporting", "reportrun"): {
        "changelist": [200, 403, 200, 403, 302, 302],
        "add": [403, 403, 403, 403, 302, 302],  # runs are made by running a report, never by hand
        "change": [200, 403, 200, 403, 302, 302],
        "history": [200, 403, 200, 403, 302, 302],
        "delete": [403, 403, 403, 403, 302, 302],  # only retention deletes runs
    },
    ("reporting", "runpart"): {  # recipient reports: the archive's permissions
        "changelist": [200, 403, 200, 403, 302, 302],
        "add": [403, 403, 403, 403, 302, 302],
        "change": [200, 403, 200, 403, 302, 302],
        "history": [200, 403, 200, 403, 302, 302],
        "delete": [403, 403, 403, 403, 302, 302],
        "email_html": [200, 403, 200, 403, 302, 302],
        "attachment": [200, 403, 200, 403, 302, 302],
        "resend": [403, 403, 200, 403, 302, 302],
        "send_anyway": [403, 403, 302, 403, 302, 302],  # a POST from the part's page; a GET goes back to it
    },
    ("reporting", "datasource"): VIEWED_EDITED,
    ("reporting", "recipient"): {
        **VIEWED_EDITED,
        "import": [403, 200, 403, 403, 302, 302],  # adds and changes recipients: editors
        "export": [200, 200, 403, 403, 302, 302],  # a file of what the list shows: whoever may view it
    },
    ("reporting", "recipientlist"): VIEWED_EDITED,
    ("reporting", "destination"): VIEWED_EDITED,
    # Each staff member makes and revokes their own API tokens; the table's token is another user's (not found: to
    # the index), and tokens are revoked, never deleted.
    ("reporting", "apitoken"): {
        "changelist": [200, 200, 200, 200, 302, 302],
        "add": [200, 200, 200, 200, 302, 302],
        "change": [302] * 6,
        "history": [302] * 6,
        "delete": [403, 403, 403, 403, 302, 302],
    },
    ("django_celery_beat", "periodictask"): SCHEDULES,
    ("django_celery_beat", "crontabschedule"): SCHEDULES,
    ("django_celery_beat", "intervalschedule"): STAFF_ONLY_MODEL,
    ("django_celery_beat", "solarschedule"): STAFF_ONLY_MODEL,
    ("django_celery_beat", "clockedschedule"): STAFF_ONLY_MODEL,
    ("auth", "user"): {**STAFF_ONLY_MODEL, "password_change": [403, 403, 403, 403, 302, 302]},
    ("auth", "group"): STAFF_ONLY_MODEL,
    ("axes", "accessattempt"): STAFF_ONLY_MODEL,
    ("axes", "accesslog"): STAFF_ONLY_MODEL,
    ("axes", "accessfailurelog"): STAFF_ONLY_MODEL,
    ("otp_totp", "totpdevice"): {**STAFF_ONLY_MODEL, "config": [403] * 4 + [302] * 2, "qrcode": [403] * 4 + [302] * 2},
    ("auditlog", "logentry"): STAFF_ONLY_MODEL,
}
#                                        viewer editor sender staff user anonymous
OTHER_PAGES = {
    "index": ALL,
    "login": [302, 302, 302, 302, 200, 200],  # staff already logged in go to the index
    "logout": [405, 405, 405, 405, 302, 302],  # POST only
    "password_change": ALL,
    "password_change_done": ALL,
    "autocomplete": [403, 403, 403, 403, 302, 302],  # without a field to complete: refused
    "jsi18n": ALL,
    "view_on_site": [302] * 6,  # a report's "view on site" is its admin page, which checks the permission
    "app_list": [200] * 4 + [302, 302],  # the reporting app's index: staff without a group see their API tokens
    "reporting_report_run_now": [403, 403, 200, 403, 302, 302],
    "reporting_report_send_test": [403, 403, 200, 403, 302, 302],
    "reporting_report_preview": [403, 200, 200, 403, 302, 302],  # fetches live data: editors and senders
    "reporting_report_overview": [200, 200, 200, 403, 302, 302],
    "reporting_report_next_runs": [403, 200, 403, 403, 302, 302],  # the schedule picker's: whoever edits reports
    # the layout designer's sample and live preview: editors, and only a posted form (a GET: 405)
    "reporting_report_design_sample": [403, 405, 403, 403, 302, 302],
    "reporting_report_design_preview": [403, 405, 403, 403, 302, 302],
    "reporting_reportrun_attachment": [200, 403, 200, 403, 302, 302],
    "reporting_reportrun_file": [200, 403, 200, 403, 302, 302],  # what an email links to: the same file
    "reporting_reportrun_part_file": [200, 403, 200, 403, 302, 302],
    "reporting_reportrun_email_html": [200, 403, 200, 403, 302, 302],
    "reporting_reportrun_resend": [403, 403, 200, 403, 302, 302],
    "reporting_reportrun_resend_destination": [403, 403, 200, 403, 302, 302],  # its confirmation page
    "reporting_reportrun_release": [403, 403, 200, 403, 302, 302],
    "reporting_reportrun_rerun_held": [403, 403, 200, 403, 302, 302],
    "reporting_reportrun_progress": [200, 403, 200, 403, 302, 302],
    # a run of a per-recipient report only: the table's run is not one (404 to whoever may act)
    "reporting_reportrun_send_to_the_rest": [403, 403, 404, 403, 302, 302],
}


def expected_statuses(name: str) -> list[int] | None:
    """The expected status of each role on admin page `name`, or None when the table has none."""
    if name in OTHER_PAGES:
        return OTHER_PAGES[name]
    model = model_of(name)
    view = name.removeprefix(f"{model[0]}_{model[1]}_") if model else None
    return MODEL_PAGES.get(model, {}).get(view)


def test_every_admin_url_has_an_expectation_for_every_role():
    """A new admin URL fails here until the table says who may open it."""
    missing = [name for name in ADMIN_URLS if expected_statuses(name) is None]

    assert missing == []


@pytest.mark.parametrize("role", ROLES)
def test_each_admin_page_answers_each_role_as_its_permissions_say(as_role, objects, role):
    """One role through every admin URL; the mismatches, by URL name, as (expected, got)."""
    client = as_role(role)
    expected = {name: expected_statuses(name)[ROLES.index(role)] for name in ADMIN_URLS}
    got = {name: client.get(url(name, objects)) for name in ADMIN_URLS}

    assert {
        name: (expected[name], got[name].status_code) for name in got if got[name].status_code != expected[name]
    } == {}
    if role in ("user", "anonymous"):  # their redirects all go to the login page (logging out: to the index first)
        redirects = {got[name].url.split("?")[0] for name in got if got[name].status_code == 302 and name != "logout"}
        assert redirects == {reverse("admin:login")}


#                       viewer editor sender staff user anonymous
PROJECT_PAGES = {
    "healthz": [503] * 6,  # no login needed; 503 here since no beat has ticked in the test database
    "reporting_verify_2fa": [302] * 6,  # with two-factor off nobody is asked for a code; anonymous: to log in
    # No REPORTING_METRICS_TOKEN here: staff who may view runs, or nobody (404; with a token: 401 without it).
    "metrics": [200, 403, 200, 403, 404, 404],
}
PROJECT_CASES = [
    (name, role, status) for name, row in PROJECT_PAGES.items() for role, status in zip(ROLES, row, strict=True)
]


@pytest.mark.parametrize(("page", "role", "status"), PROJECT_CASES, ids=[f"{p}-{r}" for p, r, _ in PROJECT_CASES])
def test_each_page_outside_the_admin_answers_each_role(as_role, page, role, status):
    assert as_role(role).get(reverse(page)).status_code == status


def test_every_named_url_outside_the_admin_has_an_expectation():
    names = {entry.name for entry in get_resolver().url_patterns if isinstance(entry, URLPattern) and entry.name}

    assert names == set(PROJECT_PAGES)


# --- the confirmation pages' POSTs: a sender's act, a viewer's nothing ------------------------


@pytest.mark.parametrize("role", ["viewer", "editor", "staff"])
def test_run_now_is_refused_to_anyone_without_the_run_permission_and_changes_nothing(
    as_role, report, role, django_capture_on_commit_callbacks, mailoutbox
):
    client = as_role(role)
    with django_capture_on_commit_callbacks(execute=True):
        page = client.post(reverse("admin:reporting_report_run_now", args=[report.pk]), {"confirm": "yes"})
        action = client.post(
            reverse("admin:reporting_report_changelist"),
            {"action": "run_now", "_selected_action": [report.pk], "confirm": "yes"},
        )

    assert page.status_code == 403
    assert action.status_code in (200, 302, 403)  # "no action selected", or no list at all
    assert ReportRun.objects.count() == 0
    assert mailoutbox == []


def test_a_sender_runs_a_report_now_and_it_is_sent(as_role, report, django_capture_on_commit_callbacks, mailoutbox):
    client = as_role("sender")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:reporting_report_run_now", args=[report.pk]), {"confirm": "yes"})

    assert response.status_code == 302
    run = ReportRun.objects.get()
    assert (run.trigger, run.status, run.requested_by.username) == ("manual", ReportRun.Status.SENT, "sender")
    assert sorted(message.to[0] for message in mailoutbox) == ["ann@example.com", "bob@example.com"]


def test_a_sender_sends_a_test_to_their_own_address_only(
    as_role, report, django_capture_on_commit_callbacks, mailoutbox
):
    client = as_role("sender")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:reporting_report_send_test", args=[report.pk]), {"confirm": "yes"})

    assert [message.to for message in mailoutbox] == [["sender@example.com"]]
    assert ReportRun.objects.get().trigger == ReportRun.Trigger.TEST


@pytest.mark.parametrize("role", ["viewer", "editor", "staff"])
def test_resend_is_refused_to_anyone_without_the_resend_permission_and_changes_nothing(
    as_role, archived_run, role, django_capture_on_commit_callbacks, mailoutbox
):
    client = as_role(role)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:reporting_reportrun_resend", args=[archived_run.pk]),
            {"step": "send", "target": "typed", "addresses": "eve@example.com"},
        )

    assert response.status_code == 403
    assert Delivery.objects.count() == 0
    assert mailoutbox == []


def test_a_sender_resends_an_archived_run(as_role, archived_run, django_capture_on_commit_callbacks, mailoutbox):
    client = as_role("sender")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:reporting_reportrun_resend", args=[archived_run.pk]),
            {"step": "send", "target": "typed", "addresses": "eve@example.com"},
        )

    assert response.status_code == 302
    delivery = Delivery.objects.get()
    assert (delivery.address, delivery.kind, delivery.status) == ("eve@example.com", "resend", "sent")
    assert [(message.to, message.subject) for message in mailoutbox] == [(["eve@example.com"], "Portfolio — today")]


def test_re_running_a_run_needs_the_run_permission(as_role, archived_run, django_capture_on_commit_callbacks):
    data = {"action": "rerun", "_selected_action": [archived_run.pk]}

    as_role("viewer").post(reverse("admin:reporting_reportrun_changelist"), data)
    assert ReportRun.objects.count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        as_role("sender").post(reverse("admin:reporting_reportrun_changelist"), data)
    assert ReportRun.objects.filter(trigger=ReportRun.Trigger.MANUAL).count() == 2


def test_the_report_page_offers_run_now_and_send_test_only_to_those_who_may(as_role, report):
    run_now = reverse("admin:reporting_report_run_now", args=[report.pk])

    viewer_page = as_role("viewer").get(reverse("admin:reporting_report_change", args=[report.pk])).content.decode()
    sender_page = as_role("sender").get(reverse("admin:reporting_report_change", args=[report.pk])).content.decode()

    assert run_now not in viewer_page
    assert run_now in sender_page


# --- the groups themselves ------------------------------------------------------------------------


def codenames(group: str) -> set[str]:
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Group.objects.get(name=group).permissions.select_related("content_type")
    }


def test_the_groups_hold_exactly_their_permissions():
    assert codenames("Report viewers") == {
        "reporting.view_report",
        "reporting.view_reportrun",
        "reporting.view_delivery",
        "reporting.view_runattachment",
        "reporting.view_datasource",
        "reporting.view_recipient",
        "reporting.view_recipientlist",
        "reporting.view_destination",  # migration 0016
    }
    assert codenames("Report senders") == {
        "reporting.view_report",
        "reporting.view_reportrun",
        "reporting.view_delivery",
        "reporting.view_runattachment",
        "reporting.run_report",
        "reporting.resend_reportrun",
        "reporting.release_reportrun",
    }
    editors = codenames("Report editors")
    assert {"reporting.add_report", "reporting.delete_datasource", "reporting.change_recipientlist"} <= editors
    assert {"reporting.add_destination", "reporting.change_destination", "reporting.delete_destination"} <= editors
    assert {"django_celery_beat.change_periodictask", "django_celery_beat.change_crontabschedule"} <= editors
    assert not any(name.endswith("reportrun") for name in editors)


def test_the_migration_can_run_again_without_duplicating_anything():
    state = MigrationExecutor(connection).loader.project_state(("reporting", "0006_permission_groups"))
    before = {name: codenames(name) for name in MIGRATION.GROUPS}

    MIGRATION.install_groups(state.apps, None)

    assert Group.objects.filter(name__in=MIGRATION.GROUPS).count() == 3
    assert {name: codenames(name) for name in MIGRATION.GROUPS} == before


# --- every action of our model admins, for each role: the answer, and whether anything happened ------------------

ACTION_DATA = {  # what the confirmation step would post, so that a permitted action acts at once
    "run_now": {"confirm": "yes"},
    "send_test": {"confirm": "yes"},
    "resend": {"step": "send", "target": "typed", "addresses": "eve@example.com"},
}
# A viewer has no action at all: the list is shown again (200); a role with other actions is sent back to it (302).
#                         viewer        editor        sender        staff         user          anonymous
ACTIONS = {
    "run_now": [(200, False), (302, False), (302, True), (403, False), (302, False), (302, False)],
    "send_test": [(200, False), (302, False), (302, True), (403, False), (302, False), (302, False)],
    "resend": [(200, False), (403, False), (302, True), (403, False), (302, False), (302, False)],
    "rerun": [(200, False), (403, False), (302, True), (403, False), (302, False), (302, False)],
    # only a superuser holds "Can set or clear a run's legal hold"; no group has it
    "set_legal_hold": [(200, False), (403, False), (302, False), (403, False), (302, False), (302, False)],
    "clear_legal_hold": [(200, False), (403, False), (302, False), (403, False), (302, False), (302, False)],
}


def declared_actions() -> dict[str, str]:
    """Each action our model admins declare, by name, with the changelist it is posted to."""
    return {
        action
        if isinstance(action, str)
        else action.__name__: f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label == "reporting"
        for action in model_admin.actions or []
    }


def test_every_action_has_an_expectation_for_every_role():
    assert set(declared_actions()) == set(ACTIONS)


def archive_state() -> tuple:
    """What an action could change: the runs, the deliveries, the legal holds."""
    runs = ReportRun.objects.order_by("pk")
    return runs.count(), Delivery.objects.count(), list(runs.values_list("legal_hold", flat=True))


ACTION_CASES = [(action, role, *row[ROLES.index(role)]) for action, row in ACTIONS.items() for role in ROLES]


@pytest.mark.parametrize(
    ("action", "role", "status", "acts"), ACTION_CASES, ids=[f"{a}-{r}" for a, r, *_ in ACTION_CASES]
)
def test_each_action_answers_each_role_and_acts_only_for_those_allowed(
    as_role, archived_run, action, role, status, acts, django_capture_on_commit_callbacks, mailoutbox
):
    if action == "clear_legal_hold":
        ReportRun.objects.filter(pk=archived_run.pk).update(legal_hold=True)
    target = archived_run.report if action in ("run_now", "send_test") else archived_run
    before = archive_state()

    with django_capture_on_commit_callbacks(execute=True):
        response = as_role(role).post(
            reverse(declared_actions()[action]),
            {"action": action, "_selected_action": [target.pk], **ACTION_DATA.get(action, {})},
        )

    assert response.status_code == status
    assert (archive_state() != before) is acts
    if not acts:
        assert mailoutbox == []
