from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine

from reporting.periods import (
    DAILY,
    LAST_DAY,
    MONTHLY,
    NONE,
    QUARTERLY,
    WEEKLY,
    Period,
    PeriodOutOfRange,
    last_complete_period,
    period_containing,
    period_for_slot,
)

LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")


# --- period_containing ----------------------------------------------------------------


def test_it_makes_a_daily_period_of_the_day_itself():
    period = period_containing(DAILY, date(2026, 5, 14))

    assert (period.start, period.end) == (date(2026, 5, 14), date(2026, 5, 14))
    assert period.key == "2026-05-14..2026-05-14"
    assert period.label == "14 May 2026"


@pytest.mark.parametrize(
    "day",
    [date(2026, 5, 11), date(2026, 5, 13), date(2026, 5, 17)],
    ids=["monday", "wednesday", "sunday"],
)
def test_it_makes_weekly_periods_run_monday_to_sunday(day):
    period = period_containing(WEEKLY, day)

    assert (period.start, period.end) == (date(2026, 5, 11), date(2026, 5, 17))
    assert period.start.strftime("%A") == "Monday"
    assert period.end.strftime("%A") == "Sunday"
    assert period.label == "week of 11 May 2026"


def test_it_makes_a_week_that_spans_two_years():
    period = period_containing(WEEKLY, date(2027, 1, 1))

    assert (period.start, period.end) == (date(2026, 12, 28), date(2027, 1, 3))


@pytest.mark.parametrize(
    ("day", "last_day"),
    [
        (date(2026, 1, 15), date(2026, 1, 31)),
        (date(2026, 4, 30), date(2026, 4, 30)),
        (date(2028, 2, 1), date(2028, 2, 29)),
        (date(2027, 2, 28), date(2027, 2, 28)),
        (date(2026, 12, 31), date(2026, 12, 31)),
    ],
    ids=["31-day month", "30-day month", "february leap year", "february common year", "december"],
)
def test_it_ends_a_month_on_its_last_day(day, last_day):
    period = period_containing(MONTHLY, day)

    assert period.start == day.replace(day=1)
    assert period.end == last_day


def test_it_labels_and_keys_a_month():
    period = period_containing(MONTHLY, date(2028, 2, 10))

    assert period.label == "February 2028"
    assert period.key == "2028-02-01..2028-02-29"


@pytest.mark.parametrize(
    ("day", "start", "end", "label"),
    [
        (date(2026, 2, 14), date(2026, 1, 1), date(2026, 3, 31), "Q1 2026"),
        (date(2026, 4, 1), date(2026, 4, 1), date(2026, 6, 30), "Q2 2026"),
        (date(2026, 9, 30), date(2026, 7, 1), date(2026, 9, 30), "Q3 2026"),
        (date(2026, 12, 31), date(2026, 10, 1), date(2026, 12, 31), "Q4 2026"),
    ],
)
def test_it_makes_calendar_quarters(day, start, end, label):
    period = period_containing(QUARTERLY, day)

    assert (period.start, period.end, period.label) == (start, end, label)


@pytest.mark.parametrize(
    ("kind", "start", "end"),
    [
        (DAILY, date(9999, 12, 31), date(9999, 12, 31)),
        (MONTHLY, date(9999, 12, 1), date(9999, 12, 31)),
        (QUARTERLY, date(9999, 10, 1), date(9999, 12, 31)),
    ],
    ids=["daily", "monthly", "quarterly"],
)
def test_it_makes_the_last_periods_of_the_calendar(kind, start, end):
    period = period_containing(kind, date(9999, 12, 31))

    assert (period.start, period.end) == (start, end)


def test_it_refuses_a_week_that_would_end_after_the_calendar_in_words():
    assert period_containing(WEEKLY, LAST_DAY).end == date(9999, 12, 26)
    with pytest.raises(PeriodOutOfRange, match="This day is too far in the future"):
        period_containing(WEEKLY, date(9999, 12, 31))


def test_it_rejects_an_unknown_period_kind():
    with pytest.raises(ValueError, match="fortnightly"):
        period_containing("fortnightly", date(2026, 5, 14))


# --- period_for_slot ------------------------------------------------------------------


def test_it_reports_on_yesterday_for_a_daily_slot():
    period = period_for_slot(DAILY, datetime(2026, 5, 14, 7, 0, tzinfo=UTC), ZoneInfo("UTC"))

    assert (period.start, period.end) == (date(2026, 5, 13), date(2026, 5, 13))


def test_it_reports_on_the_previous_week_for_a_monday_slot():
    period = period_for_slot(WEEKLY, datetime(2026, 5, 18, 7, 0, tzinfo=UTC), ZoneInfo("UTC"))

    assert (period.start, period.end) == (date(2026, 5, 11), date(2026, 5, 17))


def test_it_reports_on_the_previous_week_for_a_midweek_slot():
    period = period_for_slot(WEEKLY, datetime(2026, 5, 20, 7, 0, tzinfo=UTC), ZoneInfo("UTC"))

    assert (period.start, period.end) == (date(2026, 5, 11), date(2026, 5, 17))


def test_it_reports_on_the_previous_month_for_a_slot_on_the_first():
    period = period_for_slot(MONTHLY, datetime(2027, 3, 1, 7, 0, tzinfo=UTC), ZoneInfo("UTC"))

    assert (period.start, period.end) == (date(2027, 2, 1), date(2027, 2, 28))
    assert period.label == "February 2027"


def test_it_reports_on_last_year_december_for_a_january_slot():
    period = period_for_slot(MONTHLY, datetime(2027, 1, 1, 7, 0, tzinfo=UTC), ZoneInfo("UTC"))

    assert (period.start, period.end) == (date(2026, 12, 1), date(2026, 12, 31))


def test_it_reports_on_the_previous_quarter():
    period = period_for_slot(QUARTERLY, datetime(2027, 1, 2, 7, 0, tzinfo=UTC), ZoneInfo("UTC"))

    assert (period.start, period.end, period.label) == (date(2026, 10, 1), date(2026, 12, 31), "Q4 2026")


def test_it_uses_the_local_day_in_london_during_summer_time():
    # 00:30 BST on 1 June is still 31 May in UTC: the report is for May all the same.
    slot = datetime(2026, 6, 1, 0, 30, tzinfo=LONDON)
    assert slot.astimezone(UTC).date() == date(2026, 5, 31)

    period = period_for_slot(MONTHLY, slot, LONDON)

    assert (period.start, period.end) == (date(2026, 5, 1), date(2026, 5, 31))
    assert period.label == "May 2026"


def test_it_uses_the_local_day_whatever_timezone_the_slot_is_given_in():
    slot_in_utc = datetime(2026, 5, 31, 23, 30, tzinfo=UTC)  # 00:30 BST on 1 June

    period = period_for_slot(DAILY, slot_in_utc, LONDON)

    assert (period.start, period.end) == (date(2026, 5, 31), date(2026, 5, 31))


def test_it_reports_on_the_previous_month_just_after_midnight_in_new_york():
    slot = datetime(2026, 7, 1, 0, 5, tzinfo=NEW_YORK)

    period = period_for_slot(MONTHLY, slot, NEW_YORK)

    assert (period.start, period.end) == (date(2026, 6, 1), date(2026, 6, 30))


def test_it_reports_on_the_month_before_when_new_york_is_a_day_behind_utc():
    # 23:30 EDT on 30 June is already 1 July in UTC; in New York June is not over yet.
    slot = datetime(2026, 7, 1, 3, 30, tzinfo=UTC)

    period = period_for_slot(MONTHLY, slot, NEW_YORK)

    assert (period.start, period.end) == (date(2026, 5, 1), date(2026, 5, 31))


def test_it_reports_on_the_previous_day_just_after_midnight_in_new_york_in_winter():
    slot = datetime(2026, 1, 15, 5, 1, tzinfo=UTC)  # 00:01 EST

    period = period_for_slot(DAILY, slot, NEW_YORK)

    assert period.start == period.end == date(2026, 1, 14)


def test_it_makes_a_snapshot_period_keyed_by_the_slot_instant():
    slot = datetime(2026, 6, 1, 0, 30, tzinfo=LONDON)

    period = period_for_slot(NONE, slot, LONDON)

    assert period.start == period.end == date(2026, 6, 1)
    assert period.at == slot
    assert period.key == "at:2026-05-31T23:30Z"
    assert period.label == "1 June 2026, 00:30 BST"


def test_it_keys_two_snapshots_on_the_same_day_apart():
    morning = period_for_slot(NONE, datetime(2026, 6, 1, 7, 0, tzinfo=UTC), ZoneInfo("UTC"))
    evening = period_for_slot(NONE, datetime(2026, 6, 1, 19, 0, tzinfo=UTC), ZoneInfo("UTC"))

    assert morning.key == "at:2026-06-01T07:00Z"
    assert evening.key == "at:2026-06-01T19:00Z"
    assert morning.key != evening.key


def test_it_keys_the_same_instant_alike_whatever_its_timezone():
    in_london = period_for_slot(NONE, datetime(2026, 6, 1, 8, 0, tzinfo=LONDON), LONDON)
    in_utc = period_for_slot(NONE, datetime(2026, 6, 1, 7, 0, tzinfo=UTC), LONDON)

    assert in_london.key == in_utc.key == "at:2026-06-01T07:00Z"


def test_it_keys_periods_of_other_kinds_by_their_days():
    assert Period(WEEKLY, date(2026, 5, 11), date(2026, 5, 17)).key == "2026-05-11..2026-05-17"


# --- last_complete_period -------------------------------------------------------------


def test_it_finds_the_last_complete_period_at_a_given_moment():
    moment = datetime(2026, 4, 1, 3, 0, tzinfo=UTC)  # 23:00 EDT on 31 March

    assert last_complete_period(QUARTERLY, NEW_YORK, moment) == Period(QUARTERLY, date(2025, 10, 1), date(2025, 12, 31))
    assert last_complete_period(QUARTERLY, LONDON, moment) == Period(QUARTERLY, date(2026, 1, 1), date(2026, 3, 31))


def test_it_finds_the_last_complete_period_now_by_default():
    with time_machine.travel(datetime(2026, 3, 1, 0, 30, tzinfo=UTC), tick=False):
        period = last_complete_period(MONTHLY, LONDON)

    assert (period.start, period.end) == (date(2026, 2, 1), date(2026, 2, 28))
