import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

import reporting
from reporting.periods import DAILY, MONTHLY, NONE, Period
from reporting.pipeline.charts import ChartSpec
from reporting.pipeline.render import RenderError, RenderRequest, columns_of, render, rows_to_csv

MAY_2026 = Period(MONTHLY, date(2026, 5, 1), date(2026, 5, 31))
REPORT = {"name": "Positions", "slug": "positions", "description": ""}

# Small templates of our own, so these tests do not depend on the project's real ones.
TEMPLATES = {
    "reports/plain.html": (
        "<h1>{{ report.name }}</h1><p>{{ period.label }}</p>"
        "<table>{% for row in table %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}"
        "</table>"
    ),
    "reports/with_text.html": "<p>{{ report.name }}</p>",
    "reports/with_text.txt": "{% autoescape off %}OWN TEXT {{ report.name }}: {{ rows|length }} rows"
    "{% endautoescape %}",
    "reports/escaping_text.html": "<p>{{ report.name }}</p>",
    "reports/escaping_text.txt": "{% for row in rows %}{{ row.name }}{% endfor %}",
    "reports/extra.html": "<a href='{{ site_url }}'>{{ period.label }}</a>",
    "reports/stamped.html": "<p>Generated {{ generated_at|date:'j M Y, H:i T' }}</p>",
    "reports/broken.html": "<p>{% if %}</p>",
    "reports/missing_variable.html": "<p>Grand total: {{ data.totals.grand|floatformat:2 }}</p>",
    "reports/capped.html": (
        "{{ table|length }} cells rows, {{ shown_rows|length }} shown of {{ rows|length }}, max {{ max_rows }}: "
        "{% for row in shown_rows %}{{ row.name }} {% endfor %}"
    ),
    "reporting/email/report.txt": (
        "{% autoescape off %}GENERIC {{ report.name }} — {{ period.label }}\n"
        "{% for row in table %}{% for cell in row %}{% if not forloop.first %} | {% endif %}{{ cell }}{% endfor %}\n"
        "{% endfor %}{% endautoescape %}"
    ),
}


@pytest.fixture
def templates(settings, tmp_path) -> Path:
    folder = tmp_path / "templates"
    for name, text in TEMPLATES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    # The project's engines (HTML, and plain text without escaping), reading only our folder.
    settings.TEMPLATES = [{**engine, "DIRS": [folder], "APP_DIRS": False} for engine in settings.TEMPLATES]
    return folder


def request_for(template: str = "reports/plain.html", **fields) -> RenderRequest:
    fields.setdefault("subject_template", "{{ report.name }} — {{ period.label }}")
    fields.setdefault("report", REPORT)
    fields.setdefault("period", MAY_2026)
    fields.setdefault("rows", [{"name": "Alpha", "value": 1}])
    fields.setdefault("data", {"rows": fields["rows"]})
    fields.setdefault("generated_at", datetime(2026, 6, 1, 7, 0, tzinfo=UTC))
    return RenderRequest(template_name=template, **fields)


def render_error(request: RenderRequest) -> RenderError:
    with pytest.raises(RenderError) as caught:
        render(request)
    return caught.value


def read_csv(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")))


# --- subject, body and text part ------------------------------------------------------


def test_it_renders_the_subject_with_the_period_label(templates):
    email = render(request_for())

    assert email.subject == "Positions — May 2026"


def test_it_does_not_html_escape_the_subject(templates):
    email = render(request_for(report={**REPORT, "name": "P&L <weekly>"}))

    assert email.subject == "P&L <weekly> — May 2026"


def test_it_renders_the_html_body_with_the_data(templates):
    email = render(request_for(rows=[{"name": "Alpha", "value": 1250.5}, {"name": "Beta", "value": 99}]))

    assert "<h1>Positions</h1><p>May 2026</p>" in email.html
    assert "<tr><td>Alpha</td><td>1250.5</td></tr><tr><td>Beta</td><td>99</td></tr>" in email.html


def test_it_escapes_data_in_the_html_body(templates):
    email = render(request_for(rows=[{"name": "<script>alert('x')</script>", "value": "A&B"}]))

    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in email.html
    assert "<td>A&amp;B</td>" in email.html


def test_it_uses_the_reports_own_text_template_when_there_is_one(templates):
    email = render(request_for("reports/with_text.html", rows=[{"a": 1}, {"a": 2}]))

    assert email.text == "OWN TEXT Positions: 2 rows"


def test_it_falls_back_to_the_generic_text_template(templates):
    email = render(request_for(rows=[{"name": "Alpha", "value": 1}, {"name": "Beta & Co", "value": 2}]))

    assert email.text == "GENERIC Positions — May 2026\nAlpha | 1\nBeta & Co | 2\n"


def test_it_does_not_html_escape_the_text_part(templates):
    email = render(request_for("reports/escaping_text.html", rows=[{"name": "Smith & Jones <Ltd>"}]))

    assert email.text == "Smith & Jones <Ltd>"


def test_it_passes_extra_context_to_the_templates(templates):
    email = render(request_for("reports/extra.html", context_extra={"site_url": "http://reports.example.test/"}))

    assert email.html == "<a href='http://reports.example.test/'>May 2026</a>"


def test_it_shows_times_in_the_reports_timezone(templates):
    generated_at = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)

    in_london = render(request_for("reports/stamped.html", generated_at=generated_at, timezone="Europe/London"))
    in_new_york = render(request_for("reports/stamped.html", generated_at=generated_at, timezone="America/New_York"))

    assert in_london.html == "<p>Generated 1 Jun 2026, 08:00 BST</p>"
    assert in_new_york.html == "<p>Generated 1 Jun 2026, 03:00 EDT</p>"


def test_it_renders_the_projects_own_generic_report_templates():
    names = ["reports/table.html", "reporting/email/report.txt"]
    folder = Path(reporting.__file__).parent / "templates"
    if not all((folder / name).exists() for name in names):
        pytest.skip("the project's report templates are not there yet")

    email = render(request_for("reports/table.html", rows=[{"instrument": "<script>x</script>", "value": 1250.5}]))

    assert email.subject == "Positions — May 2026"
    assert "&lt;script&gt;x&lt;/script&gt;" in email.html
    assert "<script>x</script>" not in email.html
    assert "May 2026" in email.text
    assert "instrument" in email.text


def test_it_lays_out_only_the_rows_the_email_shows_and_attaches_them_all(templates):
    rows = [{"name": f"R{number}", "value": number} for number in range(1, 8)]

    email = render(request_for("reports/capped.html", rows=rows, max_rows=3))

    assert email.html == "3 cells rows, 3 shown of 7, max 3: R1 R2 R3 "
    assert len(read_csv(email.attachments[0].content)) == 1 + 7


def test_it_shows_every_row_without_max_rows(templates):
    rows = [{"name": f"R{number}", "value": number} for number in range(1, 4)]

    email = render(request_for("reports/capped.html", rows=rows))

    assert email.html == "3 cells rows, 3 shown of 3, max None: R1 R2 R3 "


# --- CSV attachment -------------------------------------------------------------------


def test_it_attaches_the_rows_as_csv(templates):
    rows = [
        {"isin": "GB0002634946", "value": 1250.5},
        {"value": 99, "name": 'Apple, "Inc."', "tags": ["tech", "us"]},
        {"isin": None, "extra": {"rating": "AA", "score": 1.5}, "name": "Café Müller"},
    ]

    email = render(request_for(rows=rows))

    [attachment] = email.attachments
    assert attachment.filename == "positions_2026-05-01_2026-05-31.csv"
    assert attachment.mimetype == "text/csv"
    assert attachment.content.startswith(b"\xef\xbb\xbf")
    assert read_csv(attachment.content) == [
        ["isin", "value", "name", "tags", "extra"],
        ["GB0002634946", "1250.5", "", "", ""],
        ["", "99", 'Apple, "Inc."', '["tech", "us"]', ""],
        ["", "", "Café Müller", "", '{"rating": "AA", "score": 1.5}'],
    ]


def test_it_quotes_commas_and_quotes_in_csv():
    content = rows_to_csv([{"name": 'Apple, "Inc."', "note": "line one\nline two"}])

    assert content.decode("utf-8-sig") == 'name,note\r\n"Apple, ""Inc.""","line one\nline two"\r\n'


def test_it_writes_csv_of_list_rows_and_scalar_rows():
    assert read_csv(rows_to_csv([[1, "a"], [2, "b", True]])) == [
        ["column 1", "column 2", "column 3"],
        ["1", "a", ""],
        ["2", "b", "True"],
    ]
    assert read_csv(rows_to_csv([10, None, "x"])) == [["value"], ["10"], [""], ["x"]]


def test_it_writes_csv_of_many_rows_with_columns_that_come_and_go():
    rows = [{"a": 1, "b": "x"}] * 3 + [{"b": "y", "c": None}, {"a": 2, "b": "z"}, [7, 8, 9], "scalar"]

    assert read_csv(rows_to_csv(rows)) == [
        ["a", "b", "c", "column 1", "column 2", "column 3", "value"],
        *[["1", "x", "", "", "", "", ""]] * 3,
        ["", "y", "", "", "", "", ""],
        ["2", "z", "", "", "", "", ""],
        ["", "", "", "7", "8", "9", ""],
        ["", "", "", "", "", "", "scalar"],
    ]


def test_it_writes_a_header_only_csv_for_no_rows():
    assert rows_to_csv([]) == b"\xef\xbb\xbf\r\n"


# A value from the API that a spreadsheet would run as a formula (OWASP "CSV injection").
FORMULAS = ['=HYPERLINK("http://evil.test","x")', "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


def test_it_neutralises_csv_text_that_a_spreadsheet_would_run_as_a_formula():
    rows = [{"value": text} for text in FORMULAS]

    assert read_csv(rows_to_csv(rows)) == [["value"], *[["'" + text] for text in FORMULAS]]


def test_it_neutralises_formula_column_names_and_nested_values_in_csv():
    rows = [{"=cmd": "x", "ok": ["=a"]}, ["@x", 1]]

    assert read_csv(rows_to_csv(rows)) == [
        ["'=cmd", "ok", "column 1", "column 2"],
        ["x", '["=a"]', "", ""],
        ["", "", "'@x", "1"],
    ]


def test_it_keeps_numbers_as_numbers_in_csv():
    rows = [{"n": -20}, {"n": -1.5}, {"n": "-1250.50"}, {"n": "+3"}, {"n": "a-b"}, {"n": "- 2"}]

    # A negative number, or text that is only a number, cannot be a formula: left as it is.
    assert read_csv(rows_to_csv(rows)) == [["n"], ["-20"], ["-1.5"], ["-1250.50"], ["+3"], ["a-b"], ["'- 2"]]


def test_it_names_the_csv_after_a_single_day(templates):
    email = render(request_for(period=Period(DAILY, date(2026, 5, 14), date(2026, 5, 14))))

    assert email.attachments[0].filename == "positions_2026-05-14.csv"


def test_it_names_the_csv_after_the_snapshot_time(templates):
    at = datetime(2026, 6, 1, 0, 30, tzinfo=UTC)

    email = render(request_for(period=Period(NONE, date(2026, 6, 1), date(2026, 6, 1), at=at)))

    assert email.attachments[0].filename == "positions_2026-06-01_0030.csv"


def test_it_attaches_nothing_when_attach_csv_is_off(templates):
    email = render(request_for(attach_csv=False))

    assert email.attachments == []


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject_template", ["{{ report.name }}\nBcc: everyone@example.test", "{{ report.name }}\rX"], ids=["LF", "CR"]
)
def test_it_refuses_a_subject_with_a_line_break(templates, subject_template):
    error = render_error(request_for(subject_template=subject_template))

    assert error.message == "The subject would contain a line break, which email headers cannot carry."


def test_it_refuses_a_line_break_that_comes_from_the_data(templates):
    error = render_error(request_for(report={**REPORT, "name": "Positions\r\nBcc: everyone@example.test"}))

    assert "line break" in error.message


def test_it_refuses_an_empty_subject(templates):
    error = render_error(request_for(subject_template="{% if not report %}x{% endif %}  "))

    assert error.message == "The subject template rendered to an empty subject."


@pytest.mark.parametrize(
    ("where", "fields", "message"),
    [
        ("subject", {"subject_template": "Total {{ totals.grand }}"}, "The subject refers to 'totals.grand'"),
        ("body", {"template": "reports/missing_variable.html"}, "The body template refers to 'data.totals.grand'"),
    ],
)
def test_it_refuses_a_template_naming_a_variable_the_data_lacks(templates, where, fields, message):
    error = render_error(request_for(**fields))

    assert error.message.startswith(message)
    assert "{% firstof value" in error.message


def test_firstof_gives_an_absent_value_a_fallback(templates):
    email = render(request_for(subject_template='Total {% firstof data.totals.grand "n/a" %}'))

    assert email.subject == "Total n/a"


@pytest.mark.parametrize(
    ("subject_template", "words"),
    [
        ("{% if %}x{% endif %}", "Unexpected end of expression in if tag"),
        ("{{ report.name }}{% endif %}", "Invalid block tag"),
        ("{{ period|nosuchfilter }}", "Invalid filter: 'nosuchfilter'"),
    ],
)
def test_it_explains_a_syntax_error_in_the_subject(templates, subject_template, words):
    error = render_error(request_for(subject_template=subject_template))

    assert error.message.startswith("The subject template has an error: ")
    assert words in error.message


def test_it_explains_a_missing_body_template(templates):
    error = render_error(request_for("reports/no_such_report.html"))

    assert error.message == "The body template 'reports/no_such_report.html' does not exist."


def test_it_explains_a_syntax_error_in_the_body_template(templates):
    error = render_error(request_for("reports/broken.html"))

    assert error.message.startswith("The body template has an error: ")


def test_it_explains_a_missing_text_template(templates):
    (templates / "reporting/email/report.txt").unlink()

    error = render_error(request_for())

    assert error.message == "The text part template 'reports/plain.txt' does not exist."


# --- columns_of -----------------------------------------------------------------------


def test_it_lists_dict_columns_in_order_of_first_appearance():
    rows = [{"b": 1, "a": 2}, {"c": 3, "a": 4}, {"d": 5, "b": 6}]

    assert columns_of(rows) == ["b", "a", "c", "d"]


def test_it_names_list_columns_by_position_up_to_the_longest_row():
    assert columns_of([[1], [1, 2, 3], [1, 2]]) == ["column 1", "column 2", "column 3"]


def test_it_puts_scalar_rows_in_one_value_column():
    assert columns_of([1, "two", None, 4.5]) == ["value"]


def test_it_has_no_columns_without_rows():
    assert columns_of([]) == []


# --- charts and Excel -----------------------------------------------------------------------

DAILY_VALUES = [
    {"date": f"2026-05-{day:02d}", "value": 1000 + day, "class": "Equity" if day % 2 else "Bond"}
    for day in range(1, 32)
]


def test_it_draws_the_declared_charts_inside_the_email():
    email = render(
        request_for(
            template="reports/table.html",
            rows=DAILY_VALUES,
            charts=(
                ChartSpec("line", "date", "value", "Portfolio value"),
                ChartSpec("bar", "class", "value", "By class"),
            ),
        )
    )

    assert [image.filename for image in email.inline_images] == ["chart-1.png", "chart-2.png"]
    assert all(image.content.startswith(b"\x89PNG") and image.mimetype == "image/png" for image in email.inline_images)
    assert '<img src="cid:chart-1.png" width="592" alt="Portfolio value — May 2026"' in email.html
    assert 'alt="By class — May 2026"' in email.html
    assert "- Portfolio value — May 2026" in email.text
    assert [attachment.filename for attachment in email.files] == ["positions_2026-05-01_2026-05-31.csv"]


def test_a_chart_the_data_cannot_fill_fails_the_render_in_words():
    error = render_error(request_for(template="reports/table.html", charts=(ChartSpec("line", "day", "value", "V"),)))

    assert error.message == "Chart 1 cannot be drawn: The chart 'V' has no rows with both 'day' and 'value'."


def test_it_attaches_an_excel_workbook_beside_the_csv():
    from openpyxl import load_workbook

    email = render(request_for(template="reports/table.html", rows=DAILY_VALUES, attach_xlsx=True))

    _csv_file, workbook_file = email.files
    assert workbook_file.filename == "positions_2026-05-01_2026-05-31.xlsx"
    assert workbook_file.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = load_workbook(io.BytesIO(workbook_file.content)).active
    assert sheet.max_row == 32 and sheet["B2"].value == 1001 and sheet["A2"].value == datetime(2026, 5, 1)


def test_it_gives_the_parts_as_plain_text_that_a_page_must_escape(templates):
    # Django marks a template's output "safe"; shown in a page as such, script in the data would run there.
    email = render(request_for("reports/escaping_text.html", rows=[{"name": "<script>x</script>"}]))

    assert type(email.text) is str and type(email.html) is str and type(email.subject) is str
    assert email.text == "<script>x</script>"
