"""An Excel workbook of a report's rows: typed cells, a header row, frozen panes, sensible widths.

openpyxl in write-only mode, so a large report streams into the file rather than
building every cell in memory first. Numbers stay numbers, ISO dates and timestamps in
the data become Excel dates (timestamps in the report's timezone: Excel has none).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import IO, TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from reporting.pipeline import formats
from reporting.pipeline import layout as layout_module

# openpyxl is imported in the functions that write a workbook, not here: beat imports this
# module through reporting.models and writes none (tests/test_beat_imports.py).
if TYPE_CHECKING:
    from openpyxl.cell import Cell

MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
WIDTH_SAMPLE_ROWS = 200  # column widths from the header and the first rows
MIN_WIDTH, MAX_WIDTH = 8, 60
MAX_CELL_CHARS = 32_767  # Excel's limit per cell
MAX_ROWS = 1_048_575  # Excel's 1,048,576 rows a worksheet, less the header
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # characters an XLSX file cannot hold
# First characters of text that openpyxl (or Excel) would not keep as plain text: formulas, error codes.
_NOT_PLAIN_TEXT = frozenset("=+-@#\t\r")
DATE_FORMAT = "yyyy-mm-dd"
DATETIME_FORMAT = "yyyy-mm-dd hh:mm"


class TooManyRows(Exception):
    """More rows than a worksheet holds; `message` says so in words."""

    def __init__(self, rows: int):
        self.message = (
            f"The XLSX attachment cannot hold {rows:,} rows: a worksheet holds at most {MAX_ROWS:,} below its "
            "header. Attach the CSV instead, or ask the data source for fewer rows."
        )
        super().__init__(self.message)


def _check_fits(rows: Sequence[Any]) -> None:
    if len(rows) > MAX_ROWS:
        raise TooManyRows(len(rows))


def rows_to_xlsx(rows: Sequence[Any], columns: list[str], *, sheet_title: str, timezone: str = "UTC") -> bytes:
    """The rows as an .xlsx file: one header row, then a row per record, cells typed."""
    buffer = io.BytesIO()
    write_xlsx(buffer, rows, columns, sheet_title=sheet_title, timezone=timezone)
    return buffer.getvalue()


def write_xlsx(
    out: IO[bytes], rows: Sequence[Any], columns: list[str], *, sheet_title: str, timezone: str = "UTC"
) -> None:
    """`rows_to_xlsx`, written to `out` (openpyxl's write-only mode: one row in memory at a time)."""
    _check_fits(rows)
    from openpyxl import Workbook
    from openpyxl.utils import get_column_letter

    zone = ZoneInfo(timezone)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=_sheet_title(sheet_title))
    sheet.freeze_panes = "A2"
    for index, width in enumerate(_widths(rows, columns), start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.append(_header(sheet, columns))
    for row in rows:
        sheet.append([_typed(sheet, _value(row, index, column), zone) for index, column in enumerate(columns)])
    workbook.save(out)


def designed_xlsx(
    rows: Sequence[Any], layout: layout_module.Layout, *, locale: str, sheet_title: str, zone: ZoneInfo
) -> bytes:
    """The rows as a designed layout has them: its columns, labels and order; numbers and dates as
    Excel types with number formats from the layout and the locale (Excel shows its user's separators)."""
    buffer = io.BytesIO()
    write_designed_xlsx(buffer, rows, layout, locale=locale, sheet_title=sheet_title, zone=zone)
    return buffer.getvalue()


def write_designed_xlsx(
    out: IO[bytes], rows: Sequence[Any], layout: layout_module.Layout, *, locale: str, sheet_title: str, zone: ZoneInfo
) -> None:
    """`designed_xlsx`, written to `out`."""
    _check_fits(rows)
    from openpyxl import Workbook
    from openpyxl.utils import get_column_letter

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=_sheet_title(sheet_title))
    sheet.freeze_panes = "A2"
    labels = [column.label for column in layout.columns]
    widths = [len(label) + 2 for label in labels]
    for row in rows[:WIDTH_SAMPLE_ROWS]:
        for index, column in enumerate(layout.columns):
            value = layout_module.value_in(row, column.field)
            currency = formats.currency_of(column.format, row)
            shown = formats.display(value, column.format, locale, currency=currency, zone=zone)
            widths[index] = max(widths[index], len(shown) + 2)
    for index, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = float(min(MAX_WIDTH, max(MIN_WIDTH, width)))
    sheet.append(_header(sheet, labels))
    for row in rows:
        sheet.append([_designed_cell(sheet, row, column, locale, zone) for column in layout.columns])
    workbook.save(out)


def _designed_cell(sheet, row: Any, column: layout_module.Column, locale: str, zone: ZoneInfo) -> Any:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment

    value = layout_module.value_in(row, column.field)
    typed, converted = formats.xlsx_value(value, column.format, zone)
    if not converted:  # not what the format expects (text in a number column): as any cell
        return _typed(sheet, value, zone)
    cell = WriteOnlyCell(sheet, value=typed)
    currency = formats.currency_of(column.format, row) if column.format.kind == "currency" else ""
    cell.number_format = formats.xlsx_number_format(
        column.format, locale, currency, timestamp=isinstance(typed, datetime)
    )
    if column.align in ("left", "center", "right"):
        cell.alignment = Alignment(horizontal=column.align)
    return cell


def _header(sheet, columns: list[str]) -> list[Cell]:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font, PatternFill

    cells = []
    for column in columns:
        cell = WriteOnlyCell(sheet, value=_clean(column))
        cell.data_type = "s"  # a column name from the API, never a formula
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="E8EEF5")
        cell.alignment = Alignment(vertical="top")
        cells.append(cell)
    return cells


def _typed(sheet, value: Any, zone: ZoneInfo) -> Any:
    """A plain value for numbers and text; a cell with a number format for dates."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict | list):
        return _text_cell(sheet, json.dumps(value, ensure_ascii=False))
    text = str(value)
    moment = _as_moment(text, zone)
    if moment is None:
        return _text_cell(sheet, text)
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, value=moment)  # type: ignore[arg-type]
    cell.number_format = DATETIME_FORMAT if isinstance(moment, datetime) else DATE_FORMAT
    return cell


def _as_moment(text: str, zone: ZoneInfo) -> date | datetime | None:
    try:
        if _DATE.match(text):
            return date.fromisoformat(text)
        if _DATETIME.match(text):
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return moment.astimezone(zone).replace(tzinfo=None) if moment.tzinfo else moment
    except ValueError:  # e.g. 2026-02-30: keep it as the text it is
        return None
    return None


def _widths(rows: Sequence[Any], columns: list[str]) -> list[float]:
    widths = [len(column) + 2 for column in columns]
    for row in rows[:WIDTH_SAMPLE_ROWS]:
        for index, column in enumerate(columns):
            value = _value(row, index, column)
            shown = 16 if isinstance(value, str) and _DATETIME.match(value) else len(str(value or ""))
            widths[index] = max(widths[index], shown + 2)
    return [float(min(MAX_WIDTH, max(MIN_WIDTH, width))) for width in widths]


def _value(row: Any, index: int, column: str) -> Any:
    if isinstance(row, dict):
        return row.get(column)
    if isinstance(row, list):
        return row[index] if index < len(row) else None
    return row if index == 0 else None


def _text_cell(sheet, text: str) -> Any:
    """Text as a string cell, whatever it looks like: never a formula, an error or a number.

    openpyxl makes a string starting with "=" a live formula (and "#N/A" an error); a
    cell typed "s" is shown as the text the API sent and never evaluated. A cell object
    costs more than a plain value, so only text openpyxl would not type as a string gets one.
    """
    text = _clean(text)
    if text[:1] not in _NOT_PLAIN_TEXT:
        return text
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, value=text)
    cell.data_type = "s"
    return cell


def _clean(text: str) -> str:
    return _ILLEGAL.sub("", text)[:MAX_CELL_CHARS]


def _sheet_title(title: str) -> str:
    cleaned = re.sub(r"[\[\]:*?/\\]", " ", title).strip() or "Report"
    return cleaned[:31]
