"""Charts for the email: a report's declared charts drawn as PNG images (matplotlib, Agg).

Plain values in, PNG bytes out. Two kinds: a line over time (a date field against a number
field) and bars by category (a text field against the sum of a number field). Sized for an
email column 640 px wide, drawn at twice that for sharp screens; labelled, with the
period in the title.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from types import ModuleType
from typing import Any

# matplotlib (with numpy and PIL, ~60 MB) is imported where a chart is drawn, not here:
# beat imports this module through reporting.models and draws nothing (tests/test_beat_imports.py).

KINDS = {"line": "Line over time", "bar": "Bars by category"}
WIDTH_PX = 640  # the email's column
HEIGHT_PX = 300
SCALE = 2  # drawn at twice the size shown, for sharp screens
MAX_BARS = 12  # more categories than this: the largest, then "Other"
COLOURS = ("#1f5f99", "#d9822b")


class ChartError(Exception):
    """A chart cannot be drawn from this data; the message says why, in words."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ChartSpec:
    kind: str  # "line" or "bar"
    x: str  # the field along the bottom: a date (line) or a category (bar)
    y: str  # the number field
    title: str
    rows: str = ""  # dotted path to other rows in the response (e.g. "daily"); empty: the report's rows

    @classmethod
    def from_dict(cls, raw: Any) -> ChartSpec:
        """A chart from the report's JSON definition; ChartError names what is wrong."""
        if not isinstance(raw, dict):
            raise ChartError("Each chart must be an object with kind, x, y and title.")
        missing = [key for key in ("kind", "x", "y") if not str(raw.get(key) or "").strip()]
        if missing:
            raise ChartError(f"A chart lacks {', '.join(missing)}.")
        kind = str(raw["kind"]).strip()
        if kind not in KINDS:
            raise ChartError(f"Unknown chart kind '{kind}': use 'line' or 'bar'.")
        unknown = set(raw) - {"kind", "x", "y", "title", "rows"}
        if unknown:
            raise ChartError(f"A chart has unknown keys: {', '.join(sorted(unknown))}.")
        x, y = str(raw["x"]).strip(), str(raw["y"]).strip()
        title = str(raw.get("title") or "").strip() or f"{_label(y)} by {_label(x).lower()}"
        return cls(kind=kind, x=x, y=y, title=title, rows=str(raw.get("rows") or "").strip())

    def to_dict(self) -> dict[str, str]:
        shape = {"kind": self.kind, "x": self.x, "y": self.y, "title": self.title}
        return {**shape, "rows": self.rows} if self.rows else shape


@dataclass(frozen=True)
class Chart:
    spec: ChartSpec
    title: str  # as drawn, with the period
    png: bytes
    width: int = WIDTH_PX
    height: int = HEIGHT_PX


def parse_specs(raw: Any) -> list[ChartSpec]:
    """The report's `charts` JSON as specs; ChartError in words for a bad definition."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise ChartError('Charts must be a JSON list of objects, e.g. [{"kind": "line", "x": "date", …}].')
    return [ChartSpec.from_dict(item) for item in raw]


def rows_for(spec: ChartSpec, data: Any, report_rows: Sequence[Any]) -> Sequence[Any]:
    """The rows the chart draws: the report's, or the list at `spec.rows` in the response."""
    if not spec.rows:
        return report_rows
    node = data
    for key in spec.rows.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ChartError(f"The chart '{spec.title}' reads rows from '{spec.rows}', which is not in the data.")
        node = node[key]
    if not isinstance(node, list):
        raise ChartError(f"The chart '{spec.title}' reads rows from '{spec.rows}', which is not a list.")
    return node


def draw(spec: ChartSpec, rows: Sequence[Any], *, period_label: str, labels: dict[str, str] | None = None) -> Chart:
    """Draw one chart from the rows; ChartError when the fields are missing or not numbers.

    `labels`: what to call a field on an axis (a designed layout's column labels); else its name, capitalised.
    """
    title = f"{spec.title} — {period_label}"
    figure = load_matplotlib().figure.Figure(
        figsize=(WIDTH_PX / 100, HEIGHT_PX / 100), dpi=100 * SCALE, layout="constrained"
    )
    axes = figure.add_subplot()
    named = {field: (labels or {}).get(field) or _label(field) for field in (spec.x, spec.y)}
    if spec.kind == "line":
        _draw_line(axes, spec, rows, named)
    else:
        _draw_bars(axes, spec, rows, named)
    axes.set_title(title, fontsize=11, loc="left", fontweight="bold")
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(axis="y", color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return Chart(spec=spec, title=title, png=buffer.getvalue())


@cache
def load_matplotlib() -> ModuleType:
    """matplotlib with the parts drawing uses loaded, on its Agg backend (no display)."""
    import matplotlib
    import matplotlib.dates
    import matplotlib.figure
    import matplotlib.ticker

    matplotlib.use("Agg")  # before pyplot is imported anywhere
    return matplotlib


def _draw_line(axes, spec: ChartSpec, rows: Sequence[Any], named: dict[str, str]) -> None:
    # One point a date, the sum of its rows (as a bar sums its category's): held by date, not by row.
    by_date: dict[date, float] = defaultdict(float)
    for row in _with_fields(spec, rows):
        by_date[_as_date(spec.x, row)] += _as_number(spec.y, row)
    points = sorted(by_date.items())
    if not points:
        raise ChartError(f"The chart '{spec.title}' has no rows with both '{spec.x}' and '{spec.y}'.")
    xs, ys = zip(*points, strict=True)
    axes.plot(xs, ys, color=COLOURS[0], linewidth=2, marker="o" if len(xs) <= 31 else None, markersize=3)
    matplotlib = load_matplotlib()
    locator = matplotlib.dates.AutoDateLocator(maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator, show_offset=False))
    axes.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_thousands))
    axes.set_xlabel(named[spec.x])
    axes.set_ylabel(named[spec.y])


def _draw_bars(axes, spec: ChartSpec, rows: Sequence[Any], named: dict[str, str]) -> None:
    totals: dict[str, float] = defaultdict(float)
    for row in _with_fields(spec, rows):
        totals[str(row[spec.x])] += _as_number(spec.y, row)
    if not totals:
        raise ChartError(f"The chart '{spec.title}' has no rows with both '{spec.x}' and '{spec.y}'.")
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    if len(ranked) > MAX_BARS:
        ranked = [*ranked[: MAX_BARS - 1], ("Other", sum(value for _name, value in ranked[MAX_BARS - 1 :]))]
    names = [name for name, _value in reversed(ranked)]  # largest at the top
    values = [value for _name, value in reversed(ranked)]
    bars = axes.barh(names, values, color=COLOURS[0])
    axes.bar_label(bars, labels=[_thousands(value) for value in values], padding=3, fontsize=8)
    axes.xaxis.set_major_formatter(load_matplotlib().ticker.FuncFormatter(_thousands))
    axes.set_xlabel(named[spec.y])
    axes.margins(x=0.15)
    axes.grid(axis="x", color="#dddddd", linewidth=0.6)


def _with_fields(spec: ChartSpec, rows: Iterable[Any]) -> Iterable[dict]:
    for row in rows:
        if isinstance(row, dict) and row.get(spec.x) not in (None, "") and row.get(spec.y) not in (None, ""):
            yield row


def _as_number(field: str, row: dict) -> float:
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ChartError(f"'{field}' must be a number, but one row has {value!r}.")
    try:
        return float(value)
    except ValueError:
        raise ChartError(f"'{field}' must be a number, but one row has {value!r}.") from None


def _as_date(field: str, row: dict) -> date:
    value = row[field]
    try:
        return datetime.fromisoformat(str(value)) if "T" in str(value) else date.fromisoformat(str(value))
    except ValueError:
        raise ChartError(f"'{field}' must be a date such as 2026-11-30, but one row has {value!r}.") from None


def _thousands(value: float, _position: int | None = None) -> str:
    """Whole numbers with thousands separators (ticks a few thousand apart stay distinct); cents when small."""
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:,.2f}"


def _label(field: str) -> str:
    return field.rsplit(".", 1)[-1].replace("_", " ").capitalize()
