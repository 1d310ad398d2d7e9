"""Who may see and do what in the admin: the three groups of migration 0006, and everyone else."""

import importlib

import pytest
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from reporting.models import Delivery, ReportRun, RunAttachment

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
ROLES = ["viewer", "editor", "sender", "staff", "user", "anonymous"]
MIGRATION = importlib.import_module("reporting.migrations.0006_permission_groups")


@pytest.fixture(autouse=True)
def groups():
    """The groups of migration 0006 (made again when a transactional test before this one flushed them)."""
    if Group.objects.filter(name__in=MIGRATION.GROUPS).count() < len(MIGRATION.GROUPS):
        state = MigrationExecutor(connection).loader.project_state(("reporting", "0006_permission_groups"))
        MIGRATION.install_groups(state.apps, None)


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


def url(name: str, report, run) -> str:
    args = {
        "report": [report.pk],
        "run": [run.pk],
        "attachment": [run.pk, run.attachments.get().pk],
        "": [],
    }
    kind, _, view = name.partition(":")
    return reverse(f"admin:{view}", args=args[kind])


#                                                       viewer editor sender staff user anonymous
PAGES = {
    ":reporting_report_changelist": [200, 200, 200, 403, 302, 302],
    "report:reporting_report_change": [200, 200, 200, 403, 302, 302],
    ":reporting_report_add": [403, 200, 403, 403, 302, 302],
    ":reporting_datasource_changelist": [200, 200, 403, 403, 302, 302],
    ":reporting_datasource_add": [403, 200, 403, 403, 302, 302],
    ":reporting_recipient_changelist": [200, 200, 403, 403, 302, 302],
    ":reporting_recipient_add": [403, 200, 403, 403, 302, 302],
    ":reporting_recipientlist_changelist": [200, 200, 403, 403, 302, 302],
    ":django_celery_beat_periodictask_changelist": [403, 200, 403, 403, 302, 302],
    ":django_celery_beat_crontabschedule_changelist": [403, 200, 403, 403, 302, 302],
    ":reporting_reportrun_changelist": [200, 403, 200, 403, 302, 302],
    "run:reporting_reportrun_change": [200, 403, 200, 403, 302, 302],
    "report:reporting_report_run_now": [403, 403, 200, 403, 302, 302],
    "report:reporting_report_send_test": [403, 403, 200, 403, 302, 302],
    "run:reporting_reportrun_resend": [403, 403, 200, 403, 302, 302],
    "attachment:reporting_reportrun_attachment": [200, 403, 200, 403, 302, 302],
    "run:reporting_reportrun_email_html": [200, 403, 200, 403, 302, 302],
}
CASES = [(page, role, expected[ROLES.index(role)]) for page, expected in PAGES.items() for role in ROLES]


@pytest.mark.parametrize(("page", "role", "status"), CASES, ids=[f"{p.split(':')[1]}-{r}" for p, r, _ in CASES])
def test_each_page_answers_each_role_as_its_permissions_say(as_role, report, archived_run, page, role, status):
    response = as_role(role).get(url(page, report, archived_run))

    assert response.status_code == status
    if status == 302:
        assert response.url.startswith(reverse("admin:login"))


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
    assert {"django_celery_beat.change_periodictask", "django_celery_beat.change_crontabschedule"} <= editors
    assert not any(name.endswith("reportrun") for name in editors)


def test_the_migration_can_run_again_without_duplicating_anything():
    state = MigrationExecutor(connection).loader.project_state(("reporting", "0006_permission_groups"))
    before = {name: codenames(name) for name in MIGRATION.GROUPS}

    MIGRATION.install_groups(state.apps, None)

    assert Group.objects.filter(name__in=MIGRATION.GROUPS).count() == 3
    assert {name: codenames(name) for name in MIGRATION.GROUPS} == before
