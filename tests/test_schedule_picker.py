"""The schedule picker in words: each kind as cron fields and its next runs, the form without
JavaScript, a stored schedule shown as its kind, the last business day's scheduled runs, and
the next-runs endpoint the picker asks as it changes.
"""

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.urls import reverse

from reporting import runs, schedule_kinds, schedules
from reporting.forms import CRON_FIELDS
from reporting.models import Report, ReportRun
from tests import factories
from tests.test_admin import report_form

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
LONDON = ZoneInfo("Europe/London")
UTC = ZoneInfo("UTC")
START = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # a Tuesday; London is on UTC in winter
SEVEN = time(7, 0)

KINDS = [
    # picked, cron fields (minute, hour, day of month, month, day of week), rule, next five run days (at 07:00)
    (
        schedule_kinds.Picked(schedule_kinds.DAILY, SEVEN),
        ("0", "7", "*", "*", "*"),
        "",
        ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04", "2026-12-05"],
    ),
    (
        schedule_kinds.Picked(schedule_kinds.WEEKDAYS, SEVEN),
        ("0", "7", "*", "*", "mon-fri"),
        "",
        ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04", "2026-12-07"],
    ),
    (
        schedule_kinds.Picked(schedule_kinds.WEEKLY, SEVEN, weekday=1),
        ("0", "7", "*", "*", "1"),
        "",
        ["2026-12-07", "2026-12-14", "2026-12-21", "2026-12-28", "2027-01-04"],
    ),
    (
        schedule_kinds.Picked(schedule_kinds.MONTHLY_DAY, SEVEN, day=15),
        ("0", "7", "15", "*", "*"),
        "",
        ["2026-12-15", "2027-01-15", "2027-02-15", "2027-03-15", "2027-04-15"],
    ),
    (
        schedule_kinds.Picked(schedule_kinds.MONTHLY_FIRST_WEEKDAY, SEVEN, weekday=1),
        ("0", "7", "1-7", "*", "1"),
        "",
        ["2026-12-07", "2027-01-04", "2027-02-01", "2027-03-01", "2027-04-05"],
    ),
    (
        schedule_kinds.Picked(schedule_kinds.MONTHLY_LAST_BUSINESS_DAY, SEVEN),
        ("0", "7", "26-31", "*", "mon-fri"),
        schedules.LAST_BUSINESS_DAY,
        # Thu 31 Dec, Fri 29 Jan (31st a Sunday), Fri 26 Feb (28th a Sunday), Wed 31 Mar, Fri 30 Apr
        ["2026-12-31", "2027-01-29", "2027-02-26", "2027-03-31", "2027-04-30"],
    ),
    (
        schedule_kinds.Picked(schedule_kinds.QUARTERLY, SEVEN, day=1),
        ("0", "7", "1", "1,4,7,10", "*"),
        "",
        ["2027-01-01", "2027-04-01", "2027-07-01", "2027-10-01", "2028-01-01"],
    ),
]


@pytest.mark.parametrize(("picked", "cron", "rule", "days"), KINDS, ids=[kind[0].kind for kind in KINDS])
def test_it_writes_each_picked_kind_as_cron_fields_with_its_next_runs(picked, cron, rule, days):
    fields = schedule_kinds.cron_for(picked)
    spec = schedules.CronSpec(*cron, timezone="Europe/London", rule=rule)

    assert (fields.minute, fields.hour, fields.day_of_month, fields.month_of_year, fields.day_of_week) == cron
    assert fields.rule == rule
    assert schedule_kinds.kind_of(fields) == picked  # and the stored cron reads back as the same kind
    runs_after = schedules.next_runs(spec, after=START, count=5)
    assert [slot.date().isoformat() for slot in runs_after] == days
    assert {(slot.hour, slot.minute, slot.tzinfo) for slot in runs_after} == {(7, 0, LONDON)}


@pytest.mark.parametrize(
    "cron",
    [
        ("*/15", "7", "*", "*", "*"),
        ("0", "7-9", "*", "*", "*"),
        ("0", "7", "1", "2", "*"),
        ("0", "7", "26-31", "*", "mon-fri"),
    ],
    ids=["every quarter hour", "several hours", "once a year", "weekdays 26-31 without the rule"],
)
def test_a_cron_no_kind_says_is_custom(cron):
    assert schedule_kinds.kind_of(schedule_kinds.CronFields(*cron)).kind == schedule_kinds.CUSTOM


def test_the_last_business_day_is_said_in_words():
    spec = schedules.CronSpec("0", "7", "26-31", "*", "mon-fri", "Europe/London", rule=schedules.LAST_BUSINESS_DAY)

    assert schedules.describe(spec) == "At 07:00 on the last business day (Mon–Fri) of the month (Europe/London)"


def test_the_latest_slot_of_the_last_business_day_skips_the_other_weekdays():
    spec = schedules.CronSpec("0", "7", "26-31", "*", "mon-fri", "Europe/London", rule=schedules.LAST_BUSINESS_DAY)

    latest = schedules.latest_slot(spec, at_or_before=datetime(2027, 1, 28, 12, 0, tzinfo=LONDON))

    assert latest == datetime(2026, 12, 31, 7, 0, tzinfo=LONDON)  # not Thu 28 Jan: the catch-up sweep agrees


def picker_only(source, **picker):
    """The report form as a browser without JavaScript posts it after picking: no cron fields typed."""
    form = report_form(source, **picker)
    for field in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"):
        del form[field]
    return form


@pytest.mark.parametrize(
    ("picker", "cron", "rule"),
    [
        ({"schedule_kind": "weekdays", "schedule_time": "07:00"}, ("0", "7", "*", "*", "mon-fri"), ""),
        (
            {"schedule_kind": "monthly_first_weekday", "schedule_time": "08:30", "schedule_weekday": "1"},
            ("30", "8", "1-7", "*", "1"),
            "",
        ),
        (
            {"schedule_kind": "monthly_last_business_day", "schedule_time": "07:00"},
            ("0", "7", "26-31", "*", "mon-fri"),
            "last_business_day",
        ),
        (
            {"schedule_kind": "quarterly", "schedule_time": "07:00", "schedule_day": "1"},
            ("0", "7", "1", "1,4,7,10", "*"),
            "",
        ),
    ],
    ids=["weekdays", "first monday", "last business day", "quarterly"],
)
def test_a_post_without_javascript_saves_the_picked_schedule(staff_client, source, picker, cron, rule):
    response = staff_client.post(reverse("admin:reporting_report_add"), picker_only(source, **picker))

    assert response.status_code == 302, response.context["adminform"].form.errors
    report = Report.objects.get(slug="collections")
    crontab = report.periodic_task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_month, crontab.month_of_year, crontab.day_of_week) == cron
    assert str(crontab.timezone) == "America/New_York"
    assert report.schedule_rule == rule


def test_a_changed_picker_wins_over_changed_cron_fields(staff_client, source):
    """Both changed (without JavaScript nothing keeps them in step): the picker says what was meant."""
    form = report_form(source, schedule_kind="daily", schedule_time="06:15", day_of_week="oops")

    staff_client.post(reverse("admin:reporting_report_add"), form)

    crontab = Report.objects.get(slug="collections").periodic_task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week) == ("15", "6", "*")


def test_a_picked_kind_without_its_details_is_refused_in_words(staff_client, source):
    form = picker_only(source, schedule_kind="weekly", schedule_time="")

    response = staff_client.post(reverse("admin:reporting_report_add"), form)

    errors = response.context["adminform"].form.errors
    assert errors["schedule_time"] == ["Give the time it runs at."]
    assert errors["schedule_weekday"] == ["Choose the day of the week."]
    assert not Report.objects.exists()


def test_custom_needs_every_cron_field(staff_client, source):
    response = staff_client.post(
        reverse("admin:reporting_report_add"), report_form(source, schedule_kind="custom", hour="")
    )

    assert response.context["adminform"].form.errors["hour"] == ["This field is required."]


def test_switching_a_last_business_day_report_to_custom_drops_the_rule(staff_client, report):
    factories.schedule(
        report, minute="0", hour="7", day_of_month="26-31", day_of_week="mon-fri", rule="last_business_day"
    )
    form = report_form(report.data_source, name=report.name, slug=report.slug)  # no picker fields: custom

    response = staff_client.post(reverse("admin:reporting_report_change", args=[report.pk]), form)

    assert response.status_code == 302, response.context["adminform"].form.errors
    report.refresh_from_db()
    assert report.schedule_rule == ""


@pytest.mark.parametrize(
    ("cron", "rule", "shown"),
    [
        ({"day_of_month": "1-7", "day_of_week": "1"}, "", ("monthly_first_weekday", "07:00", "1", 1)),
        (
            {"day_of_month": "26-31", "day_of_week": "mon-fri"},
            "last_business_day",
            ("monthly_last_business_day", "07:00", "1", 1),
        ),
        ({"minute": "30", "hour": "6", "day_of_week": "3"}, "", ("weekly", "06:30", "3", 1)),
        ({"day_of_month": "15", "month_of_year": "1,4,7,10"}, "", ("quarterly", "07:00", "1", 15)),
        ({"minute": "*/15"}, "", ("custom", "07:00", "1", 1)),
    ],
    ids=["first monday", "last business day", "weekly", "quarterly", "custom"],
)
def test_a_stored_schedule_loads_as_the_kind_it_matches(staff_client, report, cron, rule, shown):
    factories.schedule(report, **{"minute": "0", "hour": "7", **cron}, rule=rule)

    response = staff_client.get(reverse("admin:reporting_report_change", args=[report.pk]))

    form = response.context["adminform"].form
    kind, at, weekday, day = shown
    assert form["schedule_kind"].value() == kind
    assert form["schedule_time"].value().strftime("%H:%M") == at
    assert (form["schedule_weekday"].value(), form["schedule_day"].value()) == (weekday, day)
    assert f'value="{kind}" selected' in response.content.decode()


def test_a_new_report_starts_as_daily_at_seven(staff_client):
    response = staff_client.get(reverse("admin:reporting_report_add"))

    assert response.context["adminform"].form["schedule_kind"].value() == "daily"


# --- the last business day's scheduled runs ---------------------------------------------------


@pytest.fixture
def month_end_report(report):
    factories.schedule(
        report, minute="0", hour="7", day_of_month="26-31", day_of_week="mon-fri", rule="last_business_day"
    )
    return report


def test_beat_firing_on_a_weekday_that_is_not_the_last_opens_no_run(month_end_report):
    fired_at = datetime(2027, 1, 28, 7, 0, tzinfo=LONDON)  # Thursday; Friday the 29th is the last weekday

    run, created = runs.open_scheduled_run(report_id=month_end_report.pk, started_at=fired_at)

    assert (run, created) == (None, False)
    assert not ReportRun.objects.exists()  # not a late run for December's slot either


def test_beat_firing_on_the_last_business_day_opens_its_run(month_end_report):
    fired_at = datetime(2027, 1, 29, 7, 0, tzinfo=LONDON)

    run, created = runs.open_scheduled_run(report_id=month_end_report.pk, started_at=fired_at)

    assert created
    assert run.scheduled_for == fired_at
    assert run.period_label == "28 January 2027"  # the report is daily: the last complete day before its slot


# --- the next-runs endpoint -----------------------------------------------------------------------


def next_runs(client, **query):
    return client.get(reverse("admin:reporting_report_next_runs"), query)


@time_machine.travel(START, tick=False)
def test_the_endpoint_gives_the_schedule_in_words_and_its_next_five_runs(staff_client):
    response = next_runs(
        staff_client,
        minute="0",
        hour="7",
        day_of_month="26-31",
        month_of_year="*",
        day_of_week="mon-fri",
        timezone="Europe/London",
        rule="last_business_day",
    )

    assert response.status_code == 200
    answer = response.json()
    assert answer["words"] == "At 07:00 on the last business day (Mon–Fri) of the month (Europe/London)"
    assert answer["timezone"] == "Europe/London"
    assert answer["next_runs"][:2] == [
        {"iso": "2026-12-31T07:00:00+00:00", "words": "Thu 31 Dec 2026, 07:00 GMT"},
        {"iso": "2027-01-29T07:00:00+00:00", "words": "Fri 29 Jan 2027, 07:00 GMT"},
    ]
    assert len(answer["next_runs"]) == 5


@time_machine.travel(START, tick=False)
def test_the_endpoint_gives_the_first_monday_in_words(staff_client):
    answer = next_runs(staff_client, minute="0", hour="7", day_of_month="1-7", day_of_week="1", timezone="UTC").json()

    assert "between day 1 and 7 of the month, only on Monday" in answer["words"]
    assert answer["next_runs"][0]["iso"] == "2026-12-07T07:00:00+00:00"


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"minute": "61"}, "Minute (0-59): '61' is not valid here"),
        ({"day_of_week": "funday"}, "Day of week (0-6, Sunday is 0, or mon-sun)"),
        ({"day_of_month": "31", "month_of_year": "2"}, "This schedule never fires"),
        ({"timezone": "Mars/Olympus_Mons"}, "Unknown timezone 'Mars/Olympus_Mons'."),
        ({"rule": "every_full_moon"}, "Unknown schedule rule 'every_full_moon'."),
        ({"hour": ""}, "Hour (0-23): '' is not valid here"),
        ({"minute": "1," * 200}, "minute is too long."),
    ],
    ids=["minute", "day of week", "never fires", "timezone", "rule", "empty hour", "too long"],
)
def test_the_endpoint_refuses_a_schedule_that_cannot_run_in_words(staff_client, query, words):
    response = next_runs(staff_client, **query)

    assert response.status_code == 400
    assert any(words in error for error in response.json()["errors"]), response.json()


def test_the_endpoint_is_refused_to_who_may_not_edit_reports(client, django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="password", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_report"))
    client.force_login(viewer)

    assert next_runs(client).status_code == 403


def the_page_as_shown(client, report) -> dict:
    """The report form posted as its page shows it (the picker included), as a browser without JavaScript does."""
    form = client.get(reverse("admin:reporting_report_change", args=[report.pk])).context["adminform"].form
    data = report_form(report.data_source, name=report.name, slug=report.slug)
    for name in ("timezone", *CRON_FIELDS, "schedule_kind", "schedule_weekday", "schedule_day"):
        data[name] = str(form[name].value())
    data["schedule_time"] = form["schedule_time"].value().strftime("%H:%M")
    return data


def test_cron_fields_edited_by_hand_win_over_a_picker_left_as_shown(staff_client, report):
    factories.schedule(report, minute="0", hour="7")  # daily at 07:00
    data = {**the_page_as_shown(staff_client, report), "hour": "8", "day_of_week": "mon,wed"}

    response = staff_client.post(reverse("admin:reporting_report_change", args=[report.pk]), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    crontab = Report.objects.get(pk=report.pk).periodic_task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week) == ("0", "8", "mon,wed")


def test_a_last_business_day_keeps_its_rule_when_only_its_time_is_typed_in_the_cron_fields(staff_client, report):
    factories.schedule(
        report, minute="0", hour="7", day_of_month="26-31", day_of_week="mon-fri", rule="last_business_day"
    )
    data = {**the_page_as_shown(staff_client, report), "minute": "30"}

    staff_client.post(reverse("admin:reporting_report_change", args=[report.pk]), data)

    report = Report.objects.get(pk=report.pk)
    assert (report.periodic_task.crontab.minute, report.schedule_rule) == ("30", "last_business_day")
