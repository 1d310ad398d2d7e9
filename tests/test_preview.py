"""The staff experience in the admin: preview with live data, a run's live progress, next runs in two timezones."""

import base64
import copy
import json
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest
import time_machine
from django.core import mail
from django.urls import reverse

from reporting import preview, runs
from reporting.models import Delivery, Report, ReportRun
from tests import factories

CHARTS = [
    {"kind": "bar", "x": "asset_class", "y": "market_value", "title": "Allocation"},
    {"kind": "line", "x": "date", "y": "value", "title": "Portfolio value", "rows": "data.daily"},
]
DAILY = [{"date": f"2026-11-{day:02d}", "value": 1_000_000 + day * 1000} for day in range(1, 21)]

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _on_21_november(request):
    """The last complete day is 20 November (the next-runs test sets its own clock)."""
    if "local_time" in request.node.name or "timezone" in request.node.name:
        yield
        return
    with time_machine.travel(datetime(2026, 11, 21, 8, 0, tzinfo=UTC), tick=True):
        yield


@pytest.fixture
def charted_report(httpserver):
    # A copy: factories.POSITIONS is shared by every test of the process (adding a field to its
    # rows here changed what other tests' reports fetched).
    payload = {"data": {**copy.deepcopy(factories.POSITIONS["data"]), "daily": DAILY}}
    for position in payload["data"]["positions"]:
        position.setdefault("asset_class", "Bond" if "%" in position["instrument"] else "Equity")
    httpserver.expect_request("/api/positions").respond_with_json(payload)
    source = factories.data_source(httpserver.url_for("/api/"))
    return factories.report(source, charts=CHARTS, attach_xlsx=True)


def test_a_preview_renders_the_email_with_live_data_and_sends_and_keeps_nothing(admin_client, charted_report):
    response = admin_client.get(reverse("admin:reporting_report_preview", args=[charted_report.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert "Portfolio — 20 November 2026" in page  # the subject, for the last complete day
    assert 'sandbox=""' in page and "srcdoc=" in page and "data:image/png;base64," in page
    assert "Acme Corp" in page  # the table, inside the frame's (escaped) HTML
    assert "portfolio_2026-11-20.csv" in page and "portfolio_2026-11-20.xlsx" in page
    assert "chart-1.png" in page and "(a chart inside the email)" in page
    assert "Allocation — 20 November 2026; Portfolio value — 20 November 2026" in page
    assert not ReportRun.objects.exists() and not Delivery.objects.exists()
    assert mail.outbox == []


def test_a_preview_for_a_chosen_period_fetches_that_period(admin_client, charted_report):
    url = reverse("admin:reporting_report_preview", args=[charted_report.pk])

    page = admin_client.get(url, {"period_day": "2026-11-03"}).content.decode()

    assert "3 November 2026" in page


def test_the_preview_service_gives_its_parts_as_plain_values(charted_report):
    result = preview.preview_report(report_id=charted_report.pk, period_day=None)

    assert result.subject == "Portfolio — 20 November 2026"
    assert result.row_count == 3 and result.checks_failed == []
    assert [(f.filename, f.inline) for f in result.files] == [
        ("portfolio_2026-11-20.csv", False),
        ("portfolio_2026-11-20.xlsx", False),
        ("chart-1.png", True),
        ("chart-2.png", True),
    ]
    png = result.html.split("data:image/png;base64,", 1)[1].split('"', 1)[0]
    assert base64.b64decode(png).startswith(b"\x89PNG")
    assert '"cid:' not in result.html  # every image inline (the frame's policy names cid: too)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"status": 503}, "The data source is unavailable right now (HTTP 503"),
        ({"json": {"data": {"positions": [{"name": "no asset class"}], "daily": DAILY}}}, "Chart 1 cannot be drawn"),
    ],
)
def test_a_preview_that_fails_says_why_in_words_on_the_page(admin_client, httpserver, answer, message):
    if "json" in answer:
        httpserver.expect_request("/api/positions").respond_with_json(answer["json"])
    else:
        httpserver.expect_request("/api/positions").respond_with_data("busy", status=answer["status"])
    report = factories.report(factories.data_source(httpserver.url_for("/api/")), charts=CHARTS)

    page = admin_client.get(reverse("admin:reporting_report_preview", args=[report.pk])).content.decode()

    assert 'id="preview-error"' in page and message in page
    assert not ReportRun.objects.exists()


def test_a_preview_tells_when_the_data_would_be_held(admin_client, httpserver):
    httpserver.expect_request("/api/positions").respond_with_json({"data": {"positions": []}})
    report = factories.report(factories.data_source(httpserver.url_for("/api/")))

    page = admin_client.get(reverse("admin:reporting_report_preview", args=[report.pk])).content.decode()

    assert "a run would be held, not sent" in page and "The data has 0 rows" in page


def test_only_editors_and_senders_may_preview(client, charted_report):
    url = reverse("admin:reporting_report_preview", args=[charted_report.pk])
    client.force_login(factories.staff_user("viewer", "view_report"))
    assert client.get(url).status_code == 403
    client.force_login(factories.staff_user("sender", "view_report", "run_report"))
    assert client.get(url).status_code == 200


def test_the_report_page_offers_a_preview_button(admin_client, charted_report):
    page = admin_client.get(reverse("admin:reporting_report_change", args=[charted_report.pk])).content.decode()

    assert reverse("admin:reporting_report_preview", args=[charted_report.pk]) in page


def test_a_bad_chart_definition_is_refused_on_the_form_in_words(admin_client, charted_report):
    from tests.test_admin import report_form

    form = report_form(charted_report.data_source, charts=json.dumps([{"kind": "pie", "x": "a", "y": "b"}]))
    response = admin_client.post(reverse("admin:reporting_report_add"), form)

    assert "Unknown chart kind &#x27;pie&#x27;: use &#x27;line&#x27; or &#x27;bar&#x27;." in response.content.decode()
    assert Report.objects.count() == 1


# --- a run's progress -----------------------------------------------------------------------


def test_a_working_runs_page_follows_its_progress(admin_client, report):
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    ReportRun.objects.filter(pk=run.pk).update(status=ReportRun.Status.SENDING)
    Delivery.objects.create(run=run, address="ann@example.com", status=Delivery.Status.SENT)
    Delivery.objects.create(run=run, address="bob@example.com", status=Delivery.Status.QUEUED)

    page = admin_client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()
    progress = admin_client.get(reverse("admin:reporting_reportrun_progress", args=[run.pk])).json()

    assert 'id="run-progress"' in page and "reporting/run_progress.js" in page
    assert progress["step"] == "sending" and progress["finished"] is False
    assert [(d["address"], d["status"]) for d in progress["deliveries"]] == [
        ("ann@example.com", "sent"),
        ("bob@example.com", "queued"),
    ]


def test_a_run_waiting_to_retry_shows_as_waiting_before_the_fetch(admin_client, report):
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    ReportRun.objects.filter(pk=run.pk).update(status=ReportRun.Status.RETRYING, error="Will retry: HTTP 503")

    progress = admin_client.get(reverse("admin:reporting_reportrun_progress", args=[run.pk])).json()

    assert (progress["step"], progress["status_label"], progress["finished"]) == ("queued", "Waiting to retry", False)


def test_a_finished_runs_progress_says_done_and_its_page_does_not_poll(admin_client, report):
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)

    progress = admin_client.get(reverse("admin:reporting_reportrun_progress", args=[run.pk])).json()
    page = admin_client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()

    assert progress == {**progress, "status": "sent", "step": "done", "finished": True}
    assert 'id="run-progress"' not in page


def test_progress_needs_the_view_permission(client, report):
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    client.force_login(factories.staff_user("nobody"))

    assert client.get(reverse("admin:reporting_reportrun_progress", args=[run.pk])).status_code == 403


# --- next runs in the report's timezone and the viewer's -------------------------------------


@time_machine.travel(datetime(2026, 11, 24, 9, 0, tzinfo=UTC), tick=False)
def test_next_runs_are_marked_up_for_the_viewers_own_timezone(admin_client, report):
    Report.objects.filter(pk=report.pk).update(timezone="America/New_York")
    report.refresh_from_db()
    factories.schedule(report, minute="0", hour="7")

    listing = admin_client.get(reverse("admin:reporting_report_changelist")).content.decode()
    page = admin_client.get(reverse("admin:reporting_report_change", args=[report.pk])).content.decode()

    first = '<time class="local-time" datetime="2026-11-24T07:00:00-05:00" data-zone="America/New_York">'
    assert first + "Tue 24 Nov 2026, 07:00 EST</time>" in listing
    assert "reporting/local_times.js" in listing
    assert page.count('class="local-time"') == 5
    assert '<time class="local-time" datetime="2026-11-28T07:00:00-05:00"' in page


# --- what the report's data can do in the page: nothing ---------------------------------------

SCRIPT_IN_NAME = '<script>alert("name")</script>'
SCRIPT_IN_DATA = "<svg onload=x()>"  # short enough for the text part's 16-character cells


class _FrameAndText(HTMLParser):
    """The preview frame's srcdoc and the text part, as a browser reads them from the page."""

    def __init__(self):
        super().__init__()
        self.srcdoc = None
        self.text = ""
        self._in_text = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "iframe":
            self.srcdoc = attributes.get("srcdoc")
        self._in_text = self._in_text or attributes.get("id") == "preview-text"

    def handle_endtag(self, tag):
        self._in_text = self._in_text and tag != "pre"

    def handle_data(self, data):
        if self._in_text:
            self.text += data


@pytest.fixture
def report_with_script(httpserver):
    """A report without charts whose name and API answer carry script."""
    positions = [{"instrument": SCRIPT_IN_DATA, "quantity": 1, "market_value": 10.0}]
    httpserver.expect_request("/api/positions").respond_with_json({"data": {"positions": positions}})
    return factories.report(factories.data_source(httpserver.url_for("/api/")), name=SCRIPT_IN_NAME)


def test_script_in_a_report_name_or_the_data_is_shown_as_text_in_the_previews_text_part(
    admin_client, report_with_script
):
    response = admin_client.get(reverse("admin:reporting_report_preview", args=[report_with_script.pk]))

    page = response.content
    assert SCRIPT_IN_NAME.encode() not in page and SCRIPT_IN_DATA.encode() not in page
    assert b"&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;" in page
    parsed = _FrameAndText()
    parsed.feed(page.decode())
    assert SCRIPT_IN_NAME in parsed.text and SCRIPT_IN_DATA in parsed.text  # shown, as text


def test_the_preview_frame_holds_the_whole_email_escaped_with_the_archives_policy(admin_client, report_with_script):
    response = admin_client.get(reverse("admin:reporting_report_preview", args=[report_with_script.pk]))

    parsed = _FrameAndText()
    parsed.feed(response.content.decode())
    frame = parsed.srcdoc
    assert frame is not None and frame.rstrip().endswith("</html>")  # the whole email, not cut at its first quote
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data: cid:; ' in frame
    assert "&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;" in frame  # the email's own escaping
    assert "&lt;svg onload=x()&gt;" in frame
    assert "<script" not in frame and "<svg" not in frame
    assert b'sandbox=""' in response.content
