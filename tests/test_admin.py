"""The admin as a staff user meets it: schedules on the report page, run now, test sends, the archive, resend."""

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from reporting import runs
from reporting.models import Delivery, Recipient, Report, ReportRun
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
LONDON = ZoneInfo("Europe/London")


def report_form(source, **overrides):
    recipient, _ = Recipient.objects.get_or_create(email="ann@example.com")
    form = {
        "name": "Collections",
        "slug": "collections",
        "description": "",
        "owner": str(factories.owner().pk),
        "enabled": "on",
        "data_source": source.pk,
        "path": "positions",
        "query_params": "{}",
        "records_path": "data.positions",
        "period_kind": "weekly",
        "timezone": "America/New_York",
        "schedule_enabled": "on",
        "minute": "30",
        "hour": "6",
        "day_of_month": "*",
        "month_of_year": "*",
        "day_of_week": "mon",
        "template": "reports/table.html",
        "subject_template": "Collections — {{ period.label }}",
        "attach_csv": "on",
        "email_max_rows": "100",
        "catch_up_hours": "24",
        "audience": "everyone",
        "per_recipient_data": "split",
        "when_no_rows": "skip",
        "check_min_rows": "1",
        "recipient_addresses": recipient.email,
    }
    return {**form, **overrides}


def post_action(client, url_name, action, ids, **extra):
    data = {"action": action, "_selected_action": [str(pk) for pk in ids], **extra}
    return client.post(reverse(url_name), data)


def test_it_stores_the_schedule_from_the_report_page_in_the_reports_own_task(staff_client, source):
    response = staff_client.post(reverse("admin:reporting_report_add"), report_form(source))

    assert response.status_code == 302, response.context["adminform"].form.errors
    report = Report.objects.get(slug="collections")
    task = report.periodic_task
    assert json.loads(task.kwargs) == {"report_id": report.pk}
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "6", "mon")
    assert str(task.crontab.timezone) == "America/New_York"
    assert task.enabled


@time_machine.travel(datetime(2026, 11, 23, 12, 0, tzinfo=ZoneInfo("UTC")))
def test_it_shows_the_schedule_in_words_and_the_next_five_runs(staff_client, report):
    factories.schedule(report, minute="0", hour="7", day_of_month="1")

    page = staff_client.get(reverse("admin:reporting_report_change", args=[report.pk])).content.decode()

    assert "At 07:00, on day 1 of the month (Europe/London)" in page
    for expected in [
        "Tue 01 Dec 2026, 07:00 GMT",
        "Fri 01 Jan 2027",
        "Mon 01 Feb 2027",
        "Mon 01 Mar 2027",
        "Thu 01 Apr 2027, 07:00 BST",
    ]:
        assert expected in page


def test_it_edits_the_schedule_in_place(staff_client, source):
    staff_client.post(reverse("admin:reporting_report_add"), report_form(source))
    report = Report.objects.get()
    task_id, crontab_id = report.periodic_task_id, report.periodic_task.crontab_id

    staff_client.post(reverse("admin:reporting_report_change", args=[report.pk]), report_form(source, hour="9"))

    task = PeriodicTask.objects.get(pk=task_id)
    assert task.crontab_id == crontab_id and task.crontab.hour == "9"
    assert PeriodicTask.objects.filter(report__isnull=False).count() == 1
    assert factories.report_crontabs().count() == 1


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("minute", "61", "Minute (0-59)"),
        ("hour", "24", "Hour (0-23)"),
        ("day_of_week", "7", "Day of week"),
        ("day_of_month", "31", "never fires"),
    ],
)
def test_it_explains_an_invalid_schedule_on_the_form(staff_client, source, field, value, words):
    overrides = {field: value, **({"month_of_year": "2"} if field == "day_of_month" else {})}

    response = staff_client.post(reverse("admin:reporting_report_add"), report_form(source, **overrides))

    assert response.status_code == 200
    assert words in response.content.decode()
    assert not Report.objects.exists() and not factories.report_tasks().exists()


def test_it_refuses_an_enabled_report_without_an_active_recipient(staff_client, source):
    Recipient.objects.create(email="gone@example.com", active=False)

    response = staff_client.post(
        reverse("admin:reporting_report_add"), report_form(source, recipient_addresses="GONE@example.com")
    )

    assert "needs at least one active recipient" in response.content.decode()
    assert not Report.objects.exists()


def test_it_explains_a_subject_with_a_line_break_on_the_form(staff_client, source):
    response = staff_client.post(
        reverse("admin:reporting_report_add"), report_form(source, subject_template="Hello\n{{ period.label }}")
    )

    assert "line break" in response.content.decode()


def test_disabling_the_report_disables_its_task_and_deleting_it_deletes_the_task(staff_client, source):
    staff_client.post(reverse("admin:reporting_report_add"), report_form(source))
    report = Report.objects.get()
    form = report_form(source)
    del form["enabled"]

    staff_client.post(reverse("admin:reporting_report_change", args=[report.pk]), form)
    assert PeriodicTask.objects.get(pk=report.periodic_task_id).enabled is False

    staff_client.post(reverse("admin:reporting_report_delete", args=[report.pk]), {"post": "yes"})
    assert not factories.report_tasks().exists() and not factories.report_crontabs().exists()


@time_machine.travel(datetime(2026, 11, 23, 9, 0, tzinfo=LONDON))
def test_run_now_asks_for_the_period_then_runs_the_last_complete_one(
    staff_client, report, django_capture_on_commit_callbacks
):
    page = post_action(staff_client, "admin:reporting_report_changelist", "run_now", [report.pk])
    assert "Period containing" in page.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        post_action(staff_client, "admin:reporting_report_changelist", "run_now", [report.pk], confirm="yes")

    run = ReportRun.objects.get()
    assert (run.trigger, run.status, run.period_start) == ("manual", "sent", date(2026, 11, 22))
    assert sorted(m.to[0] for m in mail.outbox) == ["ann@example.com", "bob@example.com"]


def test_run_now_runs_the_chosen_period(staff_client, report, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post_action(
            staff_client,
            "admin:reporting_report_changelist",
            "run_now",
            [report.pk],
            confirm="yes",
            period_day="2026-02-28",
        )

    assert ReportRun.objects.get().period_start == date(2026, 2, 28)
    assert mail.outbox[0].subject == "Portfolio — 28 February 2026"


def test_send_test_goes_only_to_the_staff_users_address(staff_client, report, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post_action(staff_client, "admin:reporting_report_changelist", "send_test", [report.pk], confirm="yes")

    assert [m.to for m in mail.outbox] == [["kim@example.com"]]
    assert mail.outbox[0].subject.startswith("[Test] Portfolio — ")  # nobody takes it for the real one
    assert ReportRun.objects.get().trigger == ReportRun.Trigger.TEST


def test_the_run_page_shows_the_email_as_sent_its_files_and_deliveries(staff_client, report):
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)

    page = staff_client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()

    assert 'sandbox=""' in page and reverse("admin:reporting_reportrun_email_html", args=[run.pk]) in page
    assert "Globex 4.25% 2032" in page
    assert "ann@example.com" in page and "bob@example.com" in page
    attachment = run.attachments.get()
    download = staff_client.get(reverse("admin:reporting_reportrun_attachment", args=[run.pk, attachment.pk]))
    assert b"".join(download.streaming_content).decode("utf-8-sig").startswith("instrument,quantity,market_value")


def test_the_run_page_explains_a_failure_in_words(staff_client, report):
    report.records_path = "data.missing"
    report.save()
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)

    page = staff_client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()

    assert "The records path &#x27;data.missing&#x27; was not found" in page


def test_the_archive_filters_by_report_status_and_trigger(staff_client, report, source):
    runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    other = factories.report(source, name="Other", slug="other", addresses=["zed@example.com"])
    runs.execute_run(run_id=runs.create_manual_run(report_id=other.pk, period_day=None, requested_by_id=None).pk)
    url = reverse("admin:reporting_reportrun_changelist")

    assert "Portfolio" in staff_client.get(url, {"status__exact": "sent", "trigger__exact": "manual"}).content.decode()
    assert "0 report runs" in staff_client.get(url, {"status__exact": "failed"}).content.decode()
    found = staff_client.get(url, {"q": "ann@example.com"}).content.decode()
    assert "1 result" in found and "Portfolio ·" in found and "Other ·" not in found


def test_resend_to_typed_addresses_records_who_asked(staff_client, staff, report, django_capture_on_commit_callbacks):
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    mail.outbox.clear()

    page = post_action(staff_client, "admin:reporting_reportrun_changelist", "resend", [run.pk])
    assert "Only the addresses typed below" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        post_action(
            staff_client,
            "admin:reporting_reportrun_changelist",
            "resend",
            [run.pk],
            step="send",
            target="typed",
            addresses="carol@example.com, dan@example.com",
        )

    assert sorted(m.to[0] for m in mail.outbox) == ["carol@example.com", "dan@example.com"]
    resends = run.deliveries.filter(kind=Delivery.Kind.RESEND)
    assert {(d.address, d.status, d.requested_by_id) for d in resends} == {
        ("carol@example.com", "sent", staff.pk),
        ("dan@example.com", "sent", staff.pk),
    }


def test_resend_rejects_an_invalid_typed_address_and_sends_nothing(staff_client, report):
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    mail.outbox.clear()

    page = staff_client.post(
        reverse("admin:reporting_reportrun_resend", args=[run.pk]),
        {"step": "send", "target": "typed", "addresses": "carol@example.com\nnot an address"},
    )

    assert "Not a valid email address: not an address" in page.content.decode()
    assert not mail.outbox and not run.deliveries.filter(kind=Delivery.Kind.RESEND).exists()


def test_only_users_with_the_resend_permission_see_or_use_resend(client, django_user_model, report):
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    viewer = django_user_model.objects.create_user("vic", "vic@example.com", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_reportrun", "view_delivery"]))
    client.force_login(viewer)

    listing = client.get(reverse("admin:reporting_reportrun_changelist")).content.decode()
    page = client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()
    direct = client.post(
        reverse("admin:reporting_reportrun_resend", args=[run.pk]), {"step": "send", "target": "original"}
    )

    assert 'value="resend"' not in listing and "Resend…" not in page
    assert direct.status_code == 403
    assert run.deliveries.filter(kind=Delivery.Kind.RESEND).count() == 0

    viewer.user_permissions.add(Permission.objects.get(codename="resend_reportrun"))
    viewer = django_user_model.objects.get(pk=viewer.pk)
    client.force_login(viewer)
    assert 'value="resend"' in client.get(reverse("admin:reporting_reportrun_changelist")).content.decode()


# --- no 500s: a day past the calendar, an id that is not a number -------------------------


@pytest.mark.parametrize("action", ["run_now", "send_test"])
def test_run_now_and_send_test_refuse_a_day_too_far_in_the_future_in_words(staff_client, source, action):
    weekly = factories.report(source, period_kind="weekly")

    page = post_action(
        staff_client, "admin:reporting_report_changelist", action, [weekly.pk], confirm="yes", period_day="9999-12-31"
    )

    assert page.status_code == 200
    assert "This day is too far in the future" in page.content.decode()
    assert not ReportRun.objects.exists() and mail.outbox == []


def test_the_run_now_page_of_one_report_refuses_a_day_too_far_in_the_future(staff_client, source):
    weekly = factories.report(source, period_kind="weekly")

    page = staff_client.post(
        reverse("admin:reporting_report_run_now", args=[weekly.pk]), {"confirm": "yes", "period_day": "9999-12-31"}
    )

    assert page.status_code == 200
    assert "This day is too far in the future" in page.content.decode()
    assert not ReportRun.objects.exists()


def test_preview_refuses_a_day_too_far_in_the_future_in_words(staff_client, source):
    weekly = factories.report(source, period_kind="weekly")

    page = staff_client.get(reverse("admin:reporting_report_preview", args=[weekly.pk]), {"period_day": "9999-12-31"})

    assert page.status_code == 200
    assert "This day is too far in the future" in page.content.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/admin/reporting/report/abc/change/",
        "/admin/reporting/report/abc/history/",
        "/admin/reporting/report/abc/delete/",
        "/admin/reporting/report/abc/run-now/",
        "/admin/reporting/report/abc/send-test/",
        "/admin/reporting/report/abc/preview/",
        "/admin/reporting/reportrun/abc/change/",
        "/admin/reporting/reportrun/abc/resend/",
        "/admin/reporting/reportrun/abc/send-anyway/",
        "/admin/reporting/reportrun/abc/email.html",
        "/admin/reporting/reportrun/abc/progress.json",
        "/admin/reporting/reportrun/1/attachment/abc/",
        "/admin/reporting/datasource/abc/change/",
        "/admin/reporting/recipient/abc/change/",
        "/admin/reporting/recipientlist/abc/change/",
        "/admin/reporting/report/99999999999999999999999/change/",
    ],
)
def test_a_page_for_an_id_that_is_not_a_number_says_there_is_no_such_object(staff_client, report, url):
    """As Django's admin does for any missing object: back to the admin index, "… doesn't exist"."""
    page = staff_client.get(url, follow=True)

    assert page.status_code == 200
    assert page.redirect_chain[-1][0] == reverse("admin:index")
    assert "doesn’t exist. Perhaps it was deleted?" in page.content.decode()


@pytest.mark.parametrize(
    "url_name",
    [
        "admin:reporting_report_run_now",
        "admin:reporting_report_preview",
        "admin:reporting_reportrun_resend",
        "admin:reporting_reportrun_progress",
    ],
)
def test_a_custom_page_for_a_number_with_no_object_answers_404(staff_client, url_name):
    assert staff_client.get(reverse(url_name, args=[99999999999999999999999])).status_code == 404


def test_a_new_report_is_owned_by_whoever_creates_it_and_starts_from_the_generic_table(staff_client, staff):
    form = staff_client.get(reverse("admin:reporting_report_add")).context["adminform"].form

    assert form.initial["owner"] == staff.pk
    assert form.initial["template"] == "reports/table.html"


def test_an_enabled_report_with_nobody_to_alert_is_refused_in_words(staff_client, source, settings):
    settings.ADMINS = []
    response = staff_client.post(reverse("admin:reporting_report_add"), report_form(source, owner=""))

    assert not Report.objects.exists()
    assert "needs someone to tell when it fails" in response.content.decode()
    settings.ADMINS = [("Ops", "ops@example.com")]
    staff_client.post(reverse("admin:reporting_report_add"), report_form(source, owner=""))
    assert Report.objects.get().owner is None  # ADMINS are told instead


def test_the_report_and_run_pages_offer_no_view_on_site_that_only_reloads_them(staff_client, report):
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)

    for url in (reverse("admin:reporting_report_change", args=[report.pk]), run.get_absolute_url()):
        assert "View on site" not in staff_client.get(url).content.decode()


def test_a_failed_run_has_a_re_run_button_as_its_alert_says(
    staff_client, httpserver, django_capture_on_commit_callbacks
):
    httpserver.expect_request("/api/positions").respond_with_data("gone", status=404)
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    failed = runs.execute_run(run_id=run.pk)
    assert failed.status == ReportRun.Status.FAILED
    page = staff_client.get(failed.get_absolute_url()).content.decode()
    assert 'name="action" value="rerun"' in page

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            reverse("admin:reporting_reportrun_changelist"), {"action": "rerun", "_selected_action": [failed.pk]}
        )

    assert ReportRun.objects.count() == 2


def test_typed_recipients_reuse_known_ones_whatever_their_case_and_add_the_new(staff_client, source):
    bob = Recipient.objects.create(email="Bob@Example.com", name="Bob")

    staff_client.post(
        reverse("admin:reporting_report_add"),
        report_form(source, recipient_addresses="bob@example.com, new@example.com\n\nNEW@example.com; ann@example.com"),
    )

    report = Report.objects.get()
    assert sorted(report.recipients.values_list("email", flat=True)) == [
        "Bob@Example.com",
        "ann@example.com",
        "new@example.com",
    ]
    assert Recipient.objects.get(pk=bob.pk).name == "Bob" and Recipient.objects.count() == 3
    form = staff_client.get(reverse("admin:reporting_report_change", args=[report.pk])).context["adminform"].form
    assert form["recipient_addresses"].value() == "Bob@Example.com\nann@example.com\nnew@example.com"
