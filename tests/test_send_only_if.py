"""Send only if: a scheduled run whose data does not meet its report's condition is skipped, in words, not alerted."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.urls import reverse
from werkzeug import Response

from reporting import alerts, overview, parts, runs
from reporting.models import Report, ReportRun, RunPart
from reporting.pipeline import conditions
from reporting.services import archive as services_archive
from reporting.services import deadlines
from reporting.services import runs as services_runs
from tests import factories
from tests.test_per_recipient import split_report

pytestmark = pytest.mark.django_db
LONDON = ZoneInfo("Europe/London")
Status = ReportRun.Status
FIRST_SLOT = datetime(2026, 11, 21, 7, 0, 5, tzinfo=LONDON)  # reports on Friday 20 November


def positions(*market_values: float) -> dict:
    rows = [
        {"instrument": f"Position {number}", "market_value": value}
        for number, value in enumerate(market_values, start=1)
    ]
    return {"summary": {"total_value": sum(market_values)}, "data": {"positions": rows}}


class Api:
    """The data source's answer, which the test changes from one period to the next."""

    def __init__(self, httpserver, answer: dict):
        self.answer = answer
        httpserver.expect_request("/api/positions").respond_with_handler(self._respond)
        self.source = factories.data_source(httpserver.url_for("/api/"))

    def _respond(self, request) -> Response:
        return Response(json.dumps(self.answer), content_type="application/json")


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("olga", "olga@example.com", "pw", is_staff=True)


def scheduled_report(source, owner, **fields) -> Report:
    report = factories.report(source, owner=owner, **fields)
    factories.schedule(report, minute="0", hour="7")
    return report


def beat_fires(report: Report, day: int) -> ReportRun:
    """Beat fires the report's 07:00 slot on the `day`-th day after the first (each reports the day before)."""
    with time_machine.travel(FIRST_SLOT + timedelta(days=day), tick=False):
        services_runs.run_scheduled(report_id=report.pk, fired_at=None)
    return ReportRun.objects.filter(report=report).latest()


def subjects_received(smtp, address: str) -> list[str]:
    """The Subject of each email `address` received, in order."""
    return [message["Subject"] for message in smtp.messages_to(address)]


def test_only_if_the_data_changed_sends_skips_the_same_data_and_sends_it_again_once_it_changes(
    httpserver, use_smtp, owner
):
    api = Api(httpserver, positions(100, 200))
    report = scheduled_report(api.source, owner, send_only_if=Report.SendOnlyIf.CHANGED)

    first = beat_fires(report, 0)
    same = beat_fires(report, 1)
    api.answer = positions(100, 250)
    changed = beat_fires(report, 2)
    again = beat_fires(report, 3)

    assert [first.status, same.status, changed.status, again.status] == [
        Status.SENT,
        Status.SKIPPED,
        Status.SENT,
        Status.SKIPPED,
    ]
    assert (
        same.notes == f"Not sent: only if the data changed, and it is the same as run #{first.pk} sent on 21 Nov 2026."
    )
    assert again.notes == (
        f"Not sent: only if the data changed, and it is the same as run #{changed.pk} sent on 23 Nov 2026."
    )
    assert same.error == "" and not same.deliveries.exists() and not same.is_rendered
    assert same.rows_hash == first.rows_hash != changed.rows_hash == again.rows_hash
    assert subjects_received(use_smtp, "ann@example.com") == [
        "Portfolio — 20 November 2026",
        "Portfolio — 22 November 2026",
    ]
    assert len(httpserver.log) == 4  # every period was fetched, and archived
    assert ReportRun.objects.get(pk=same.pk).data_snapshot


def test_the_hash_is_of_the_rows_as_canonical_json_so_key_order_and_spacing_do_not_count():
    rows = [{"b": 1, "a": "é"}, {"c": [1, 2]}]
    reordered = json.loads('[ {"a": "é", "b": 1}, {"c": [1,2]} ]')

    digest = conditions.rows_hash(rows)

    assert digest == conditions.rows_hash(reordered)
    assert digest == hashlib.sha256('[{"a":"é","b":1},{"c":[1,2]}]'.encode()).hexdigest()
    assert digest != conditions.rows_hash([{"b": 2, "a": "é"}, {"c": [1, 2]}])


def test_a_threshold_on_a_total_sends_the_periods_above_it_and_skips_the_others(httpserver, use_smtp, owner):
    api = Api(httpserver, positions(40000, 20000.5))
    report = scheduled_report(
        api.source,
        owner,
        send_only_if=Report.SendOnlyIf.THRESHOLD,
        threshold_figure_is=Report.FigureIs.TOTAL,
        threshold_figure="market_value",
        threshold_operator=Report.Operator.ABOVE,
        threshold_value=Decimal("50000"),
    )

    above = beat_fires(report, 0)
    api.answer = positions(15000.25, 987.65)
    below = beat_fires(report, 1)
    api.answer = positions(50000)
    at = beat_fires(report, 2)
    api.answer = positions(50000, 0.01)
    above_again = beat_fires(report, 3)

    assert [above.status, below.status, at.status, above_again.status] == [
        Status.SENT,
        Status.SKIPPED,
        Status.SKIPPED,
        Status.SENT,
    ]
    assert below.notes == "Not sent: only if the total of market_value is above 50,000, and it is 15,987.9."
    assert at.notes == "Not sent: only if the total of market_value is above 50,000, and it is 50,000."
    assert subjects_received(use_smtp, "bob@example.com") == [
        "Portfolio — 20 November 2026",
        "Portfolio — 23 November 2026",
    ]


def test_a_threshold_on_a_value_in_the_response_sends_only_while_it_is_below(httpserver, use_smtp, owner):
    api = Api(httpserver, {"meta": {"exposure": "0.35"}, "data": {"positions": [{"instrument": "Acme"}]}})
    report = scheduled_report(
        api.source,
        owner,
        send_only_if=Report.SendOnlyIf.THRESHOLD,
        threshold_figure="meta.exposure",
        threshold_operator=Report.Operator.BELOW,
        threshold_value=Decimal("0.5"),
    )

    below = beat_fires(report, 0)
    api.answer = {"meta": {"exposure": 0.72}, "data": {"positions": [{"instrument": "Acme"}]}}
    above = beat_fires(report, 1)

    assert (below.status, above.status) == (Status.SENT, Status.SKIPPED)
    assert above.notes == "Not sent: only if meta.exposure is below 0.5, and it is 0.72."
    assert len(use_smtp.messages) == 2  # the first period, to ann@ and bob@


@pytest.mark.parametrize(
    ("operator", "sent_at_the_threshold"),
    [("above", False), ("at_least", True), ("below", False), ("at_most", True)],
)
def test_each_operator_at_and_around_its_threshold(operator, sent_at_the_threshold):
    condition = conditions.Condition(
        kind=conditions.THRESHOLD, figure="total", operator=operator, threshold=Decimal("100")
    )

    def sent(total):
        return not conditions.skip_reason(condition, rows=[], data={"total": total})

    assert sent(100) is sent_at_the_threshold
    assert sent(100.01) is (operator in ("above", "at_least"))
    assert sent(99.99) is (operator in ("below", "at_most"))


def test_no_rows_is_skipped_not_held_nor_failed_and_its_owner_is_not_alerted(httpserver, use_smtp, owner):
    api = Api(httpserver, positions(1, 2))
    report = scheduled_report(api.source, owner, send_only_if=Report.SendOnlyIf.HAS_ROWS)
    assert report.check_min_rows == 1  # the minimum-rows check does not hold an empty answer: it is skipped

    sent = beat_fires(report, 0)
    api.answer = positions()
    empty = beat_fires(report, 1)
    with time_machine.travel(FIRST_SLOT + timedelta(days=1, minutes=5), tick=False):
        alerted = alerts.send_failure_alerts()
        [health] = overview.report_health(list(overview.enabled_reports()))

    assert (sent.status, empty.status) == (Status.SENT, Status.SKIPPED)
    assert empty.notes == "Not sent: only if there are rows, and the data has none."
    assert empty.row_count == 0 and empty.finished_at is not None and empty.deadline_at is None
    assert alerted == 0 and not use_smtp.messages_to("olga@example.com")
    assert health.last_success_id == sent.pk  # a skipped run is no success…
    assert (health.consecutive_failures, health.held, health.missed, health.late) == (0, 0, 0, False)  # …nor failure
    assert not health.needs_attention


def test_rows_that_fail_a_data_check_are_held_before_the_condition_judges_them(httpserver, owner):
    api = Api(httpserver, {"data": {"positions": [{"instrument": "Acme", "market_value": None}]}})
    report = scheduled_report(
        api.source, owner, send_only_if=Report.SendOnlyIf.CHANGED, check_required_fields="market_value"
    )

    run = beat_fires(report, 0)

    assert run.status == Status.HELD
    assert run.error == "1 of 1 row lacks 'market_value' (first: row 1)."


def test_a_figure_missing_from_the_data_or_not_a_number_holds_the_run_in_words(httpserver, owner):
    api = Api(httpserver, positions(10))
    report = scheduled_report(
        api.source,
        owner,
        send_only_if=Report.SendOnlyIf.THRESHOLD,
        threshold_figure="summary.net_flows",
        threshold_value=Decimal("0"),
    )

    missing = beat_fires(report, 0)
    api.answer = {"summary": {"net_flows": "n/a"}, "data": {"positions": [{"instrument": "Acme"}]}}
    not_a_number = beat_fires(report, 1)

    assert (missing.status, not_a_number.status) == (Status.HELD, Status.HELD)
    assert missing.error == (
        "Send only if: the figure summary.net_flows is missing from the data, so it cannot be compared with the "
        "threshold."
    )
    assert not_a_number.error == (
        "Send only if: the figure summary.net_flows is 'n/a', not a number, so it cannot be compared with the "
        "threshold."
    )


def test_run_now_and_a_re_run_of_a_skipped_run_send_whatever_the_condition(httpserver, use_smtp, owner):
    api = Api(httpserver, positions(5))
    report = scheduled_report(api.source, owner, send_only_if=Report.SendOnlyIf.CHANGED)
    first = beat_fires(report, 0)
    skipped = beat_fires(report, 1)
    use_smtp.messages.clear()

    [rerun] = services_runs.rerun(run_ids=[skipped.pk], actor=owner)
    rerun = runs.execute_run(run_id=rerun.pk)

    assert (first.status, skipped.status, rerun.status) == (Status.SENT, Status.SKIPPED, Status.SENT)
    assert rerun.trigger == ReportRun.Trigger.MANUAL and rerun.rows_hash == first.rows_hash
    assert sorted(address for message in use_smtp.messages for address in use_smtp.recipients_of(message)) == [
        "ann@example.com",
        "bob@example.com",
    ]


def test_a_skipped_run_is_at_an_end_the_deadline_sweep_and_resend_leave_it_alone(httpserver, owner):
    api = Api(httpserver, positions())
    report = scheduled_report(api.source, owner, send_only_if=Report.SendOnlyIf.HAS_ROWS)
    skipped = beat_fires(report, 0)

    swept = deadlines.enforce_run_deadlines(now=FIRST_SLOT + timedelta(days=2))

    assert skipped.pk not in swept.published_again + swept.failed
    assert skipped.status in ReportRun.FINISHED and skipped.status not in ReportRun.WORKING
    assert ReportRun.objects.get(pk=skipped.pk).status == Status.SKIPPED
    with pytest.raises(ValidationError, match="it was skipped, as the report's 'Send only if' says: re-run it"):
        services_archive.plan_resend(run_ids=[skipped.pk], addresses=None)


def test_the_archive_lists_the_skipped_run_with_its_reason(httpserver, owner, staff_client):
    api = Api(httpserver, positions(7))
    report = scheduled_report(api.source, owner, send_only_if=Report.SendOnlyIf.CHANGED)
    first = beat_fires(report, 0)
    skipped = beat_fires(report, 1)

    listed = staff_client.get(reverse("admin:reporting_reportrun_changelist"), {"status__exact": "skipped"})
    page = staff_client.get(reverse("admin:reporting_reportrun_change", args=[skipped.pk])).content.decode()
    reports = staff_client.get(reverse("admin:reporting_report_changelist")).content.decode()

    assert list(listed.context["cl"].result_list) == [skipped]
    assert "Portfolio · 21 November 2026 · Skipped (condition not met)" in listed.content.decode()
    assert "Skipped (condition not met)" in page
    assert f"Not sent: only if the data changed, and it is the same as run #{first.pk} sent on 21 Nov 2026." in page
    assert 'class="run-mark run-skipped" title="Skipped (condition not met)"' in reports
    assert "Re-run</button>" in page  # what sends it after all


def test_a_split_report_is_judged_on_the_whole_answer_before_its_rows_go_to_anyone(
    httpserver, use_smtp, owner, statement_template
):
    rows = [{"client_id": "C001", "market_value": 100}, {"client_id": "C002", "market_value": 50}]
    api = Api(httpserver, {"positions": rows})
    report = split_report(
        api.source,
        statement_template,
        owner=owner,
        send_only_if=Report.SendOnlyIf.THRESHOLD,
        threshold_figure_is=Report.FigureIs.TOTAL,
        threshold_figure="market_value",
        threshold_operator=Report.Operator.AT_LEAST,
        threshold_value=Decimal("200"),
    )
    factories.schedule(report, minute="0", hour="7")

    run = beat_fires(report, 0)

    assert run.status == Status.SKIPPED
    reason = "Not sent: only if the total of market_value is at least 200, and it is 150."
    assert run.notes == reason
    assert set(run.parts.values_list("status", "error")) == {(RunPart.Status.SKIPPED, reason)}
    assert run.parts.count() == 3 and not parts.open_part_ids(run.pk)
    assert not use_smtp.messages and not run.deliveries.exists()


def test_the_form_refuses_a_condition_it_could_not_judge_in_words(source):
    report = factories.report(source, send_only_if=Report.SendOnlyIf.THRESHOLD)
    with pytest.raises(ValidationError) as refused:
        report.full_clean()
    assert refused.value.message_dict["threshold_figure"] == [
        "Give the figure: a dotted path in the response (e.g. summary.total_value), or the field of each row to "
        "total (e.g. market_value)."
    ]
    assert refused.value.message_dict["threshold_value"] == [
        "Give the threshold the figure is compared with, e.g. 1000000."
    ]

    report.send_only_if = Report.SendOnlyIf.CHANGED
    report.audience, report.per_recipient_data = Report.Audience.EACH, Report.PerRecipientData.FETCH
    report.path = "clients/{{ recipient.client_id }}"
    with pytest.raises(ValidationError) as refused:
        report.full_clean()
    assert refused.value.message_dict["send_only_if"][0].startswith(
        "A fetch per recipient has no one answer to judge before sending"
    )


def test_the_admin_form_sets_a_threshold_and_shows_what_is_missing(staff_client, source):
    from tests.test_admin import report_form

    url = reverse("admin:reporting_report_add")
    missing = staff_client.post(url, report_form(source, send_only_if="threshold", threshold_figure_is="total"))
    saved = staff_client.post(
        url,
        report_form(
            source,
            send_only_if="threshold",
            threshold_figure_is="total",
            threshold_figure="market_value",
            threshold_operator="at_most",
            threshold_value="-2500.50",
        ),
    )

    assert missing.status_code == 200
    errors = missing.context["adminform"].form.errors
    assert errors["threshold_value"] == ["Give the threshold the figure is compared with, e.g. 1000000."]
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    report = Report.objects.get(slug="collections")
    assert report.condition == conditions.Condition(
        kind="threshold", figure="market_value", figure_is="total", operator="at_most", threshold=Decimal("-2500.5")
    )
    assert conditions.in_words(report.condition) == "only if the total of market_value is at most -2,500.5"


def test_preview_says_a_scheduled_run_of_the_data_would_be_skipped_and_why(httpserver, owner, staff_client):
    api = Api(httpserver, positions(3))
    report = scheduled_report(api.source, owner, send_only_if=Report.SendOnlyIf.CHANGED, from_name="Finance team")
    first = beat_fires(report, 0)
    url = reverse("admin:reporting_report_preview", args=[report.pk])

    same = staff_client.get(url, {"period_day": "2026-11-20"})
    api.answer = positions(4)
    changed = staff_client.get(url, {"period_day": "2026-11-20"})

    reason = f"Not sent: only if the data changed, and it is the same as run #{first.pk} sent on 21 Nov 2026."
    assert same.context["preview"].skipped == reason
    assert "would be skipped" in same.content.decode() and reason in same.content.decode()
    assert changed.context["preview"].skipped == "" and "would be skipped" not in changed.content.decode()
    assert changed.context["preview"].sender == "Finance team <reports@localhost>"
    assert not ReportRun.objects.exclude(pk=first.pk).exists()  # a preview archives nothing
