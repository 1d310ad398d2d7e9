"""Data checks: a report whose data fails one is held, not sent; staff send it anyway or re-run it."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse

from reporting import archive, runs
from reporting.models import AuditEvent, Report, ReportRun
from reporting.pipeline.checks import CheckSettings, failed_checks
from reporting.services import runs as services_runs
from tests import factories

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HELD = ReportRun.Status.HELD


def failures(rows=(), data=None, now=NOW, **checks):
    return failed_checks(rows=list(rows), data=data, checks=CheckSettings(**checks), now=now)


# --- the checks themselves ------------------------------------------------------------------


def test_it_passes_data_that_meets_every_check():
    rows = [{"account": "A-1"}, {"account": "A-2"}]
    data = {"meta": {"as_of": "2026-11-21T06:00:00Z"}, "rows": rows}

    assert failures(rows, data, required_fields=("account",), max_age_field="meta.as_of", max_age_hours=24) == []


def test_it_asks_for_at_least_the_minimum_number_of_rows():
    assert failures([]) == ["The data has 0 rows; this report needs at least 1."]
    assert failures([{"a": 1}], min_rows=5) == ["The data has 1 row; this report needs at least 5."]
    assert failures([{"a": 1}] * 5, min_rows=5) == []


def test_a_minimum_of_0_rows_checks_nothing():
    assert failures([], min_rows=0) == []


def test_it_counts_the_rows_that_lack_a_required_field_and_names_the_first():
    rows = [{"account": f"A-{number}", "value": number} for number in range(1, 41)]
    for index in (2, 5, 9, 11, 14, 17, 20, 23, 26, 29, 32):  # rows 3, 6, …: missing, None or blank
        rows[index] = {"value": index} if index % 3 else {"account": None if index % 2 else "  ", "value": index}
    rows[39]["account"] = ""

    assert failures(rows, required_fields=("account", "value")) == ["12 of 40 rows lack 'account' (first: row 3)."]


def test_it_says_lacks_for_a_single_row_and_checks_each_field():
    rows = [{"account": "A-1", "value": 0}, {"account": "A-2"}, "not a row"]

    assert failures(rows, required_fields=("account", "value")) == [
        "1 of 3 rows lacks 'account' (first: row 3).",  # 0 is a value; a row that is no object has no fields
        "2 of 3 rows lack 'value' (first: row 2).",
    ]


def test_it_holds_data_older_than_the_limit_in_words():
    data = {"meta": {"as_of": "2026-11-20T06:00:00Z"}}

    assert failures([{}], data, max_age_field="meta.as_of", max_age_hours=24) == [
        "The data is 30 hours old (meta.as_of = 2026-11-20T06:00:00Z); the limit is 24 hours."
    ]
    assert failures([{}], data, max_age_field="meta.as_of", max_age_hours=30) == []


def test_an_age_just_over_the_limit_never_reads_as_the_limit():
    data = {"as_of": "2026-11-20T11:57:00+00:00"}

    assert failures([{}], data, max_age_field="as_of", max_age_hours=24) == [
        "The data is 24.1 hours old (as_of = 2026-11-20T11:57:00+00:00); the limit is 24 hours."
    ]


def test_a_timestamp_without_an_offset_is_in_the_reports_timezone():
    data = {"as_of": "2026-11-21T06:00:00"}  # 11:00 UTC in New York (EST, UTC-5)
    checks = {"max_age_field": "as_of", "max_age_hours": 2}

    assert failures([{}], data, timezone="America/New_York", **checks) == []
    assert failures([{}], data, timezone="UTC", **checks) == [
        "The data is 6 hours old (as_of = 2026-11-21T06:00:00); the limit is 2 hours."
    ]


def test_a_date_counts_from_its_midnight():
    data = {"as_of": "2026-11-20"}

    assert failures([{}], data, max_age_field="as_of", max_age_hours=36) == []
    assert failures([{}], data, max_age_field="as_of", max_age_hours=24) == [
        "The data is 36 hours old (as_of = 2026-11-20); the limit is 24 hours."
    ]


MISSING = "The timestamp field meta.as_of is missing from the data, so its age cannot be checked."
NOT_A_TIME = "The timestamp field meta.as_of is not an ISO date or date and time: "


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"meta": {}}, MISSING),
        ({"meta": "x"}, MISSING),
        ({"meta": {"as_of": ""}}, MISSING),
        ({"meta": {"as_of": "yesterday"}}, NOT_A_TIME + "'yesterday'."),
        ({"meta": {"as_of": 1763726400}}, NOT_A_TIME + "1763726400."),
    ],
    ids=["missing", "parent not an object", "empty", "words", "a number"],
)
def test_a_missing_or_unreadable_timestamp_is_a_failure_in_words(data, words):
    assert failures([{}], data, max_age_field="meta.as_of", max_age_hours=24) == [words]


def test_it_reports_every_failed_check_at_once():
    assert failures([], {}, min_rows=1, max_age_field="as_of", max_age_hours=1) == [
        "The data has 0 rows; this report needs at least 1.",
        "The timestamp field as_of is missing from the data, so its age cannot be checked.",
    ]


# --- held runs ------------------------------------------------------------------------------


@pytest.fixture
def releaser(client):
    user = factories.staff_user("rita", "view_reportrun", "release_reportrun")
    client.force_login(user)
    return user


def held_run(report: Report) -> ReportRun:
    """Run `report` (3 positions) with checks its data fails: at least 5 rows and an 'account' on each."""
    Report.objects.filter(pk=report.pk).update(check_min_rows=5, check_required_fields="account, quantity")
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)
    return runs.execute_run(run_id=run.pk)


REASONS = "The data has 3 rows; this report needs at least 5.\n3 of 3 rows lack 'account' (first: row 1)."


@pytest.mark.django_db
def test_a_held_run_sends_nothing_keeps_its_snapshot_and_renders_nothing(report, use_smtp):
    run = held_run(report)

    run.refresh_from_db()
    assert run.status == HELD
    assert run.error == REASONS
    assert use_smtp.messages == [] and not run.deliveries.exists() and not run.attachments.exists()
    assert archive.snapshot_data(run) == factories.POSITIONS and run.row_count == 3
    assert (run.rendered_at, run.subject, run.body_html) == (None, "", "")
    assert run.finished_at is not None and run.lease_expires_at is None
    assert run.alerted_at is None  # for the alert sweep to pick up


@pytest.mark.django_db
def test_a_held_run_is_not_worked_on_again_by_a_redelivered_task(report, use_smtp, httpserver):
    run = held_run(report)

    again = runs.execute_run(run_id=run.pk)

    assert again.status == HELD and again.attempts == 1
    assert use_smtp.messages == [] and len(httpserver.log) == 1


@pytest.mark.django_db
def test_the_held_runs_page_shows_why_and_offers_send_anyway_and_re_run(client, releaser, report):
    run = held_run(report)

    page = client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()

    assert "Held (data check failed)" in page
    assert "The data has 3 rows; this report needs at least 5." in page
    assert "3 of 3 rows lack &#x27;account&#x27; (first: row 1)." in page
    assert reverse("admin:reporting_reportrun_release", args=[run.pk]) in page and "Send anyway…" in page
    assert reverse("admin:reporting_reportrun_rerun_held", args=[run.pk]) in page and "Re-run…" in page
    confirm = client.get(reverse("admin:reporting_reportrun_release", args=[run.pk])).content.decode()
    assert "this report needs at least 5." in confirm and "ann@example.com, bob@example.com" in confirm


@pytest.mark.django_db
def test_send_anyway_sends_the_archived_data_once_to_each_recipient(
    client, releaser, report, use_smtp, httpserver, eager_celery, django_capture_on_commit_callbacks
):
    run = held_run(report)
    httpserver.clear()  # the data source now answers differently: the archived data must be the one sent
    httpserver.expect_request("/api/positions").respond_with_json({"data": {"positions": []}})
    url = reverse("admin:reporting_reportrun_release", args=[run.pk])

    with django_capture_on_commit_callbacks(execute=True):
        client.post(url)
    with django_capture_on_commit_callbacks(execute=True):
        second = client.post(url, follow=True)  # a double click

    run.refresh_from_db()
    assert run.status == ReportRun.Status.SENT and run.checks_released_by == releaser
    assert sorted(address for message in use_smtp.messages for address in use_smtp.recipients_of(message)) == [
        "ann@example.com",
        "bob@example.com",
    ]
    html = use_smtp.messages[0].get_body(("html",)).get_content()
    assert "Globex 4.25% 2032" in html and "49,875.00" in html and "987.65" in html
    assert len(httpserver.log) == 0  # nothing fetched again
    assert run.notes.startswith("Sent anyway by rita on ")
    assert run.notes.endswith("after the data checks held it: " + REASONS)
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.RELEASED)
    assert (event.actor, event.run) == (releaser, run)
    assert event.summary == (
        f"Sent held run #{run.pk} ({run.period_label}) anyway, despite: " + REASONS.replace("\n", " ")
    )
    assert "is not held (it is sent)" in second.content.decode()


@pytest.mark.django_db
def test_releasing_twice_through_the_service_queues_it_once(report, releaser, django_capture_on_commit_callbacks):
    run = held_run(report)

    with django_capture_on_commit_callbacks() as queued:
        first = services_runs.send_anyway(run_id=run.pk, actor=releaser)
        second = services_runs.send_anyway(run_id=run.pk, actor=releaser)

    assert (first, second) == (True, False)
    assert len(queued) == 1
    run.refresh_from_db()
    assert (run.status, run.error, run.finished_at) == (ReportRun.Status.QUEUED, "", None)


@pytest.mark.django_db
def test_re_run_fetches_fresh_data_and_sends_it_when_the_checks_pass(
    client, releaser, httpserver, use_smtp, eager_celery, django_capture_on_commit_callbacks
):
    httpserver.expect_oneshot_request("/api/positions").respond_with_json({"data": {"positions": []}})
    httpserver.expect_oneshot_request("/api/positions").respond_with_json(factories.POSITIONS)
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    assert (run.status, run.error) == (HELD, "The data has 0 rows; this report needs at least 1.")
    old_snapshot = run.data_snapshot.name

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:reporting_reportrun_rerun_held", args=[run.pk]))

    run.refresh_from_db()
    assert run.status == ReportRun.Status.SENT and run.row_count == 3 and run.error == ""
    assert len(httpserver.log) == 2
    assert archive.snapshot_data(run) == factories.POSITIONS
    assert not run.data_snapshot.storage.exists(old_snapshot)
    assert len(use_smtp.messages) == 2
    assert "Initech ETF" in use_smtp.messages_to("ann@example.com")[0].get_body(("html",)).get_content()
    assert run.notes.startswith("Re-run by rita on ")
    assert run.checks_released_by is None
    [event] = AuditEvent.objects.filter(action=AuditEvent.Action.RERAN)
    assert event.run == run and event.actor == releaser


@pytest.mark.django_db
def test_re_run_holds_again_when_the_data_is_still_bad(report, releaser, use_smtp, django_capture_on_commit_callbacks):
    run = held_run(report)
    ReportRun.objects.filter(pk=run.pk).update(alerted_at=NOW)  # the owner was told the first time

    assert services_runs.rerun_held(run_id=run.pk, actor=releaser)
    again = runs.execute_run(run_id=run.pk)

    assert (again.status, again.error) == (HELD, REASONS)
    again.refresh_from_db()
    assert again.alerted_at is None  # told again
    assert use_smtp.messages == []


@pytest.mark.django_db
def test_without_the_permission_there_are_no_buttons_and_the_pages_refuse(client, report, use_smtp):
    run = held_run(report)
    client.force_login(factories.staff_user("vic", "view_reportrun"))

    page = client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()
    answers = [
        send(reverse(name, args=[run.pk]))
        for name in ("admin:reporting_reportrun_release", "admin:reporting_reportrun_rerun_held")
        for send in (client.get, client.post)
    ]

    assert "Held (data check failed)" in page
    assert "Send anyway…" not in page and "Re-run…" not in page
    assert [answer.status_code for answer in answers] == [403, 403, 403, 403]
    run.refresh_from_db()
    assert run.status == HELD and use_smtp.messages == []
    assert not AuditEvent.objects.filter(action__in=[AuditEvent.Action.RELEASED, AuditEvent.Action.RERAN]).exists()


@pytest.mark.django_db
def test_the_buttons_only_show_on_a_held_run(client, releaser, report):
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)

    page = client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()
    confirm = client.post(reverse("admin:reporting_reportrun_release", args=[run.pk]), follow=True)

    assert run.status == ReportRun.Status.SENT
    assert "Send anyway…" not in page and "Re-run…" not in page
    assert "is not held (it is sent)" in confirm.content.decode()


@pytest.mark.django_db
@time_machine.travel(datetime(2026, 11, 21, 9, 0, tzinfo=UTC), tick=False)
def test_a_stale_timestamp_holds_the_run(report, use_smtp):
    Report.objects.filter(pk=report.pk).update(check_max_age_field="as_of", check_max_age_hours=24)

    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)

    # POSITIONS says "as_of": "2026-11-20": midnight in London, 33 hours before now.
    assert (run.status, run.error) == (HELD, "The data is 33 hours old (as_of = 2026-11-20); the limit is 24 hours.")
    assert use_smtp.messages == []


# --- the report form ------------------------------------------------------------------------


def report_form(report: Report, **overrides) -> dict:
    """The report page's form as posted for `report`, unscheduled, with its checks off."""
    form = {
        "name": report.name,
        "slug": report.slug,
        "data_source": report.data_source_id,
        "owner": str(factories.owner().pk),
        "path": report.path,
        "query_params": "{}",
        "records_path": report.records_path,
        "period_kind": report.period_kind,
        "timezone": report.timezone,
        "template": report.template,
        "subject_template": report.subject_template,
        "email_max_rows": "100",
        "enabled": "on",
        **dict.fromkeys(["minute", "hour", "day_of_month", "month_of_year", "day_of_week"], "*"),
        "catch_up_hours": "24",
        "audience": "everyone",
        "per_recipient_data": "split",
        "when_no_rows": "skip",
        "check_min_rows": "1",
        "recipient_addresses": "\n".join(recipient.email for recipient in report.recipients.all()),
    }
    return {**form, **overrides}


@pytest.mark.django_db
def test_the_report_page_edits_the_checks_and_the_catch_up_window(admin_client, report):
    page = admin_client.get(reverse("admin:reporting_report_change", args=[report.pk])).content.decode()
    assert "Data checks" in page and "Catch-up window (hours)" in page

    form = report_form(
        report,
        catch_up_hours="6",
        check_min_rows="0",
        check_required_fields=" account, ,value,account ",
        check_max_age_field="meta.as_of",
        check_max_age_hours="24",
    )
    response = admin_client.post(reverse("admin:reporting_report_change", args=[report.pk]), form)

    assert response.status_code == 302, response.context["adminform"].form.errors
    report.refresh_from_db()
    assert (report.catch_up_hours, report.check_min_rows) == (6, 0)
    assert report.check_required_fields == "account, value"
    assert (report.check_max_age_field, report.check_max_age_hours) == ("meta.as_of", 24)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"check_max_age_field": "meta.as_of"}, "check_max_age_hours", "Give the maximum age in hours"),
        ({"check_max_age_hours": "24"}, "check_max_age_field", "Give the timestamp field whose age to check"),
    ],
    ids=["field without hours", "hours without field"],
)
def test_the_age_check_needs_both_its_field_and_its_limit(admin_client, report, fields, field, words):
    response = admin_client.post(
        reverse("admin:reporting_report_change", args=[report.pk]), report_form(report, **fields)
    )

    assert response.status_code == 200
    assert words in str(response.context["adminform"].form.errors[field])
