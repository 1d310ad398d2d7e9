"""The Excel attachment: typed cells, a header row, frozen panes and widths, read back with openpyxl."""

import io
from datetime import date, datetime

from openpyxl import load_workbook

from reporting.pipeline.xlsx import rows_to_xlsx

ROWS = [
    {"account": "Acme Corp", "value": 1250000.5, "units": 3, "as_of": "2026-11-20", "at": "2026-11-20T06:30:00Z"},
    {"account": "Bravo & Söhne", "value": -20, "units": None, "as_of": "2026-02-30", "at": "not a time"},
    {"account": "Nested", "value": 0, "units": 1, "as_of": "", "at": "2026-11-20 07:00", "extra": {"a": [1]}},
]
COLUMNS = ["account", "value", "units", "as_of", "at", "extra"]


def read(content: bytes):
    return load_workbook(io.BytesIO(content)).active


def test_it_writes_a_header_row_then_one_row_per_record_with_typed_cells():
    sheet = read(rows_to_xlsx(ROWS, COLUMNS, sheet_title="Portfolio", timezone="Europe/London"))

    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert values[0] == COLUMNS
    assert values[1] == ["Acme Corp", 1250000.5, 3, datetime(2026, 11, 20), datetime(2026, 11, 20, 6, 30), None]
    # Not a real date, not a time: kept as the text they are.
    assert values[2] == ["Bravo & Söhne", -20, None, "2026-02-30", "not a time", None]
    assert values[3][4] == datetime(2026, 11, 20, 7, 0)
    assert values[3][5] == '{"a": [1]}'
    assert sheet["D2"].number_format == "yyyy-mm-dd" and sheet["E2"].number_format == "yyyy-mm-dd hh:mm"
    assert sheet["A1"].font.bold


def test_it_shows_timestamps_in_the_reports_timezone():
    sheet = read(rows_to_xlsx([{"at": "2026-07-01T06:30:00+00:00"}], ["at"], sheet_title="x", timezone="Europe/London"))

    assert sheet["A2"].value == datetime(2026, 7, 1, 7, 30)  # BST


def test_it_freezes_the_header_and_sizes_the_columns():
    sheet = read(rows_to_xlsx(ROWS, COLUMNS, sheet_title="Portfolio: 2026/11", timezone="UTC"))

    assert sheet.freeze_panes == "A2"
    assert sheet.title == "Portfolio  2026 11"
    assert 14 <= sheet.column_dimensions["A"].width <= 20
    assert sheet.column_dimensions["C"].width == 8  # "units" is short: the minimum


def test_list_rows_and_empty_data_still_make_a_workbook():
    sheet = read(rows_to_xlsx([[1, "2026-01-31"], [2]], ["column 1", "column 2"], sheet_title="x"))
    assert [[cell.value for cell in row] for row in sheet.iter_rows()] == [
        ["column 1", "column 2"],
        [1, datetime(2026, 1, 31)],
        [2, None],
    ]
    assert date(2026, 1, 31)  # dates are read back by openpyxl as datetimes at midnight
    empty = read(rows_to_xlsx([], [], sheet_title="x"))
    assert empty.max_row == 1


FORMULAS = ['=HYPERLINK("http://evil.test","x")', "=1+2", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "#N/A"]


def test_it_writes_text_that_looks_like_a_formula_as_plain_text():
    rows = [{"value": text} for text in FORMULAS] + [{"value": -20}, {"value": -1.5}]

    sheet = read(rows_to_xlsx(rows, ["value"], sheet_title="x"))

    cells = [row[0] for row in sheet.iter_rows(min_row=2)]
    assert [(cell.value, cell.data_type) for cell in cells] == [
        *[(text, "s") for text in FORMULAS],  # text, never evaluated: the value exactly as the API sent it
        (-20, "n"),
        (-1.5, "n"),  # numbers stay numbers
    ]


def test_it_writes_a_formula_column_name_and_nested_values_as_text():
    sheet = read(rows_to_xlsx([{"=1+2": ["=x"]}], ["=1+2"], sheet_title="x"))

    assert (sheet["A1"].value, sheet["A1"].data_type) == ("=1+2", "s")
    assert (sheet["A2"].value, sheet["A2"].data_type) == ('["=x"]', "s")
