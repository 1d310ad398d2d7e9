"""A report's designed layout: columns, labels, formats, sort, totals, subtotals, headline and intro.

Staff build it on the report form (the layout designer); it is stored as JSON on the report,
checked against SCHEMA (JSON Schema, by the jsonschema library) and then by `parse`, which
says what is wrong in words. The shipped "Table" email lays the rows out by it, and the CSV
and XLSX use its columns, labels, order and formats too. Templates written by developers
get the same laid-out table as `designed`, to use or ignore.

Everything here works on plain data; what is shown is text, escaped by the email's template.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from reporting.pipeline import formats, rowstore
from reporting.pipeline.formats import Format

if TYPE_CHECKING:
    import jsonschema

MAX_COLUMNS = 40
MAX_FIGURES = 8
_FIELD = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\x00-\x1f]+$"}
_FORMAT_PROPERTIES = {
    "format": {"enum": list(formats.KINDS)},
    "decimals": {"type": "integer", "minimum": 0, "maximum": formats.MAX_DECIMALS},
    "currency": {"type": "string", "pattern": "^([A-Z]{3})?$"},
    "currency_field": {"anyOf": [_FIELD, {"const": ""}]},
    "percent_points": {"type": "boolean"},
    "date_style": {"enum": list(formats.DATE_STYLES)},
    "negative_red": {"type": "boolean"},
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Report layout",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "columns": {
            "type": "array",
            "maxItems": MAX_COLUMNS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["field"],
                "properties": {
                    "field": _FIELD,
                    "label": {"type": "string", "maxLength": 100},
                    "align": {"enum": ["", "left", "right", "center"]},
                    "total": {"type": "boolean"},
                    **_FORMAT_PROPERTIES,
                },
            },
        },
        "sort": {
            "type": "array",
            "maxItems": 5,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["field"],
                "properties": {"field": _FIELD, "descending": {"type": "boolean"}},
            },
        },
        "subtotal_by": {"anyOf": [_FIELD, {"const": ""}]},
        "headline": {
            "type": "array",
            "maxItems": MAX_FIGURES,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["label"],
                "properties": {
                    "label": {"type": "string", "minLength": 1, "maxLength": 60},
                    "path": {"anyOf": [_FIELD, {"const": ""}]},
                    "total_of": {"anyOf": [_FIELD, {"const": ""}]},
                    "row_count": {"type": "boolean"},
                    **_FORMAT_PROPERTIES,
                },
            },
        },
        "intro": {"type": "string", "maxLength": 2000},
    },
}
_HUMAN = re.compile(r"[_\-.]+")


class LayoutError(Exception):
    """The stored layout is not valid; `message` says where and why, in words."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Column:
    field: str
    label: str
    format: Format
    align: str  # left, right or center
    total: bool = False


@dataclass(frozen=True)
class Figure:
    """A headline figure: a value at a dotted path in the data, a column's total, or the number of rows."""

    label: str
    format: Format
    path: str = ""
    total_of: str = ""
    row_count: bool = False


@dataclass(frozen=True)
class Layout:
    columns: tuple[Column, ...]
    sort: tuple[tuple[str, bool], ...] = ()  # (field, descending)
    subtotal_by: str = ""
    headline: tuple[Figure, ...] = ()
    intro: str = ""

    @property
    def has_totals(self) -> bool:
        return any(column.total for column in self.columns)


# --- checking -------------------------------------------------------------------------


def problems(raw: Any) -> list[str]:
    """What is wrong with a stored layout, in words; [] when it is fine (or empty: no layout)."""
    try:
        parse(raw)
    except LayoutError as exc:
        return [exc.message]
    return []


def parse(raw: Any) -> Layout | None:
    """The layout from its JSON, or None when there is none (no columns); LayoutError in words."""
    if raw in (None, {}, ""):
        return None
    errors = sorted(_validator().iter_errors(raw), key=lambda error: list(error.absolute_path))
    if errors:
        raise LayoutError(_in_words(errors[0]))
    columns = tuple(_column(number, entry) for number, entry in enumerate(raw.get("columns", []), start=1))
    headline = tuple(_figure(number, entry) for number, entry in enumerate(raw.get("headline", []), start=1))
    if not columns:
        if headline or raw.get("intro") or raw.get("sort") or raw.get("subtotal_by"):
            raise LayoutError("The layout has no columns: choose at least one column to show.")
        return None
    return Layout(
        columns=columns,
        sort=tuple((entry["field"], bool(entry.get("descending"))) for entry in raw.get("sort", [])),
        subtotal_by=raw.get("subtotal_by", ""),
        headline=headline,
        intro=raw.get("intro", ""),
    )


@cache
def _validator() -> jsonschema.Draft202012Validator:
    """SCHEMA's validator; jsonschema is imported at the first check, not with this module, which beat
    imports through reporting.models and never checks with (tests/test_beat_imports.py)."""
    import jsonschema

    return jsonschema.Draft202012Validator(SCHEMA)


def _in_words(error: jsonschema.ValidationError) -> str:
    where = []
    path = list(error.absolute_path)
    for index, step in enumerate(path):
        if isinstance(step, int):
            where.append(f"{_SINGULAR.get(str(path[index - 1]), 'item')} {step + 1}")
        elif step not in _SINGULAR or index == len(path) - 1:
            where.append(f"'{step}'")
    place = ", ".join(where) or "the layout"
    if error.validator == "additionalProperties":
        return f"Layout, {place}: {error.message.replace('Additional properties are not allowed', 'unknown setting')}."
    if error.validator == "maxItems":
        return f"Layout, {place}: at most {error.validator_value} are allowed."
    if error.validator == "enum":
        allowed = ", ".join(repr(value) for value in error.validator_value if value)  # type: ignore[union-attr]
        return f"Layout, {place}: {error.instance!r} is not one of {allowed}."
    if error.validator in ("pattern", "anyOf") and "currency" in [str(step) for step in path]:
        return f"Layout, {place}: {error.instance!r} is not a currency code (three capital letters, e.g. EUR)."
    if error.validator in ("pattern", "anyOf", "minLength"):
        return f"Layout, {place}: {error.instance!r} is not a field name (empty, or a control character)."
    return f"Layout, {place}: {error.message}."


_SINGULAR = {"columns": "column", "headline": "headline figure", "sort": "sort key"}


def _format(entry: dict[str, Any], where: str) -> Format:
    fmt = Format(
        kind=entry.get("format", "text"),
        decimals=entry.get("decimals", 0 if entry.get("format") == "percent" else 2),
        currency=entry.get("currency", ""),
        currency_field=entry.get("currency_field", ""),
        percent_points=bool(entry.get("percent_points")),
        date_style=entry.get("date_style", "medium"),
        negative_red=bool(entry.get("negative_red")),
    )
    if fmt.kind == "currency":
        if fmt.currency and fmt.currency_field:
            raise LayoutError(f"{where}: a currency is either fixed ({fmt.currency}) or from a field, not both.")
        if not fmt.currency and not fmt.currency_field:
            raise LayoutError(f"{where}: say which currency: a code (e.g. EUR) or the field that holds it.")
        if fmt.currency and formats.currency_problem(fmt.currency):
            raise LayoutError(f"{where}: {formats.currency_problem(fmt.currency)}")
    return fmt


def _column(number: int, entry: dict[str, Any]) -> Column:
    where = f"Layout, column {number} ({entry['field']})"
    fmt = _format(entry, where)
    if entry.get("total") and not fmt.numeric:
        raise LayoutError(f"{where}: only a number, currency or percent column can have a total.")
    align = entry.get("align") or ("right" if fmt.numeric else "left")
    return Column(
        field=entry["field"],
        label=entry.get("label", "").strip() or humanize(entry["field"]),
        format=fmt,
        align=align,
        total=bool(entry.get("total")),
    )


def _figure(number: int, entry: dict[str, Any]) -> Figure:
    where = f"Layout, headline figure {number} ({entry['label']})"
    sources = [bool(entry.get("path")), bool(entry.get("total_of")), bool(entry.get("row_count"))]
    if sum(sources) != 1:
        raise LayoutError(
            f"{where}: give it exactly one value: a path in the data, a column to total, or the number of rows."
        )
    fmt = _format(entry, where)
    if entry.get("row_count"):
        fmt = Format(kind="number", decimals=0)
    return Figure(
        label=entry["label"],
        format=fmt,
        path=entry.get("path", ""),
        total_of=entry.get("total_of", ""),
        row_count=bool(entry.get("row_count")),
    )


def humanize(name: str) -> str:
    """A field name as a label: "market_value" → "Market value", "portfolio.name" → "Portfolio name"."""
    words = _HUMAN.sub(" ", name).strip()
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", words)  # marketValue → market Value
    return (words[:1].upper() + words[1:].lower()) if words else name


# --- rows -------------------------------------------------------------------------------


def value_in(row: Any, field_name: str) -> Any:
    """The row's value of a field: its key, or a dotted path within the row; None when absent."""
    if not isinstance(row, dict):
        return None
    if field_name in row:
        return row[field_name]
    node: Any = row
    for name in field_name.split("."):
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


def order(rows: Sequence[Any], layout: Layout) -> Sequence[Any]:
    """The rows in the layout's order: grouped by the subtotal field (in order of value), each
    group by the sort keys. Missing values last; numbers by value, text by text.

    A large answer's streamed rows are sorted without holding them (rowstore.sorted_rows), once:
    the result is kept with them for the CSV, the XLSX and the email to read.
    """
    if not layout.sort and not layout.subtotal_by:
        return rows if isinstance(rows, rowstore.RowStream) else list(rows)
    key = _row_key(layout)
    if not isinstance(rows, rowstore.RowStream):
        return sorted(rows, key=key)
    memo = (layout.subtotal_by, tuple(layout.sort))
    if rows.sorted_by.get(memo) is None:
        rows.sorted_by[memo] = rowstore.sorted_rows(rows, key)
    return rows.sorted_by[memo]


def _row_key(layout: Layout) -> Callable[[Any], tuple]:
    """One key for the layout's whole order: the subtotal field's value, then each sort field's,
    a descending one compared the other way round but still with missing values last."""
    fields = [(layout.subtotal_by, False)] if layout.subtotal_by else []
    fields += list(layout.sort)

    def key(row: Any) -> tuple:
        parts: list[Any] = []
        for name, descending in fields:
            value = value_in(row, name)
            if descending:
                parts += [value is None, _Descending(_sort_key(value))]
            else:
                parts.append(_sort_key(value))
        return tuple(parts)

    return key


@functools.total_ordering
class _Descending:
    """A sort key compared the other way round."""

    __slots__ = ("key",)

    def __init__(self, key: tuple):
        self.key = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.key == other.key

    def __lt__(self, other: _Descending) -> bool:
        return other.key < self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __reduce__(self) -> tuple:  # pickled by the external sort
        return (_Descending, (self.key,))


def _sort_key(value: Any) -> tuple:
    number = formats.as_number(value)
    if number is not None:
        return (0, number, "")
    if value is None:
        return (2, Decimal(0), "")
    return (1, Decimal(0), str(value).casefold())


# --- the email --------------------------------------------------------------------------


@dataclass
class _Sums:
    """A column's running total: by currency where each row has its own."""

    by_currency: dict[str, Decimal] = field(default_factory=OrderedDict)

    def add(self, number: Decimal, currency: str) -> None:
        self.by_currency[currency] = self.by_currency.get(currency, Decimal(0)) + number


def lay_out(
    layout: Layout, data: Any, rows: Sequence[Any], *, shown: int, locale: str, zone: ZoneInfo
) -> dict[str, Any]:
    """The email's table and headline as text to show: `rows` in the layout's order, the first
    `shown` of them as lines, subtotals and totals over all of them."""
    columns = layout.columns
    lines: list[dict[str, Any]] = []
    totals = [_Sums() for _ in columns]
    group_sums = [_Sums() for _ in columns]
    group_value: Any = None
    group_rows = 0
    for index, row in enumerate(rows):
        if layout.subtotal_by:
            value = value_in(row, layout.subtotal_by)
            if index and _sort_key(value) != _sort_key(group_value):
                if index <= shown:
                    lines.append(_sum_line("subtotal", group_value, group_rows, group_sums, columns, locale))
                group_sums, group_rows = [_Sums() for _ in columns], 0
            group_value = value
            group_rows += 1
        cells = []
        for number, column in enumerate(columns):
            value = value_in(row, column.field)
            currency = formats.currency_of(column.format, row) if column.format.kind == "currency" else ""
            amount = formats.as_number(value) if column.format.numeric else None
            if column.total and amount is not None:
                totals[number].add(amount, currency)
                if layout.subtotal_by:
                    group_sums[number].add(amount, currency)
            if index < shown:
                cells.append(_cell(column, value, amount, currency, locale, zone))
        if index < shown:
            lines.append({"kind": "row", "cells": cells})
    if layout.subtotal_by and rows and len(rows) <= shown:
        lines.append(_sum_line("subtotal", group_value, group_rows, group_sums, columns, locale))
    if layout.has_totals and rows:
        lines.append(_sum_line("total", None, len(rows), totals, columns, locale))
    return {
        "columns": [{"label": column.label, "align": column.align} for column in columns],
        "lines": lines,
        "shown": min(shown, len(rows)),
        "total": len(rows),
        "headline": [_figure_text(figure, data, rows, locale, zone) for figure in layout.headline],
    }


def _cell(column: Column, value: Any, amount: Decimal | None, currency: str, locale: str, zone: ZoneInfo) -> dict:
    text = formats.display(value, column.format, locale, currency=currency, zone=zone)
    return {
        "text": text,
        "align": column.align,
        "missing": value is None,
        "negative": bool(column.format.negative_red and amount is not None and amount < 0),
    }


def _sum_line(kind: str, group: Any, count: int, sums: list[_Sums], columns: tuple[Column, ...], locale: str) -> dict:
    name = "—" if group is None else formats.display(group, Format(), locale)
    label = f"{name} ({count:,} rows)" if kind == "subtotal" else f"Total ({count:,} rows)"
    if count == 1:
        label = label.replace("rows)", "row)")
    cells = []
    labelled = False
    for column, column_sums in zip(columns, sums, strict=True):
        if column.total:
            text, negative = _sum_text(column, column_sums, locale)
            cells.append({"text": text, "align": column.align, "missing": False, "negative": negative})
        elif not labelled:
            cells.append({"text": label, "align": "left", "missing": False, "negative": False})
            labelled = True
        else:
            cells.append({"text": "", "align": column.align, "missing": False, "negative": False})
    return {"kind": kind, "cells": cells, "label": label}


def _sum_text(column: Column, sums: _Sums, locale: str) -> tuple[str, bool]:
    """A total in the column's format; totals of several currencies are each shown, never added up."""
    if not sums.by_currency:
        return "", False
    parts = [
        formats.display_number(amount, column.format, locale, currency=currency)
        for currency, amount in sums.by_currency.items()
    ]
    negative = column.format.negative_red and len(sums.by_currency) == 1 and next(iter(sums.by_currency.values())) < 0
    return " · ".join(parts), bool(negative)


def _figure_text(figure: Figure, data: Any, rows: Sequence[Any], locale: str, zone: ZoneInfo) -> dict[str, Any]:
    if figure.row_count:
        value: Any = len(rows)
        currency = ""
    elif figure.total_of:
        sums = _Sums()
        for row in rows:
            amount = formats.as_number(value_in(row, figure.total_of))
            if amount is not None:
                sums.add(amount, formats.currency_of(figure.format, row))
        if len(sums.by_currency) > 1:
            parts = [
                formats.display_number(amount, figure.format, locale, currency=code)
                for code, amount in sums.by_currency.items()
            ]
            return {"label": figure.label, "text": " · ".join(parts), "negative": False}
        currency, value = next(iter(sums.by_currency.items()), (figure.format.currency, Decimal(0)))
    else:
        value = value_in(data, figure.path) if isinstance(data, dict) else None
        currency = figure.format.currency if figure.format.kind == "currency" else ""
        if figure.format.currency_field and isinstance(data, dict):
            currency = formats.currency_of(figure.format, data)
    amount = formats.as_number(value) if figure.format.numeric else None
    text = formats.display(value, figure.format, locale, currency=currency, zone=zone) if value is not None else "—"
    negative = bool(figure.format.negative_red and amount is not None and amount < 0)
    return {"label": figure.label, "text": text, "negative": negative}


# --- the files --------------------------------------------------------------------------


def csv_header(layout: Layout) -> list[str]:
    return [column.label + formats.csv_unit(column.format) for column in layout.columns]


def csv_cells(layout: Layout, row: Any, locale: str, zone: ZoneInfo) -> list[tuple[Any, bool]]:
    """Each cell of the row as the CSV holds it, and whether it was written as a number or date
    (then it is safe as it is; any other value is the API's own, to be checked like any cell)."""
    cells = []
    for column in layout.columns:
        value = value_in(row, column.field)
        written = formats.csv_value(value, column.format, locale, zone=zone)
        cells.append((written, written is not value))
    return cells


# --- a sample of the live response, for the designer ------------------------------------


def describe_sample(data: Any, records_path: str = "", *, max_depth: int = 4) -> dict[str, Any]:
    """What the designer offers for a sample answer: the lists of rows in it (paths and sizes),
    the fields of the rows at `records_path` with a format guessed from their values, numbers
    outside the rows (for headline figures), and a layout suggested from the fields."""
    lists: list[dict[str, Any]] = []
    scalars: list[dict[str, Any]] = []
    _walk(data, "", lists, scalars, max_depth)
    rows = rows_at(data, records_path)
    fields = _fields(rows or [])
    return {
        "lists": lists[:50],
        "numbers": scalars[:50],
        "records_path": records_path,
        "row_count": None if rows is None else len(rows),
        "fields": fields,
        "suggested": suggested_layout(fields),
    }


def _walk(node: Any, path: str, lists: list, scalars: list, depth: int) -> None:
    if isinstance(node, list):
        if node and all(isinstance(item, dict) for item in node[:20]):
            lists.append({"path": path, "rows": len(node)})
        return
    if not isinstance(node, dict) or depth <= 0:
        return
    for key, value in list(node.items())[:200]:
        child = f"{path}.{key}" if path else str(key)
        if formats.as_number(value) is not None:
            scalars.append({"path": child, "value": str(value)[:40]})
        _walk(value, child, lists, scalars, depth - 1)


def rows_at(data: Any, records_path: str) -> list[Any] | None:
    """The list at `records_path` in `data`, or None when there is none there."""
    node = data
    for key in [part for part in records_path.split(".") if part]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node if isinstance(node, list) else None


def _fields(rows: Sequence[Any], sample: int = 200) -> list[dict[str, Any]]:
    """The fields of the first rows (nested objects one level down as dotted names) with a guessed format."""
    seen: OrderedDict[str, list[Any]] = OrderedDict()
    for row in rows[:sample]:
        if not isinstance(row, dict):
            continue
        for key, value in row.items():
            if isinstance(value, dict):
                for inner, inner_value in list(value.items())[:20]:
                    if not isinstance(inner_value, dict | list):
                        seen.setdefault(f"{key}.{inner}", []).append(inner_value)
            elif not isinstance(value, list):
                seen.setdefault(str(key), []).append(value)
        if len(seen) >= 100:
            break
    described = []
    for name, values in seen.items():
        guessed = _guess(name, values)
        entry: dict[str, Any] = {
            "field": name,
            "format": guessed,
            "examples": [str(value)[:40] for value in values[:3]],
        }
        if guessed == "percent":  # 0.125 is a fraction; 12.5 can only be points
            entry["percent_points"] = any(abs(formats.as_number(value) or 0) > 1 for value in values)  # type: ignore[operator]
        if guessed == "number":  # with a currency in the row, numbers with cents are amounts
            numbers = [formats.as_number(value) for value in values if value is not None]
            entry["fractional"] = any(number != number.to_integral_value() for number in numbers if number is not None)
        described.append(entry)
    return described


_CURRENCY_NAME = re.compile(r"(^|_)(ccy|currency|currency_code)$", re.IGNORECASE)
_PERCENT_NAME = re.compile(r"(pct|percent|percentage|weight|share|ratio|yield)", re.IGNORECASE)
_AMOUNT_NAME = re.compile(r"(value|amount|price|cost|pnl|balance|total|fee|income|revenue)", re.IGNORECASE)


def _guess(name: str, values: list[Any]) -> str:
    present = [value for value in values if value is not None]
    if not present:
        return "text"
    if all(formats.as_number(value) is not None for value in present):
        if _PERCENT_NAME.search(name):
            return "percent"
        return "currency" if _AMOUNT_NAME.search(name) else "number"
    if all(formats.as_moment(value, ZoneInfo("UTC")) is not None for value in present):
        return "date"
    return "text"


def suggested_layout(fields: list[dict[str, Any]]) -> dict[str, Any]:
    """Every field a column, labelled and formatted by its guess; amounts in the row's currency when
    a field names it, and totalled."""
    currency_field = next((entry["field"] for entry in fields if _CURRENCY_NAME.search(entry["field"])), "")
    columns = []
    for entry in fields[:MAX_COLUMNS]:
        column: dict[str, Any] = {"field": entry["field"], "label": humanize(entry["field"]), "format": entry["format"]}
        if entry["format"] == "number" and entry.get("fractional") and currency_field:
            column["format"] = "currency"
        if column["format"] == "currency":
            if currency_field:
                column["currency_field"] = currency_field
            else:
                column["format"] = "number"
            column["total"] = True
        if entry["format"] == "percent":
            column["decimals"] = 1
            column["percent_points"] = bool(entry.get("percent_points"))
        columns.append(column)
    return {"columns": columns}
