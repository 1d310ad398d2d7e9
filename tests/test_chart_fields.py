"""The report's charts are chosen from fields (kind, x, y, title, rows), not typed as JSON."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from reporting import runs
from reporting.forms import ReportForm
from reporting.models import Report, ReportRun
from reporting.widgets import EMPTY_ROWS, ChartsWidget
from tests import factories
from tests.test_admin import report_form
from tests.test_csp import policy

pytestmark = pytest.mark.django_db

CHARTS = [
    {"kind": "line", "x": "date", "y": "value", "title": "Portfolio value", "rows": "daily"},
    {"kind": "bar", "x": "asset_class", "y": "market_value", "title": "Allocation"},
]


def chart_rows(*charts: dict, count: int | None = None) -> dict[str, str]:
    """The form's charts as the widget's rows send them (empty keys sent empty, as a browser does)."""
    data = {"charts-count": str(len(charts) if count is None else count)}
    for index, chart in enumerate(charts):
        for key in ("kind", "x", "y", "title", "rows"):
            data[f"charts-{index}-{key}"] = chart.get(key, "")
    return data


def change_page(client, report: Report) -> str:
    response = client.get(reverse("admin:reporting_report_change", args=[report.pk]))
    assert response.status_code == 200
    return response.content.decode()


def field_value(html: str, element_id: str) -> str | None:
    """The value of the input with this id, or the selected option of the select with it."""
    tag = re.search(rf'<(input|select)[^>]*\bid="{re.escape(element_id)}"[^>]*>', html)
    if tag is None:
        return None
    if tag.group(1) == "input":
        value = re.search(r'\bvalue="([^"]*)"', tag.group(0))
        return value.group(1) if value else ""
    options = html[tag.end() : html.index("</select>", tag.end())]
    return re.search(r'<option value="([^"]*)" selected>', options).group(1)


def datalist(html: str, element_id: str) -> list[str]:
    match = re.search(rf'<datalist id="{re.escape(element_id)}">(.*?)</datalist>', html, re.DOTALL)
    return re.findall(r'<option value="([^"]*)">', match.group(1))


def run_with_snapshot(report: Report) -> ReportRun:
    """A run of `report` that fetched (and archived) factories.POSITIONS."""
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    return runs.execute_run(run_id=run.pk)


def test_it_shows_each_chart_as_a_row_of_fields_with_room_for_more(staff_client, report):
    report.charts = CHARTS
    report.save()

    html = change_page(staff_client, report)

    values = [
        {key: field_value(html, f"id_charts-{index}-{key}") for key in ("kind", "x", "y", "title", "rows")}
        for index in range(len(CHARTS) + EMPTY_ROWS)
    ]
    assert values == [
        {"kind": "line", "x": "date", "y": "value", "title": "Portfolio value", "rows": "daily"},
        {"kind": "bar", "x": "asset_class", "y": "market_value", "title": "Allocation", "rows": ""},
        *[{"kind": "line", "x": "", "y": "", "title": "", "rows": ""}] * EMPTY_ROWS,
    ]
    assert f'name="charts-count" value="{len(CHARTS) + EMPTY_ROWS}"' in html
    kinds = re.search(r'<select name="charts-0-kind".*?</select>', html, re.DOTALL).group(0)
    assert re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)<', kinds) == [
        ("line", "Line over time"),
        ("bar", "Bars by category"),
    ]
    assert "Add a chart" in html and "Remove" in html
    assert '<label for="id_charts-0-kind"' in html  # the field's label points at its first control
    assert 'src="/static/reporting/chart_fields.js"' in html


def test_the_rows_sent_are_saved_as_the_charts_json(staff_client, source):
    empty_row = {"kind": "line"}  # an untouched empty row: no chart
    data = report_form(source, **chart_rows(CHARTS[0], empty_row, CHARTS[1]))

    response = staff_client.post(reverse("admin:reporting_report_add"), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Report.objects.get(slug="collections").charts == CHARTS


def test_a_row_without_a_title_is_given_one_and_rows_removed_in_the_browser_leave_gaps(source):
    # Rows 0 and 2 were removed by the script: the count still says 4, their fields are gone.
    data = {"charts-count": "4", **{f"charts-{3}-{key}": value for key, value in CHARTS[1].items()}}
    data |= {"charts-1-kind": "bar", "charts-1-x": " region ", "charts-1-y": "sales", "charts-1-title": ""}

    form = ReportForm(data=report_form(source, **data))
    form.is_valid()

    assert "charts" not in form.errors
    assert form.cleaned_data["charts"] == [
        {"kind": "bar", "x": "region", "y": "sales", "title": "Sales by region"},
        CHARTS[1],
    ]


def test_charts_sent_as_json_text_are_still_understood(staff_client, source):
    data = report_form(source, charts=json.dumps(CHARTS))

    response = staff_client.post(reverse("admin:reporting_report_add"), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Report.objects.get(slug="collections").charts == CHARTS


def test_clearing_every_row_removes_the_charts(staff_client, report):
    report.charts = CHARTS
    report.save()
    data = report_form(report.data_source, slug=report.slug, **chart_rows(*[{"kind": "line"}] * 4))

    response = staff_client.post(reverse("admin:reporting_report_change", args=[report.pk]), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    report.refresh_from_db()
    assert report.charts == []


def test_a_form_that_sends_no_charts_at_all_leaves_the_field_out():
    """Neither shape sent: the model keeps its value, as a field missing from a POST always did."""
    assert ChartsWidget().value_omitted_from_data({}, {}, "charts")
    assert not ChartsWidget().value_omitted_from_data({"charts-count": "0"}, {}, "charts")
    assert not ChartsWidget().value_omitted_from_data({"charts": "[]"}, {}, "charts")


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"kind": "line", "y": "value", "title": "Value"}, "A chart lacks x."),
        ({"kind": "pie", "x": "asset_class", "y": "market_value"}, "Unknown chart kind 'pie': use 'line' or 'bar'."),
        ({"kind": "bar", "title": "Allocation"}, "A chart lacks x, y."),
    ],
)
def test_a_wrong_chart_is_named_in_words_on_the_form_and_kept_as_typed(staff_client, source, row, error):
    response = staff_client.post(reverse("admin:reporting_report_add"), report_form(source, **chart_rows(row)))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["charts"] == [error]
    html = response.content.decode()
    assert error.replace("'", "&#x27;") in html
    assert field_value(html, "id_charts-0-kind") == row["kind"]  # even a kind the list does not offer
    assert field_value(html, "id_charts-0-title") == row.get("title", "")
    assert not Report.objects.exists()


def test_json_text_that_is_not_a_list_of_charts_is_refused_in_words(staff_client, source):
    response = staff_client.post(reverse("admin:reporting_report_add"), report_form(source, charts='{"kind": "x"}'))

    assert response.status_code == 200
    assert "Charts must be a JSON list of objects" in response.context["adminform"].form.errors["charts"][0]
    assert "could not be read as a list of charts" in response.content.decode()


def test_it_suggests_the_field_names_of_the_latest_runs_data(staff_client, report):
    run_with_snapshot(report)

    html = change_page(staff_client, report)

    assert datalist(html, "id_charts-columns") == ["instrument", "quantity", "market_value"]
    assert re.search(r'<input[^>]*id="id_charts-0-x"[^>]*list="id_charts-columns"', html)
    assert re.search(r'<input[^>]*id="id_charts-0-y"[^>]*list="id_charts-columns"', html)
    assert "Field names in the latest run's data: instrument, quantity, market_value." in html


def test_it_suggests_other_lists_of_rows_and_their_field_names(staff_client, report):
    run = run_with_snapshot(report)
    daily = [{"date": "2026-11-19", "value": 1.0}, {"date": "2026-11-20", "value": 2.0, "note": "close"}]
    data = {**factories.POSITIONS, "summary": {**factories.POSITIONS["summary"], "daily": daily}}
    run.data_snapshot.save("data.json", ContentFile(json.dumps(data).encode()))

    html = change_page(staff_client, report)

    assert datalist(html, "id_charts-lists") == ["summary.daily"]
    assert datalist(html, "id_charts-columns") == ["instrument", "quantity", "market_value", "date", "value", "note"]


def test_only_the_first_rows_are_read_for_suggestions(staff_client, report):
    run = run_with_snapshot(report)
    rows = [{"instrument": "A", "value": 1}] * 200 + [{"instrument": "B", "late_field": 2}]
    run.data_snapshot.save("data.json", ContentFile(json.dumps({"data": {"positions": rows}}).encode()))

    assert datalist(change_page(staff_client, report), "id_charts-columns") == ["instrument", "value"]


def test_the_newest_run_with_data_gives_the_suggestions(staff_client, report):
    older = run_with_snapshot(report)
    older.data_snapshot.save("data.json", ContentFile(b'{"data": {"positions": [{"old_field": 1}]}}'))
    ReportRun.objects.filter(pk=older.pk).update(created_at=older.created_at.replace(year=2020))
    run_with_snapshot(report)
    ReportRun.objects.create(report=report, period_start=older.period_start, period_end=older.period_end)  # no data
    assert ReportRun.objects.filter(report=report).count() == 3

    assert datalist(change_page(staff_client, report), "id_charts-columns") == [
        "instrument",
        "quantity",
        "market_value",
    ]


def test_without_a_run_there_are_no_suggestions_and_the_form_works(staff_client, report):
    html = change_page(staff_client, report)

    assert datalist(html, "id_charts-columns") == []
    assert "Field names in the latest run's data" not in html


@pytest.mark.parametrize("damage", ["garbage", "missing", "no rows there"])
def test_an_unreadable_snapshot_gives_no_suggestions_and_the_form_still_works(staff_client, report, damage):
    run = run_with_snapshot(report)
    if damage == "garbage":
        run.data_snapshot.save("data.json", ContentFile(b"{not json"))
    elif damage == "missing":
        run.data_snapshot.storage.delete(run.data_snapshot.name)
    else:
        run.data_snapshot.save("data.json", ContentFile(b'{"elsewhere": []}'))

    html = change_page(staff_client, report)

    assert datalist(html, "id_charts-columns") == []
    data = report_form(report.data_source, slug=report.slug, **chart_rows(CHARTS[1]))
    response = staff_client.post(reverse("admin:reporting_report_change", args=[report.pk]), data)
    assert response.status_code == 302, response.context["adminform"].form.errors


def test_the_charts_fields_need_no_inline_script_or_handler(staff_client, report):
    report.charts = CHARTS
    report.save()
    run_with_snapshot(report)

    for url in [reverse("admin:reporting_report_change", args=[report.pk]), reverse("admin:reporting_report_add")]:
        response = staff_client.get(url)
        html = response.content.decode()
        assert policy(response)["script-src"] == ["'self'"]
        assert not re.search(r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>", html)
        assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", html, re.IGNORECASE)
        assert "data-chart-fields" in html
