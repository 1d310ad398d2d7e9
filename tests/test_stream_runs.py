"""A large answer's run, its rows streamed: the same email, files and archive as the whole answer gives.

Each run here is made twice from the same answer on a real HTTP server: once parsed whole
(REPORTING_STREAM_ABOVE_BYTES above its size), once streamed (0: every answer streams). What
staff and recipients see must not tell them apart. Then what only streaming meets: a template
that would hold every row, an XLSX over Excel's rows, the memory a run takes.
"""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from datetime import date

import pytest
from django.core import mail
from openpyxl import load_workbook

from reporting import runs, stage_inputs
from reporting.models import DataSource, ReportRun
from reporting.pipeline import render, rowstore, xlsx
from reporting.preview import preview_draft
from reporting.services import runs as run_services
from tests import factories
from tests.conftest import add_templates

pytestmark = pytest.mark.django_db
DAY = date(2026, 11, 20)
WHOLE, STREAMED = 1024 * 1024 * 1024, 0
_GENERATED = re.compile(r"Generated \d+ \w+ \d{4}, \d\d:\d\d \w+")
TOKEN = "s3cr3t-T0KEN/with+slash"
ROWS = [
    {
        "ticker": f"T{n:04}",
        "asset_class": ["Equity", "Bond", None, "equity"][n % 4],
        "market_value": [15234.5, "4020.10", None, -12, 0.1 + 0.2][n % 5],
        "ccy": "EUR",
        "name": ["Zoë & Co", '=HYPERLINK("x")', 'Comma, "quoted"', "中文", "-1250.50"][n % 5],
        "as_of": "2026-10-31",
        "extra": {"nested": [n]} if n % 7 == 0 else None,
    }
    for n in range(1_500)
]
ANSWER = {"meta": {"as_of": "2026-10-31", "nav": 28154.6, "client": "Archer Ltd"}, "data": {"positions": ROWS}}
LAYOUT = {
    "columns": [
        {"field": "ticker", "label": "Instrument"},
        {"field": "asset_class", "label": "Class"},
        {"field": "market_value", "label": "Value", "format": "currency", "currency": "EUR", "total": True},
        {"field": "name", "label": "Name"},
        {"field": "as_of", "label": "As of", "format": "date"},
    ],
    "sort": [{"field": "market_value", "descending": True}, {"field": "ticker", "descending": False}],
    "subtotal_by": "asset_class",
    "headline": [
        {"label": "Net asset value", "path": "meta.nav", "format": "currency", "currency": "EUR"},
        {"label": "Total", "total_of": "market_value", "format": "currency", "currency": "EUR"},
        {"label": "Positions", "row_count": True},
    ],
    "intro": "Dear {{ data.meta.client }}, {{ rows|length }} positions; the first is {{ rows.0.ticker }}.",
}


@pytest.fixture
def api(httpserver):
    httpserver.expect_request("/api/positions").respond_with_json(ANSWER)
    return factories.data_source(httpserver.url_for("/api/"))


def run_with(settings, report, stream_above: int) -> ReportRun:
    settings.REPORTING = {**settings.REPORTING, "STREAM_ABOVE_BYTES": stream_above}
    mail.outbox.clear()
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=DAY, requested_by_id=None).pk)
    run.refresh_from_db()
    return run


def seen(run: ReportRun) -> dict:
    """What staff and recipients see of a run: its record, its files (an XLSX as its cells), its emails.

    Less the minute each was made in ("Generated 20 Nov 2026, 14:53 GMT"): the runs are a minute apart at times.
    """
    files = {}
    for attachment in run.attachments.order_by("filename"):
        content = attachment.file.read()
        if attachment.mimetype == xlsx.MIMETYPE:
            sheet = load_workbook(io.BytesIO(content)).active
            files[attachment.filename] = [[cell.value for cell in row] for row in sheet.iter_rows()]
        else:
            files[attachment.filename] = content
    return {
        "status": run.status,
        "error": run.error,
        "row_count": run.row_count,
        "rows_hash": run.rows_hash,
        "subject": run.subject,
        "html": _GENERATED.sub("", run.body_html),
        "text": _GENERATED.sub("", run.body_text),
        "files": files,
        "emails": sorted((message.to[0], message.subject, _GENERATED.sub("", message.body)) for message in mail.outbox),
        "snapshot": json.loads(run.data_snapshot.read()) if run.data_snapshot else None,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"attach_xlsx": True, "charts": [{"kind": "bar", "x": "asset_class", "y": "market_value"}]},
        {"attach_xlsx": True, "layout": LAYOUT, "template": "reports/table.html", "email_max_rows": 40},
        {"send_only_if": "changed"},
        {"check_min_rows": 2_000},
        {"check_required_fields": "asset_class"},
    ],
    ids=["table, xlsx and chart", "designed, sorted, subtotals", "send only if changed", "held: too few rows",
         "held: a field missing"],
)  # fmt: skip
def test_a_streamed_run_shows_what_the_whole_answer_shows(api, settings, fields):
    report = factories.report(api, **fields)

    whole = seen(run_with(settings, report, WHOLE))
    streamed = seen(run_with(settings, report, STREAMED))

    assert streamed == whole
    assert whole["row_count"] == 1_500
    assert whole["status"] in (ReportRun.Status.SENT, ReportRun.Status.HELD)
    if whole["status"] == ReportRun.Status.SENT:
        assert {address for address, _subject, _body in whole["emails"]} == {"ann@example.com", "bob@example.com"}
        assert len(whole["files"]) >= 1


def test_the_designed_email_reads_the_streamed_rows_in_the_layouts_order(api, settings):
    report = factories.report(api, layout=LAYOUT, attach_xlsx=True, email_max_rows=3)

    run = run_with(settings, report, STREAMED)

    assert run.status == ReportRun.Status.SENT
    assert "Dear Archer Ltd, 1500 positions; the first is T0000." in run.body_text
    csv_text = run.attachments.get(mimetype="text/csv").file.read().decode("utf-8-sig")
    lines = csv_text.splitlines()
    assert len(lines) == 1 + 1_500
    assert lines[1].startswith("T0005,Bond,15234.50,")  # Bond first (the subtotal order), its largest value first


def test_a_held_run_sent_anyway_renders_its_streamed_snapshot(
    api, settings, eager_celery, staff, django_capture_on_commit_callbacks
):
    report = factories.report(api, check_min_rows=2_000)
    held = run_with(settings, report, STREAMED)
    assert held.status == ReportRun.Status.HELD

    with django_capture_on_commit_callbacks(execute=True):
        assert run_services.send_anyway(run_id=held.pk, actor=staff)

    held.refresh_from_db()
    assert held.status == ReportRun.Status.SENT
    assert sorted(message.to[0] for message in mail.outbox) == ["ann@example.com", "bob@example.com"]
    csv_text = held.attachments.get(mimetype="text/csv").file.read().decode("utf-8-sig")
    assert len(csv_text.splitlines()) == 1 + 1_500


def test_fields_dropped_and_the_secret_leave_the_streamed_answer_before_it_is_archived(
    httpserver, settings, monkeypatch
):
    monkeypatch.setenv("REPORTING_SECRET_PORTFOLIO_API", TOKEN)
    rows = [{"ticker": f"T{n}", "internal_id": n, "note": f"signed {TOKEN}" if n == 700 else "ok"} for n in range(900)]
    answer = {"meta": {"session": {"token": "abc"}, "echo": TOKEN}, "data": {"positions": rows}}
    httpserver.expect_request("/api/positions").respond_with_json(answer)
    source = factories.data_source(
        httpserver.url_for("/api/"),
        auth_scheme=DataSource.AuthScheme.BEARER,
        secret_env_var="REPORTING_SECRET_PORTFOLIO_API",
        drop_fields="internal_id\nmeta.session.token\ndata.positions.missing",
    )
    report = factories.report(source)

    whole = seen(run_with(settings, report, WHOLE))
    streamed_run = run_with(settings, report, STREAMED)
    streamed = seen(streamed_run)

    assert streamed == whole
    archived = streamed_run.data_snapshot.open("rb").read().decode()
    assert TOKEN not in archived and "internal_id" not in archived and '"token"' not in archived
    assert streamed["snapshot"]["data"]["positions"][700]["note"] == "signed [secret]"
    assert streamed["snapshot"]["meta"] == {"session": {}, "echo": "[secret]"}
    [csv_file] = [content for name, content in streamed["files"].items() if name.endswith(".csv")]
    assert TOKEN not in csv_file.decode("utf-8-sig") and "signed [secret]" in csv_file.decode("utf-8-sig")
    assert "internal_id, meta.session.token." in streamed_run.notes
    assert "contained the data source's own secret" in streamed_run.notes


def test_an_answer_without_anything_to_clean_is_archived_byte_for_byte(httpserver, settings):
    text = b'{"data": {"positions": [ {"a": 1} ,\n {"a": 2}]}, "z": "\\u00e9"}'
    httpserver.expect_request("/api/positions").respond_with_data(text, content_type="application/json")
    report = factories.report(factories.data_source(httpserver.url_for("/api/"), drop_fields="not_there"))

    run = run_with(settings, report, STREAMED)

    assert run.status == ReportRun.Status.SENT and run.row_count == 2
    assert run.data_snapshot.open("rb").read() == text


@pytest.mark.parametrize(
    "template",
    [
        "{% for row in rows reversed %}{{ row.ticker }}{% endfor %}",
        "{% for row in rows|dictsort:'ticker' %}{{ row.ticker }}{% endfor %}",
        "{% regroup rows by asset_class as groups %}{{ groups|length }}",
    ],
    ids=["reversed", "dictsort", "regroup"],
)
def test_a_template_that_would_hold_every_streamed_row_fails_the_run_in_words(api, settings, tmp_path, template):
    add_templates(settings, tmp_path / "templates", {"reports/holding.html": template})
    report = factories.report(api, template="reports/holding.html")

    whole = run_with(settings, report, WHOLE)
    streamed = run_with(settings, report, STREAMED)

    assert whole.status == ReportRun.Status.SENT
    assert streamed.status == ReportRun.Status.FAILED
    assert "too many to hold at once: a template can read them in order" in streamed.error
    assert streamed.deliveries.count() == 0 and not mail.outbox


def test_a_template_reads_streamed_rows_in_order(api, settings, tmp_path):
    template = (
        "{{ rows|length }} {{ rows.1.ticker }} {{ rows|last|default:'' }}"
        "{% for row in rows|slice:':3' %} {{ row.ticker }}{% endfor %}"
    )
    add_templates(settings, tmp_path / "templates", {"reports/ordered.html": template})
    report = factories.report(api, template="reports/ordered.html")

    whole = run_with(settings, report, WHOLE)
    streamed = run_with(settings, report, STREAMED)

    assert streamed.status == ReportRun.Status.SENT
    assert streamed.body_html == whole.body_html
    assert streamed.body_html.startswith("1500 T0001 ")
    assert streamed.body_html.endswith(" T0000 T0001 T0002")


def test_an_xlsx_over_excels_rows_fails_the_run_in_words(api, settings, monkeypatch):
    monkeypatch.setattr(xlsx, "MAX_ROWS", 1_000)
    report = factories.report(api, attach_xlsx=True)

    run = run_with(settings, report, STREAMED)

    assert run.status == ReportRun.Status.FAILED
    assert run.error == (
        "The XLSX attachment cannot hold 1,500 rows: a worksheet holds at most 1,000 below its header. "
        "Attach the CSV instead, or ask the data source for fewer rows."
    )
    assert not mail.outbox


def test_preview_shows_a_streamed_answer_as_the_run_sends_it(api, settings):
    report = factories.report(api, layout=LAYOUT, email_max_rows=5)

    settings.REPORTING = {**settings.REPORTING, "STREAM_ABOVE_BYTES": WHOLE}
    whole = preview_draft(report, period_day=DAY, whose=None)
    settings.REPORTING = {**settings.REPORTING, "STREAM_ABOVE_BYTES": STREAMED}
    streamed = preview_draft(report, period_day=DAY, whose=None)

    assert streamed.row_count == whole.row_count == 1_500
    assert streamed.html == whole.html and streamed.text == whole.text
    assert [(file.filename, file.size) for file in streamed.files] == [
        (file.filename, file.size) for file in whole.files
    ]


def test_a_streamed_runs_memory_does_not_grow_with_its_rows(httpserver, settings, monkeypatch):
    def answer(rows: int) -> dict:
        return {"data": {"positions": [{"n": n, "name": f"Position {n:06}", "value": n * 1.5} for n in range(rows)]}}

    httpserver.expect_request("/api/small").respond_with_json(answer(20_000))
    httpserver.expect_request("/api/large").respond_with_json(answer(80_000))
    source = factories.data_source(httpserver.url_for("/api/"))
    small, large = factories.report(source, path="small", slug="small"), factories.report(source, path="large")
    # The CSV is linked, as a large answer's always is: the emails' copies of it are not the run's rows.
    settings.REPORTING = {**settings.REPORTING, "MAX_ATTACHMENT_BYTES": 1024 * 1024}
    monkeypatch.setattr(render, "SPOOL_BYTES", 256 * 1024)  # as a CSV over 8 MB, the CSV is written to disk
    run_with(settings, small, WHOLE)  # imports and compiled templates: not the run's cost

    def peak(report, stream_above: int) -> int:
        tracemalloc.start()
        run = run_with(settings, report, stream_above)
        highest = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert run.status == ReportRun.Status.SENT
        return highest

    streamed_small, streamed_large, whole_large = peak(small, STREAMED), peak(large, STREAMED), peak(large, WHOLE)

    assert streamed_large < 1.25 * streamed_small  # four times the rows, about the same memory
    assert streamed_large < whole_large / 3  # the whole answer parsed, as before


def test_a_value_read_through_the_streamed_rows_by_index_is_found(api, settings):
    report = factories.report(
        api, check_max_age_field="data.positions.3.as_of", check_max_age_hours=24 * 400, timezone="UTC"
    )

    run = run_with(settings, report, STREAMED)

    assert run.status == ReportRun.Status.SENT, run.error


PLAIN_ROWS = [
    {"ticker": f"T{n:04}", "units": n, "market_value": n * 10.25, "active": n % 3 == 0, "note": None, "name": "Zoë"}
    for n in range(1_500)
]


@pytest.fixture
def plain_api(httpserver):
    """An answer whose rows need no cell converted for a spreadsheet: its CSV is written as it is read."""
    httpserver.expect_request("/api/positions").respond_with_json({"data": {"positions": PLAIN_ROWS}})
    return factories.data_source(httpserver.url_for("/api/"))


def test_a_plain_answers_csv_written_as_its_rows_stream_is_the_csv_of_the_whole_answer(
    plain_api, settings, monkeypatch
):
    written_while_read = []
    real_chunks = rowstore.RowStream.csv_chunks
    monkeypatch.setattr(
        rowstore.RowStream, "csv_chunks", lambda rows: written_while_read.append(rows) or real_chunks(rows)
    )
    report = factories.report(plain_api)

    whole = seen(run_with(settings, report, WHOLE))
    assert written_while_read == []
    streamed = seen(run_with(settings, report, STREAMED))

    assert len(written_while_read) == 1  # the CSV of this run was the one written while its rows were read
    assert streamed == whole
    [csv_file] = [content for name, content in streamed["files"].items() if name.endswith(".csv")]
    lines = csv_file.decode("utf-8-sig").split("\r\n")
    assert lines[0] == "ticker,units,market_value,active,note,name"
    assert lines[1:3] == ["T0000,0,0.0,True,,Zoë", "T0001,1,10.25,False,,Zoë"]
    assert len(lines) == 1 + 1_500 + 1


@pytest.mark.parametrize(
    ("fields", "wanted"),
    [
        ({}, True),
        ({"attach_csv": False, "attach_xlsx": True}, False),
        ({"layout": LAYOUT}, False),  # its CSV is the layout's
        ({"layout": {"columns": [{"nope": 1}]}}, False),  # the render stage says what is wrong
    ],
    ids=["plain csv", "no csv", "designed", "broken layout"],
)
def test_the_csv_is_written_as_the_rows_stream_only_for_a_report_attaching_a_plain_csv(plain_api, fields, wanted):
    report = factories.report(plain_api, **fields)

    assert stage_inputs.plain_csv_wanted(report) is wanted
