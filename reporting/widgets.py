"""The report form's charts, chosen from fields rather than typed as JSON.

One row per chart (kind, x field, y field, title, the rows it draws from); field names are
typed with suggestions taken from the report's latest archived data. The rows are sent as
`charts-<n>-<key>` and turned back into the JSON list the model field stores, so the form's
own validation (reporting.pipeline.charts) still says what is wrong, in words. A client that
sends `charts` as JSON text is understood too.
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

from django import forms
from django.forms.renderers import TemplatesSetting

from reporting import archive
from reporting.models import Report, ReportRun
from reporting.pipeline import charts, fetch, render

logger = logging.getLogger(__name__)

KEYS = ("kind", "x", "y", "title", "rows")
TEXT_KEYS = ("x", "y", "title", "rows")  # a row with all of these empty is no chart, whatever its kind
EMPTY_ROWS = 2  # rows to fill without JavaScript
MAX_ROWS = 200  # the most rows read back from a POST: more than any report draws
SUGGESTION_ROWS = 200  # the rows of the archived data whose keys are offered as field names
SUGGESTION_MAX_BYTES = 10 * 1024 * 1024  # a larger archived answer is not parsed to suggest names
SUGGESTION_KEYS = 100  # of each object, the keys looked at for other lists of rows
SUGGESTION_DEPTH = 3  # how deep other lists of rows are looked for (e.g. "summary.daily")


class RowsWidget(forms.Widget):
    """A field edited as rows of inputs named `<name>-<n>-<key>`, with `<name>-count` saying how many were sent.

    The project's templates render it (not only the form renderer's own directories); rows are
    added and removed by reporting/static/reporting/chart_fields.js.
    """

    def render(self, name, value, attrs=None, renderer=None):
        return super().render(name, value, attrs, renderer=TemplatesSetting())

    def rows_sent(self, data, name: str) -> int | None:
        """How many rows to read back from a POST (at most MAX_ROWS); None when it sent no rows."""
        count = data.get(f"{name}-count")
        if count is None:
            return None
        try:
            return min(int(count), MAX_ROWS)
        except ValueError:
            return MAX_ROWS

    def value_omitted_from_data(self, data, files, name: str) -> bool:
        return name not in data and f"{name}-count" not in data


class ChartsWidget(RowsWidget):
    """The `charts` JSON as rows of fields, with an "Add a chart" and a "Remove" button (JS)."""

    template_name = "reporting/widgets/charts.html"
    help_text = (
        "Charts drawn above the table: a line over a date field, or bars summing a number field by category. "
        "Clear a row's fields to remove its chart."
    )

    class Media:
        js = ["reporting/chart_fields.js"]

    def __init__(self, *, report: Report | None = None, attrs: dict | None = None):
        super().__init__(attrs)
        self.report = report

    def get_context(self, name: str, value: Any, attrs: dict | None) -> dict:
        context = super().get_context(name, value, attrs)
        charts_shown, unreadable = _charts_in(value)
        rows = [_row(chart) for chart in charts_shown] + [_row({}) for _ in range(EMPTY_ROWS)]
        prefix = context["widget"]["attrs"].get("id") or f"id_{name}"
        context["widget"].update(
            prefix=prefix,
            rows=[_named(row, name=name, prefix=prefix, index=index) for index, row in enumerate(rows)],
            template_row=_named(_row({}), name=name, prefix=prefix, index="__prefix__"),
            count=len(rows),
            unreadable=unreadable,
            datalist_id=f"{prefix}-columns",
            rows_datalist_id=f"{prefix}-lists",
            **_suggestions(self.report),
        )
        return context

    def id_for_label(self, id_: str) -> str:
        return f"{id_}-0-kind" if id_ else id_

    def value_from_datadict(self, data, files, name: str) -> str | None:
        """The rows as the JSON text the field expects; or, without rows, `charts` as sent (JSON text)."""
        total = self.rows_sent(data, name)
        if total is None:
            return data.get(name)
        built = []
        for index in range(total):
            row = {key: str(data.get(f"{name}-{index}-{key}") or "").strip() for key in KEYS}
            if any(row[key] for key in TEXT_KEYS):
                built.append({key: value for key, value in row.items() if value or key != "rows"})
        return json.dumps(built, ensure_ascii=False)


def _charts_in(value: Any) -> tuple[list[dict], str]:
    """The charts in the field's value (JSON text or a list) as dicts; and the text when it is not a list of them."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            return [], value
    if value is None:
        return [], ""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        return [], json.dumps(value, ensure_ascii=False)
    return value, ""


def _row(chart: dict) -> dict:
    row: dict[str, Any] = {key: "" if chart.get(key) is None else str(chart.get(key)) for key in KEYS}
    row["kind"] = row["kind"] or next(iter(charts.KINDS))
    kinds = dict(charts.KINDS)
    kinds.setdefault(row["kind"], row["kind"])  # an unknown kind sent back with its error stays as sent
    row["kinds"] = list(kinds.items())
    return row


def _named(row: dict, *, name: str, prefix: str, index: int | str) -> dict:
    """The row with each field's form name and element id."""
    fields = {key: {"name": f"{name}-{index}-{key}", "id": f"{prefix}-{index}-{key}"} for key in KEYS}
    number = index + 1 if isinstance(index, int) else "__number__"
    return {**row, "fields": fields, "number": number}


def _suggestions(report: Report | None) -> dict[str, list[str]]:
    """Field names (and other lists of rows) from the report's latest archived data; none when there is none."""
    empty: dict[str, list[str]] = {"columns": [], "lists": []}
    if report is None or report.pk is None:
        return empty
    run = ReportRun.objects.filter(report=report, data_snapshot__gt="").order_by("-created_at").first()
    if run is None:
        return empty
    try:
        if run.data_snapshot.size > SUGGESTION_MAX_BYTES:
            return empty
        return _names_in(archive.snapshot_data(run), records_path=report.records_path)
    except Exception:  # a suggestion is a convenience: an unreadable archive must never break the form
        logger.warning("No chart field suggestions: run %s's data could not be read.", run.pk, exc_info=True)
        return empty


def _names_in(data: Any, *, records_path: str) -> dict[str, list[str]]:
    """The columns of the report's rows, then of the other lists of rows; and those lists' paths."""
    lists = _lists_of_rows(data, skip=records_path)
    columns: list[str] = []
    for path in [records_path, *lists]:
        rows = fetch.select_rows(data, path)[:SUGGESTION_ROWS]
        columns += [column for column in render.columns_of(rows) if column not in columns]
    return {"columns": columns, "lists": lists}


def _lists_of_rows(data: Any, *, skip: str, path: str = "", depth: int = 0) -> list[str]:
    """Dotted paths to lists of objects in the data (not the report's own rows), a few levels deep."""
    if not isinstance(data, dict) or depth >= SUGGESTION_DEPTH:
        return []
    found = []
    for key, value in itertools.islice(data.items(), SUGGESTION_KEYS):
        here = f"{path}.{key}" if path else str(key)
        if isinstance(value, list) and value and isinstance(value[0], dict) and here != skip:
            found.append(here)
        found += _lists_of_rows(value, skip=skip, path=here, depth=depth + 1)
    return found


class LayoutWidget(forms.Textarea):
    """The layout as JSON text, under the layout designer (reporting/static/reporting/layout_designer.js).

    The designer fetches a sample of the live answer, offers its lists of rows and fields, and
    writes the layout here as the staff member picks columns, labels, formats, totals and the
    headline; the live preview beside it shows the email as it would be sent. Without the
    script (or for a developer), the JSON can be typed: the model checks it against its schema.
    """

    template_name = "reporting/widgets/layout.html"

    class Media:
        js = ["reporting/layout_designer.js"]

    def __init__(self, *, report: Report | None = None, attrs: dict | None = None):
        super().__init__({"rows": 8, "cols": 80, "spellcheck": "false", **(attrs or {})})
        self.report = report

    def render(self, name, value, attrs=None, renderer=None):
        return super().render(name, value, attrs, renderer=TemplatesSetting())

    def format_value(self, value: Any) -> str:
        if value in (None, "", {}):
            return ""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return value  # sent back as typed, with its error
        return json.dumps(value, ensure_ascii=False, indent=2)

    def get_context(self, name: str, value: Any, attrs: dict | None) -> dict:
        from django.urls import reverse

        context = super().get_context(name, value, attrs)
        context["widget"].update(
            sample_url=reverse("admin:reporting_report_design_sample"),
            preview_url=reverse("admin:reporting_report_design_preview"),
            report_id=self.report.pk if self.report is not None and self.report.pk else "",
        )
        return context


class QueryParamsWidget(RowsWidget):
    """The query parameters as rows of name and value (a value may use the period, the recipient), not JSON.

    Sent as `query_params-<n>-name` / `-value` and turned back into the JSON object the model
    stores; the form checks it as before. A client that sends `query_params` as JSON text is
    understood too. Rows are added and removed by the charts' script (the same markup).
    """

    template_name = "reporting/widgets/query_params.html"
    help_text = (
        "Each parameter's name and value. A value may use the period, e.g. {{ period.start|date:'Y-m-d' }}, "
        "or, for each recipient, {{ recipient.client_id }}. Clear a row to remove it."
    )

    class Media:
        js = ["reporting/chart_fields.js"]

    def get_context(self, name: str, value: Any, attrs: dict | None) -> dict:
        context = super().get_context(name, value, attrs)
        params, unreadable = _params_in(value)
        rows = [{"name": key, "value": val} for key, val in params] + [{"name": "", "value": ""}] * EMPTY_ROWS
        prefix = context["widget"]["attrs"].get("id") or f"id_{name}"

        def named(row: dict, index: int | str) -> dict:
            number = index + 1 if isinstance(index, int) else "__number__"
            ids = {key: {"name": f"{name}-{index}-{key}", "id": f"{prefix}-{index}-{key}"} for key in ("name", "value")}
            return {**row, "fields": ids, "number": number}

        context["widget"].update(
            prefix=prefix,
            rows=[named(row, index) for index, row in enumerate(rows)],
            template_row=named({"name": "", "value": ""}, "__prefix__"),
            count=len(rows),
            unreadable=unreadable,
        )
        return context

    def id_for_label(self, id_: str) -> str:
        return f"{id_}-0-name" if id_ else id_

    def value_from_datadict(self, data, files, name: str) -> str | None:
        """The rows as the JSON object the field expects; or, without rows, `query_params` as sent."""
        total = self.rows_sent(data, name)
        if total is None:
            return data.get(name)
        built: dict[str, str] = {}
        for index in range(total):
            key = str(data.get(f"{name}-{index}-name") or "").strip()
            if key:
                built[key] = str(data.get(f"{name}-{index}-value") or "")
        return json.dumps(built, ensure_ascii=False)


def _params_in(value: Any) -> tuple[list[tuple[str, str]], str]:
    """The parameters in the field's value (JSON text or a dict) as (name, value) text; the text when unreadable."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            return [], value
    if value is None:
        return [], ""
    if not isinstance(value, dict):
        return [], json.dumps(value, ensure_ascii=False)
    shown = []
    for key, val in value.items():
        text = val if isinstance(val, str) else json.dumps(val, ensure_ascii=False)
        shown.append((str(key), text))
    return shown, ""
