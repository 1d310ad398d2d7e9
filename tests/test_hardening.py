"""The admin hardened for finance data: login throttling, two-factor, the system's tasks, the audit log."""

import re
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from reporting.models import DataSource, Recipient, Report
from tests import factories
from tests.test_admin import report_form
from tests.test_settings import manage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery", "permission_groups")]
SYSTEM_TASK = "Reporting: prune the archive"


@pytest.fixture
def member(django_user_model):
    """A staff user in one of the permission groups: member("Report editors")."""

    def make(group: str | None, *, username: str = "eve", superuser: bool = False):
        user = django_user_model.objects.create_user(
            username, f"{username}@example.com", "right-password", is_staff=True, is_superuser=superuser
        )
        if group:
            user.groups.add(Group.objects.get(name=group))
        return user

    return make


def log_in(client, username: str, password: str, address: str = "10.0.0.7"):
    return client.post(
        reverse("admin:login"),
        {"username": username, "password": password, "next": reverse("admin:index")},
        REMOTE_ADDR=address,
    )


# --- login throttling (django-axes) ------------------------------------------------------------


@pytest.fixture
def three_tries(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_MINUTES = 15
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


@pytest.mark.usefixtures("three_tries")
def test_the_nth_wrong_password_locks_the_login_out_and_then_even_the_right_one_is_refused(client, member):
    member("Report editors")

    first, second = log_in(client, "eve", "wrong"), log_in(client, "eve", "wrong")
    third = log_in(client, "eve", "wrong")
    right = log_in(client, "eve", "right-password")

    assert (first.status_code, second.status_code) == (200, 200)  # the login form again, with its error
    assert "Please enter the correct username and password" in second.content.decode()
    for locked in (third, right):
        assert locked.status_code == 429
        text = " ".join(locked.content.decode().split())
        assert "Too many failed logins for “eve” from your address" in text
        assert "after 3 wrong passwords, logging in is blocked for 15 minutes, even with the right password" in text
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("admin:index")).status_code == 302  # still not logged in


@pytest.mark.usefixtures("three_tries")
def test_after_the_cool_off_the_right_password_logs_in(client, member):
    member("Report editors")
    for _ in range(3):
        log_in(client, "eve", "wrong")
    assert log_in(client, "eve", "right-password").status_code == 429

    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    response = log_in(client, "eve", "right-password")

    assert response.status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


@pytest.mark.usefixtures("three_tries")
def test_a_lockout_holds_for_that_username_from_that_address_only(client, member):
    member("Report editors")
    for _ in range(3):
        log_in(client, "eve", "wrong", address="10.0.0.7")

    elsewhere = log_in(client, "eve", "right-password", address="10.0.0.8")

    assert elsewhere.status_code == 302
    assert AccessAttempt.objects.filter(username="eve", ip_address="10.0.0.7").exists()


def test_the_limit_and_cool_off_default_to_5_tries_and_15_minutes_and_come_from_the_environment(tmp_path):
    show = (
        "from django.conf import settings as s; "
        "print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME, s.AXES_LOCKOUT_PARAMETERS)"
    )

    defaults = manage("shell", "-c", show, REPORTING_VAR_DIR=str(tmp_path))
    configured = manage(
        "shell", "-c", show, AXES_FAILURE_LIMIT="10", AXES_COOLOFF_MINUTES="60", REPORTING_VAR_DIR=str(tmp_path)
    )

    assert defaults.stdout.strip().splitlines()[-1] == "5 0:15:00 [['username', 'ip_address']]", defaults.stderr
    assert configured.stdout.strip().splitlines()[-1] == "10 1:00:00 [['username', 'ip_address']]", configured.stderr


@pytest.mark.usefixtures("three_tries")
def test_a_typed_password_is_never_stored_by_the_login_throttle(client, member):
    member("Report editors")
    for _ in range(3):
        log_in(client, "eve", "right-passwor")  # a near miss: almost the secret itself

    rows = [*AccessAttempt.objects.values(), *AccessFailureLog.objects.values(), *AccessLog.objects.values()]
    assert rows  # the attempts are recorded…
    assert not any("right-passwor" in str(row) for row in rows)  # …without what was typed


# --- two-factor (django-otp), switched on by REPORTING_REQUIRE_2FA ---------------------------------


def enrolled(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="Authenticator", confirmed=True)


def code_of(device: TOTPDevice) -> str:
    """The code the user's authenticator app shows now, computed as the app does."""
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


def verify(client, device: TOTPDevice, code: str, next_url: str = "/admin/"):
    return client.post(
        reverse("reporting_verify_2fa"), {"otp_device": device.persistent_id, "otp_token": code, "next": next_url}
    )


@pytest.mark.parametrize("group", ["Report editors", "Report senders", None])
def test_with_two_factor_on_editors_senders_and_superusers_must_give_a_code_first(client, member, settings, group):
    settings.REPORTING_REQUIRE_2FA = True
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # the right code straight after a wrong one (throttling: below)
    user = member(group, superuser=group is None)
    device = enrolled(user)
    client.force_login(user)

    before = client.get(reverse("admin:reporting_report_changelist"))
    wrong = verify(client, device, "000000" if code_of(device) != "000000" else "111111")
    still = client.get(reverse("admin:index"))
    right = verify(client, device, code_of(device), next_url=reverse("admin:reporting_report_changelist"))
    after = client.get(reverse("admin:reporting_report_changelist"))

    assert before.status_code == 302
    assert before.url == f"{reverse('reporting_verify_2fa')}?next=%2Fadmin%2Freporting%2Freport%2F"
    assert wrong.status_code == 200
    assert "That code is not right, or it was already used. Enter the code your app shows now." in (
        wrong.content.decode()
    )
    assert still.status_code == 302
    assert (right.status_code, right.url) == (302, reverse("admin:reporting_report_changelist"))
    assert after.status_code == 200


def test_with_two_factor_on_a_user_without_an_authenticator_is_told_how_to_enrol(client, member, settings):
    settings.REPORTING_REQUIRE_2FA = True
    client.force_login(member("Report senders"))

    page = client.get(client.get(reverse("admin:index")).url)

    text = " ".join(page.content.decode().split())
    assert "no authenticator is enrolled for it" in text
    assert "python manage.py enrol_totp eve" in text
    assert client.get(reverse("admin:index")).status_code == 302


def test_with_two_factor_on_a_viewer_and_the_health_check_need_no_code(client, member, settings):
    settings.REPORTING_REQUIRE_2FA = True
    client.force_login(member("Report viewers"))

    assert client.get(reverse("admin:reporting_report_changelist")).status_code == 200
    assert client.get(reverse("healthz")).status_code in (200, 503)  # answers; never sent to the code page


@pytest.mark.parametrize("group", ["Report editors", None])
def test_with_two_factor_off_nothing_changes(client, member, settings, group):
    settings.REPORTING_REQUIRE_2FA = False
    user = member(group, superuser=group is None)
    enrolled(user)
    client.force_login(user)

    assert client.get(reverse("admin:reporting_report_changelist")).status_code == 200


def test_the_enrol_command_prints_a_uri_whose_codes_pass_the_verification(client, member, settings, capsys):
    settings.REPORTING_REQUIRE_2FA = True
    user = member("Report editors")

    call_command("enrol_totp", "eve")
    uri = capsys.readouterr().out.strip().splitlines()[-1]
    device = TOTPDevice.objects.get(user=user)
    client.force_login(user)
    response = verify(client, device, code_of(device))

    assert uri.startswith("otpauth://totp/Scheduled%20Reports%3Aeve?secret=")
    assert response.status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


def test_the_enrol_command_refuses_a_second_authenticator_without_replace_and_an_unknown_user(member):
    member("Report editors")
    call_command("enrol_totp", "eve")
    first = TOTPDevice.objects.get()

    with pytest.raises(CommandError, match=re.escape("eve already has an authenticator. Use --replace")):
        call_command("enrol_totp", "eve")
    with pytest.raises(CommandError, match="There is no user 'nobody'"):
        call_command("enrol_totp", "nobody")
    assert TOTPDevice.objects.get() == first
    call_command("enrol_totp", "eve", "--replace")
    assert TOTPDevice.objects.get() != first


# --- the system's periodic tasks: superusers only ----------------------------------------------


@pytest.fixture
def system_task() -> PeriodicTask:
    """The nightly retention sweep of migration 0005 (made again when a transactional test flushed it)."""
    crontab, _ = CrontabSchedule.objects.get_or_create(minute="17", hour="3", timezone="UTC")
    task, _ = PeriodicTask.objects.get_or_create(
        name=SYSTEM_TASK, defaults={"task": "reporting.tasks.prune_archive", "crontab": crontab}
    )
    return task


def task_form(task: PeriodicTask, **overrides) -> dict:
    form = {
        "name": task.name,
        "regtask": task.task,
        "task": task.task,
        "enabled": "on",
        "crontab": task.crontab_id,
        "args": "[]",
        "kwargs": "{}",
        "priority": "",
        "headers": "{}",
    }
    return {key: value for key, value in {**form, **overrides}.items() if value is not None}


def test_an_editor_may_not_change_disable_or_delete_a_system_task(client, member, system_task):
    client.force_login(member("Report editors"))
    change = reverse("admin:django_celery_beat_periodictask_change", args=[system_task.pk])

    page = client.get(change)
    edit = client.post(change, task_form(system_task, enabled=None))
    delete = client.post(
        reverse("admin:django_celery_beat_periodictask_delete", args=[system_task.pk]), {"post": "yes"}
    )
    crontab = client.post(
        reverse("admin:django_celery_beat_crontabschedule_change", args=[system_task.crontab_id]),
        {"minute": "0", "hour": "3", "day_of_month": "1", "month_of_year": "*", "day_of_week": "*", "timezone": "UTC"},
    )

    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()  # read-only
    assert (edit.status_code, delete.status_code, crontab.status_code) == (403, 403, 403)
    system_task.refresh_from_db()
    assert system_task.enabled and (system_task.crontab.minute, system_task.crontab.hour) == ("17", "3")


def test_an_editors_bulk_action_spares_the_system_tasks_and_says_so(client, member, system_task, report):
    factories.schedule(report, minute="0", hour="7")
    report_task = report.periodic_task
    client.force_login(member("Report editors"))

    response = client.post(
        reverse("admin:django_celery_beat_periodictask_changelist"),
        {"action": "disable_tasks", "_selected_action": [system_task.pk, report_task.pk]},
        follow=True,
    )

    assert "1 system task (named “Reporting: …”) left unchanged: only a superuser may change them." in (
        response.content.decode()
    )
    system_task.refresh_from_db()
    report_task.refresh_from_db()
    assert (system_task.enabled, report_task.enabled) == (True, False)


def test_a_superuser_may_change_a_system_task(client, member, system_task):
    client.force_login(member(None, username="root", superuser=True))

    response = client.post(
        reverse("admin:django_celery_beat_periodictask_change", args=[system_task.pk]),
        task_form(system_task, enabled=None),
    )

    assert response.status_code == 302
    system_task.refresh_from_db()
    assert not system_task.enabled


def test_an_editor_still_edits_a_reports_schedule_on_the_report_page(client, member, system_task, source):
    from tests.test_admin import report_form

    client.force_login(member("Report editors"))
    client.post(reverse("admin:reporting_report_add"), report_form(source))
    report = Report.objects.get(slug="collections")

    response = client.post(reverse("admin:reporting_report_change", args=[report.pk]), report_form(source, hour="9"))

    assert response.status_code == 302
    report.refresh_from_db()
    assert report.periodic_task.crontab.hour == "9"


# --- the audit log (django-auditlog): before and after, never a secret --------------------------


def entries_for(instance) -> list[LogEntry]:
    return list(LogEntry.objects.get_for_object(instance).order_by("timestamp", "pk"))


def test_an_editors_change_to_a_data_source_is_logged_with_before_after_and_who(client, member, source):
    editor = member("Report editors")
    client.force_login(editor)
    form = {
        "name": "Portfolio API",
        "base_url": source.base_url,
        "auth_scheme": "bearer",
        "auth_header_name": "Authorization",
        "secret_env_var": "REPORTING_SECRET_PORTFOLIO_API_TOKEN",
        "connect_timeout": "5",
        "read_timeout": "30",
        "verify_tls": "on",
    }

    response = client.post(reverse("admin:reporting_datasource_change", args=[source.pk]), form)

    assert response.status_code == 302
    change = entries_for(source)[-1]
    assert change.action == LogEntry.Action.UPDATE and change.actor == editor
    assert change.changes_dict["name"] == [f"Source {source.base_url}", "Portfolio API"]
    # The variable's name only, never a value.
    assert change.changes_dict["secret_env_var"] == ["", "REPORTING_SECRET_PORTFOLIO_API_TOKEN"]


def test_a_users_password_never_enters_the_audit_log(client, member):
    root = member(None, username="root", superuser=True)
    eve = member("Report senders")
    client.force_login(root)
    old_hash = eve.password

    client.post(
        reverse("admin:auth_user_password_change", args=[eve.pk]),
        {"password1": "a-new-Passw0rd-42", "password2": "a-new-Passw0rd-42", "usable_password": "true"},
    )
    eve.refresh_from_db()
    client.post(reverse("admin:auth_group_change", args=[Group.objects.get(name="Report senders").pk]), {})

    assert eve.password != old_hash  # the password did change
    logged = " ".join(str(entry.changes) for entry in LogEntry.objects.all())
    assert "password" not in logged
    assert old_hash not in logged and eve.password not in logged
    assert "pbkdf2" not in logged


def test_group_membership_and_periodic_task_changes_are_logged(client, member, system_task):
    root = member(None, username="root", superuser=True)
    eve = member("Report viewers")
    client.force_login(root)

    eve.groups.add(Group.objects.get(name="Report senders"))
    client.post(
        reverse("admin:django_celery_beat_periodictask_change", args=[system_task.pk]),
        task_form(system_task, enabled=None),
    )

    membership = entries_for(eve)[-1]
    assert membership.changes_dict["groups"]["objects"] == ["Report senders"]
    task_change = entries_for(system_task)[-1]
    assert task_change.changes_dict["enabled"] == ["True", "False"] and task_change.actor == root


def test_the_report_page_shows_the_audit_log_beside_the_reports_own_trail(client, member, source):
    client.force_login(member("Report editors"))
    client.post(reverse("admin:reporting_report_add"), report_form(source))
    report = Report.objects.get(slug="collections")
    client.post(
        reverse("admin:reporting_report_change", args=[report.pk]), report_form(source, name="Collections (EMEA)")
    )

    page = client.get(reverse("admin:reporting_report_change", args=[report.pk])).content.decode()

    log = " ".join(page.split('id="audit-log"')[1].split("</fieldset>")[0].split())
    assert "<strong>name</strong>: Collections → Collections (EMEA)" in log
    assert "eve" in log
    assert 'id="audit-trail"' in page  # reporting's own trail is still there


def test_the_log_entries_list_in_the_admin_shows_the_change(client, member, source):
    root = member(None, username="root", superuser=True)
    client.force_login(root)
    DataSource.objects.filter(pk=source.pk).get().delete()

    page = client.get(reverse("admin:auditlog_logentry_changelist"))

    assert page.status_code == 200
    assert f"Source {source.base_url}" in page.content.decode()


def test_the_code_page_sends_back_only_to_this_site(client, member, settings):
    settings.REPORTING_REQUIRE_2FA = True
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    user = member("Report editors")
    device = enrolled(user)
    client.force_login(user)

    response = verify(client, device, code_of(device), next_url="https://evil.example/admin/")

    assert (response.status_code, response.url) == (302, reverse("admin:index"))


def test_every_models_history_page_shows_its_audit_log(client, member):
    editor = member("Report editors")
    client.force_login(editor)
    client.post(reverse("admin:reporting_recipient_add"), {"email": "cfo@example.com", "name": "", "active": "on"})
    recipient = Recipient.objects.get(email="cfo@example.com")
    client.post(
        reverse("admin:reporting_recipient_change", args=[recipient.pk]),
        {"email": "cfo@example.com", "name": "The CFO", "active": "on"},
    )

    page = client.get(reverse("admin:reporting_recipient_history", args=[recipient.pk])).content.decode()

    log = " ".join(page.split('id="audit-log"')[1].split("</fieldset>")[0].split())
    assert "<strong>name</strong>: (empty) → The CFO" in log
    assert "eve" in log
    assert 'id="change-history"' in page  # the admin's own history is still there
