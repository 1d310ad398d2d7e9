"""The designed layout: what a staff member sets on the form is what the email, the CSV and the XLSX show."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from openpyxl import load_workbook

from reporting.models import Report
from reporting.periods import MONTHLY, Period
from reporting.pipeline import formats, layout
from reporting.pipeline.render import RenderError, RenderRequest, render
from reporting.stage_inputs import render_request_for
from tests import factories

OCTOBER = Period(MONTHLY, date(2026, 10, 1), date(2026, 10, 31))
ROWS = [
    {"ticker": "ACME", "asset_class": "Equity", "quantity": 120, "market_value": 15234.5, "ccy": "EUR",
     "day_pnl": -310.25, "weight": 0.1234, "as_of": "2026-10-31"},
    {"ticker": "BND1", "asset_class": "Bond", "quantity": 40, "market_value": "4020.10", "ccy": "EUR",
     "day_pnl": 12, "weight": 0.0321, "as_of": "2026-10-30"},
    {"ticker": "GLBX", "asset_class": "Equity", "quantity": 75, "market_value": 8900, "ccy": "EUR",
     "day_pnl": 55.5, "weight": 0.0722, "as_of": "2026-10-31"},
]  # fmt: skip
DATA = {"meta": {"as_of": "2026-10-31", "nav": 28154.6, "client": "Archer Ltd"}, "positions": ROWS}
LAYOUT = {
    "columns": [
        {"field": "ticker", "label": "Instrument"},
        {"field": "asset_class", "label": "Class"},
        {"field": "quantity", "label": "Units", "format": "number", "decimals": 0},
        {"field": "market_value", "label": "Value", "format": "currency", "currency": "EUR", "total": True},
        {"field": "day_pnl", "label": "Day P&L", "format": "currency", "currency": "EUR", "negative_red": True,
         "total": True},
        {"field": "weight", "label": "Weight", "format": "percent", "decimals": 1},
        {"field": "as_of", "label": "As of", "format": "date"},
    ],
    "sort": [{"field": "market_value", "descending": True}],
    "headline": [
        {"label": "Net asset value", "path": "meta.nav", "format": "currency", "currency": "EUR"},
        {"label": "Day P&L", "total_of": "day_pnl", "format": "currency", "currency": "EUR", "negative_red": True},
        {"label": "Positions", "row_count": True},
    ],
    "intro": "Dear {{ data.meta.client }}, your positions at the end of {{ period.label }}.",
}  # fmt: skip


def request(rows=ROWS, data=DATA, shape=LAYOUT, locale="en-GB", **fields) -> RenderRequest:
    fields.setdefault("attach_xlsx", True)
    return RenderRequest(
        template_name="reports/table.html",
        subject_template="Positions — {{ period.label }}",
        report={"name": "Positions", "slug": "positions", "description": ""},
        period=OCTOBER,
        data=data,
        rows=rows,
        generated_at=datetime(2026, 11, 1, 7, 0, tzinfo=UTC),
        layout=layout.parse(shape),
        locale=locale,
        **fields,
    )


def plain(text: str) -> str:
    """Babel's no-break and narrow no-break spaces as plain ones, to compare."""
    return text.replace("\xa0", " ").replace("\u202f", " ")


def csv_of(email) -> tuple[str, list[list[str]]]:
    [attachment] = [each for each in email.attachments if each.filename.endswith(".csv")]
    text = attachment.content.decode("utf-8-sig")
    dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;")
    return dialect.delimiter, list(csv.reader(io.StringIO(text, newline=""), delimiter=dialect.delimiter))


def xlsx_of(email):
    [attachment] = [each for each in email.attachments if each.filename.endswith(".xlsx")]
    return load_workbook(io.BytesIO(attachment.content)).active


# --- the email ----------------------------------------------------------------------------


def test_the_email_shows_the_labels_formats_sort_totals_and_headline_of_the_layout():
    email = render(request())
    html = email.html

    for label in ("Instrument", "Class", "Units", "Value", "Day P&amp;L", "Weight", "As of"):
        assert f">{label}</th>" in html
    assert "market_value" not in html and ">ticker<" not in html
    # Sorted by value, largest first: ACME (15,234.50), GLBX (8,900.00), BND1 (4,020.10, sent as text).
    assert html.index("ACME") < html.index("GLBX") < html.index("BND1")
    assert "€15,234.50" in html and "€4,020.10" in html and "12.3%" in html and "31 Oct 2026" in html
    assert "€28,154.60" in html  # value total, of the text "4020.10" too
    assert "Total (3 rows)" in html
    assert "-€310.25" in html and "color:#b42318" in html  # the negative P&L in red
    assert "Net asset value" in html and "€28,154.60" in html and "-€242.75" in html  # headline: path, total
    assert "Dear Archer Ltd, your positions at the end of October 2026." in html
    text = email.text
    assert "Net asset value: €28,154.60" in text and "Positions: 3" in text and "Day P&L: -€242.75" in text
    assert "€15,234.50" in text and "Instrument" in text


def test_a_headline_total_is_written_in_its_figures_format():
    laid = layout.lay_out(layout.parse(LAYOUT), DATA, ROWS, shown=0, locale="en-GB", zone=ZoneInfo("UTC"))

    assert [figure["text"] for figure in laid["headline"]] == ["€28,154.60", "-€242.75", "3"]


def test_the_same_layout_in_german_writes_numbers_amounts_and_dates_as_germans_do():
    html = plain(render(request(locale="de-DE")).html)
    assert "15.234,50 €" in html and "-310,25 €" in html and "31.10.2026" in html
    assert "12,3 %" in html


def test_subtotals_by_a_column_sum_each_group_and_the_total_sums_all():
    shape = {**LAYOUT, "subtotal_by": "asset_class", "headline": [], "intro": ""}
    html = render(request(shape=shape)).html
    bond, equity = html.index("Bond (1 row)"), html.index("Equity (2 rows)")
    assert html.index("BND1") < bond < html.index("ACME") < equity  # groups in order, each closed by its subtotal
    assert "€4,020.10" in html[bond : bond + 800] and "€24,134.50" in html[equity : equity + 900]
    assert "Total (3 rows)" in html[equity:]


def test_totals_are_of_every_row_even_those_the_email_leaves_out():
    html = render(request(max_rows=1)).html
    assert "ACME" in html and "GLBX" not in html
    assert "€28,154.60" in html and "Showing 1 of 3 rows" in html and "Totals are of all rows" in html


def test_amounts_in_several_currencies_are_totalled_each_never_added_together():
    rows = [
        {"name": "A", "amount": 100, "ccy": "EUR"},
        {"name": "B", "amount": 50.5, "ccy": "USD"},
        {"name": "C", "amount": 1, "ccy": "eur"},  # a lower-case code is still EUR
        {"name": "D", "amount": 7, "ccy": "<b>XX</b>"},  # not a currency: shown as a plain number
    ]
    shape = {
        "columns": [
            {"field": "name"},
            {"field": "amount", "format": "currency", "currency_field": "ccy", "total": True},
        ]
    }
    html = render(request(rows=rows, data={"rows": rows}, shape=shape)).html
    assert "€100.00" in html and "US$50.50" in html and ">7.00<" in html
    assert "€101.00 · US$50.50 · 7.00" in html
    assert "<b>XX</b>" not in html


def test_hostile_values_labels_and_intro_are_shown_as_text():
    rows = [{"name": "<script>alert(1)</script>", "value": "<img src=x onerror=alert(2)>"}]
    shape = {
        "columns": [
            {"field": "name", "label": "<i>Name</i>"},
            {"field": "value", "format": "number", "total": True},
        ],
        "intro": "<a href='javascript:x'>{{ data.note }}</a>",
    }
    email = render(request(rows=rows, data={"rows": rows, "note": "<b>hi</b>"}, shape=shape))
    assert "<script>" not in email.html and "<img src=x" not in email.html and "<i>Name" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html and "&lt;i&gt;Name&lt;/i&gt;" in email.html
    assert "&lt;a href=" in email.html and "&lt;b&gt;hi&lt;/b&gt;" in email.html
    assert "&lt;img src=x onerror=alert(2)&gt;" in email.html  # text in a number column is shown as it is


def test_an_api_shaped_differently_nested_fields_text_numbers_and_gaps():
    rows = [
        {"id": 1, "price": {"amount": "99.5", "currency": "GBP"}, "listed": "2026-10-01T09:30:00Z"},
        {"id": 2, "price": {"amount": None, "currency": "GBP"}},
        {"id": 3, "price": "n/a", "listed": "not a date"},
    ]
    shape = {
        "columns": [
            {"field": "id", "format": "number", "decimals": 0},
            {"field": "price.amount", "label": "Price", "format": "currency", "currency_field": "price.currency"},
            {"field": "listed", "format": "date", "date_style": "short"},
        ]
    }
    html = render(request(rows=rows, data={"rows": rows}, shape=shape, timezone="Europe/London")).html
    assert ">Listed</th>" in html  # a label made from the field's name
    assert "01/10/2026 10:30" in html  # the timestamp in the report's timezone (BST)
    assert "not a date" in html and html.count(">—<") >= 2  # missing values shown as a dash


def test_an_invalid_stored_layout_fails_the_run_in_words(db):
    report = factories.report(factories.data_source("http://127.0.0.1:1/"), template="reports/table.html")
    Report.objects.filter(pk=report.pk).update(layout={"columns": [{"field": "x", "format": "money"}]})
    report.refresh_from_db()
    with pytest.raises(RenderError, match="The report's layout is not valid: Layout, column 1, 'format'"):
        render_request_for(report, OCTOBER, {"data": {"positions": []}})


# --- the files ----------------------------------------------------------------------------


def test_the_csv_has_the_layouts_columns_labels_order_and_english_numbers():
    delimiter, rows = csv_of(render(request()))
    assert delimiter == ","
    assert rows[0] == ["Instrument", "Class", "Units", "Value (EUR)", "Day P&L (EUR)", "Weight (%)", "As of"]
    assert rows[1] == ["ACME", "Equity", "120", "15234.50", "-310.25", "12.3", "31/10/2026"]
    assert [row[0] for row in rows[1:]] == ["ACME", "GLBX", "BND1"]
    assert len(rows) == 4  # the data only: no totals row in the file


def test_the_csv_in_german_uses_decimal_commas_and_semicolons_and_still_neutralises_formulas():
    rows = [*ROWS, {"ticker": "=HYPERLINK(\"http://x\")", "asset_class": "-2+3", "quantity": -5,
                    "market_value": -1.5, "ccy": "EUR", "day_pnl": 0, "weight": 0, "as_of": "2026-10-31"}]  # fmt: skip
    delimiter, table = csv_of(render(request(rows=rows, data={**DATA, "positions": rows}, locale="de-DE")))
    assert delimiter == ";"
    assert table[1][:5] == ["ACME", "Equity", "120", "15234,50", "-310,25"]
    hostile = next(row for row in table if "HYPERLINK" in row[0])
    assert hostile[0].startswith("'=") and hostile[1] == "'-2+3"  # the API's text: neutralised
    assert hostile[2] == "-5" and hostile[3] == "-1,50"  # numbers the layout wrote: left as numbers
    assert table[1][6] == "31.10.2026"


def test_the_xlsx_has_the_labels_typed_values_and_number_formats():
    sheet = xlsx_of(render(request(locale="de-DE")))
    header = [cell.value for cell in sheet[1]]
    assert header == ["Instrument", "Class", "Units", "Value", "Day P&L", "Weight", "As of"]
    acme = sheet[2]
    assert acme[0].value == "ACME"
    assert acme[3].value == 15234.5 and acme[3].number_format == '#,##0.00 "€"'
    assert acme[4].number_format == '#,##0.00 "€";[Red]-#,##0.00 "€"'
    assert acme[5].value == pytest.approx(0.1234) and acme[5].number_format == "#,##0.0%"
    assert acme[6].value == datetime(2026, 10, 31) and acme[6].number_format == "dd.mm.yyyy"
    bond = sheet[4]
    assert bond[0].value == "BND1" and bond[3].value == pytest.approx(4020.10)  # "4020.10" became a number


# --- checking what is stored --------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, message",
    [
        ({"columns": [{"field": "a", "colour": "red"}]}, "Layout, column 1: unknown setting ('colour' was unexpected)"),
        ({"columns": [{"field": "a", "format": "money"}]}, "Layout, column 1, 'format': 'money' is not one of"),
        ({"columns": [{"field": "a", "format": "currency"}]}, "say which currency"),
        ({"columns": [{"field": "a", "format": "currency", "currency": "EURO"}]}, "is not a currency code"),
        ({"columns": [{"field": "a", "format": "currency", "currency": "ABC"}]}, "'ABC' is not an ISO 4217"),
        ({"columns": [{"field": "a", "total": True}]}, "only a number, currency or percent column can have a total"),
        ({"columns": [{"field": "a", "decimals": 9, "format": "number"}]}, "9 is greater than the maximum of 6"),
        ({"columns": [{"field": ""}]}, "'' is not a field name"),
        ({"columns": [{"field": f"f{n}"} for n in range(41)]}, "Layout, 'columns': at most 40 are allowed"),
        ({"columns": [{"field": "a"}], "headline": [{"label": "X", "path": "a", "row_count": True}]},
         "give it exactly one value"),
        ({"headline": [{"label": "X", "row_count": True}]}, "The layout has no columns"),
        ([1, 2], "is not of type 'object'"),
    ],
)  # fmt: skip
def test_a_layout_that_is_not_valid_is_refused_in_words(shape, message, db):
    assert message in layout.problems(shape)[0]
    report = factories.report(factories.data_source("http://127.0.0.1:1/"))
    report.layout = shape
    with pytest.raises(ValidationError) as refused:
        report.full_clean()
    assert message in str(refused.value.message_dict["layout"])


def test_no_layout_is_the_generic_table():
    assert layout.parse({}) is None and layout.parse(None) is None and layout.problems({}) == []


def test_every_offered_locale_writes_grouped_numbers_and_its_own_dates():
    for code, _name in formats.LOCALES:
        written = formats.display(1234567.891, formats.Format(kind="number", decimals=2), code)
        assert written.replace("\u202f", " ").replace("\xa0", " ") != "1234567.89", code
        assert "2026" in formats.display("2026-10-31", formats.Format(kind="date"), code)
        assert formats.csv_value("2026-03-05", formats.Format(kind="date"), code).count("2026") == 1
        assert formats.locale_problem(code) == ""
    assert formats.locale_problem("xx-YY")


def test_the_text_of_a_number_is_read_exactly_and_nothing_else_is():
    assert formats.as_number("1234.50") == formats.Decimal("1234.50")
    assert formats.as_number(0.1) == formats.Decimal("0.1")
    for not_a_number in (True, "1,234", "NaN", "inf", float("nan"), None, "", "12abc", [1]):
        assert formats.as_number(not_a_number) is None, not_a_number
    assert formats.as_moment("2026-02-30", ZoneInfo("UTC")) is None


# --- a sample for the designer ------------------------------------------------------------


def test_a_sample_answer_offers_its_lists_fields_numbers_and_a_suggested_layout():
    described = layout.describe_sample(DATA, "positions")
    assert described["lists"] == [{"path": "positions", "rows": 3}]
    assert {"path": "meta.nav", "value": "28154.6"} in described["numbers"]
    formats_of = {entry["field"]: entry["format"] for entry in described["fields"]}
    assert formats_of == {
        "ticker": "text", "asset_class": "text", "quantity": "number", "market_value": "currency",
        "ccy": "text", "day_pnl": "currency", "weight": "percent", "as_of": "date",
    }  # fmt: skip
    suggested = layout.parse(described["suggested"])
    value = next(column for column in suggested.columns if column.field == "market_value")
    assert value.label == "Market value" and value.format.currency_field == "ccy" and value.total
    assert render(request(shape=described["suggested"])).html.count("€") > 3


def test_a_sample_whose_records_path_is_wrong_has_no_fields_but_still_lists_what_is_there():
    described = layout.describe_sample({"data": {"items": [{"a": 1}]}}, "items")
    assert described["row_count"] is None and described["fields"] == []
    assert described["lists"] == [{"path": "data.items", "rows": 1}]


def test_numbers_past_any_real_amount_are_shown_as_sent_and_do_not_break_the_email_or_its_totals():
    rows = [
        {"name": "huge text", "value": "1e1000000"},  # would be a million digits written out
        {"name": "huge float", "value": 1e308},
        {"name": "tiny", "value": "1e-1000000"},
        {"name": "large", "value": "123456789012345678901234567.5"},
        {"name": "plain", "value": 2},
    ]
    shape = {"columns": [{"field": "name"}, {"field": "value", "format": "number", "total": True}]}
    email = render(request(rows=rows, data={"rows": rows}, shape=shape))
    assert ">1e1000000<" in email.html and ">1e+308<" in email.html  # as the text they are
    assert ">0.00<" in email.html and "123,456,789,012,345,678,901,234,567.50" in email.html
    assert "123,456,789,012,345,678,901,234,569.50" in email.html  # the total of what is a number, exactly
    _delimiter, table = csv_of(email)
    assert [row[1] for row in table[1:]] == ["1e1000000", "1e+308", "0.00", "123456789012345678901234567.50", "2.00"]
