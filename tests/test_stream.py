"""Streaming a large answer's rows (reporting.pipeline.stream): what json.loads would read, never all held.

The reader is checked against json.loads on awkward JSON, with chunks small enough that every
value, escape and multi-byte character is cut somewhere; and against what a hostile data
source can send: truncated or malformed rows, deep nesting, a row too large, text not UTF-8.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from decimal import Decimal

import pytest

from reporting.pipeline import conditions, fetch, layout, rowstore, stream

LIMITS = {"max_depth": 64, "max_values": 5_000_000}

AWKWARD_ROWS = [
    {"id": 1, "name": "Zoë \u00e9\u4e2d\U0001f600", "amount": -12.5e-3, "note": 'quote " and \\ backslash'},
    {"id": 2, "name": "brackets ] } [ { and , commas", "amount": 12345678901234567890, "nested": {"a": [1, [2]]}},
    {"id": 3, "name": '\\"', "amount": None, "flag": True, "escaped": "\u2028\t\n/\\/"},
    {"id": 4, "name": "", "amount": 0, "list": [], "object": {}},
    [1, "two", None],
    "a row that is only text",
    7,
    None,
]


def loaded(
    text: str | bytes, records_path: str, *, csv_lines: bool = False, **limits
) -> tuple[object, rowstore.RowStream]:
    body = io.BytesIO(text.encode() if isinstance(text, str) else text)
    data = stream.load(body, records_path, **{**LIMITS, **limits}, csv_lines=csv_lines)
    return data, fetch.select_rows(data, records_path)


@pytest.fixture(params=[1, 3, 7, 64, stream.CHUNK])
def chunk(request, monkeypatch):
    """Chunks of this many bytes: small ones cut every value somewhere."""
    monkeypatch.setattr(stream, "CHUNK", request.param)
    return request.param


@pytest.mark.parametrize(
    ("document", "records_path"),
    [
        ({"as_of": "2026-11-20", "data": {"trades": AWKWARD_ROWS}, "after": {"total": 3}}, "data.trades"),
        (AWKWARD_ROWS, ""),
        ({"results": [{"skip": [1, 2]}, {"rows": AWKWARD_ROWS, "n": 8}]}, "results.1.rows"),
        ({"data": {"trades": []}, "meta": None}, "data.trades"),
    ],
    ids=["nested", "root list", "through a list index", "no rows"],
)
@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
def test_the_rows_and_the_rest_read_as_json_loads_reads_them(document, records_path, indent, chunk):
    text = "\ufeff" + json.dumps(document, indent=indent, ensure_ascii=False)
    expected = json.loads(text.removeprefix("\ufeff"))

    data, rows = loaded(text, records_path)

    assert list(rows) == fetch.select_rows(expected, records_path)
    assert len(rows) == len(fetch.select_rows(expected, records_path))
    out = io.BytesIO()
    stream.write(data, out)
    assert json.loads(out.getvalue()) == expected  # everything outside the rows is kept, in place


def test_a_key_given_twice_keeps_its_last_value_as_json_loads_does():
    data, rows = loaded('{"rows": [1, 2], "x": 1, "rows": [3, 4, 5]}', "rows")

    assert list(rows) == [3, 4, 5]
    assert data["x"] == 1


def test_the_rows_are_read_by_index_slice_and_truth_and_not_backwards():
    _data, rows = loaded(json.dumps({"r": list(range(10))}), "r")

    assert (rows[0], rows[9], rows[-1], rows[-10]) == (0, 9, 9, 0)
    assert rows[2:5] == [2, 3, 4] and rows[:3] == [0, 1, 2] and rows[::4] == [0, 4, 8]
    assert bool(rows) and not loaded('{"r": []}', "r")[1]
    with pytest.raises(IndexError):
        rows[10]
    with pytest.raises(rowstore.OutOfOrder):
        reversed(rows)
    with pytest.raises(rowstore.OutOfOrder):
        rows[::-1]


def test_two_readers_of_the_same_rows_do_not_disturb_each_other(chunk):
    _data, rows = loaded(json.dumps({"r": [{"n": n} for n in range(50)]}), "r")

    pairs = [(outer["n"], inner["n"]) for outer in rows for inner in rows if inner["n"] == outer["n"] + 1]

    assert pairs == [(n, n + 1) for n in range(49)]


# --- hostile answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"data": {"trades": [{"a": 1}, {"a": 2', "Unexpected end of the answer"),
        ('{"data": {"trades": [{"a": 1}, {"a": 2}', "Unexpected end of the answer"),
        ('{"data": {"trades": [{"a": 1}, {"a" 2}, {"a": 3}]}}', "Expecting ':' delimiter"),
        ('{"data": {"trades": [{"a": 1} {"a": 2}]}}', "Expecting ',' delimiter"),
        ('{"data": {"trades": [{"a": 1}, ]}}', "Expecting value"),
        ('{"data": {"trades": [1, 2]}} trailing', "Extra data"),
        ('{"data": {"trades": [{"a": "unterminated}]}}', "Unterminated string"),
        ("", "Unexpected end of the answer"),
    ],
)
def test_malformed_json_is_refused_with_where_it_went_wrong(text, words, chunk):
    with pytest.raises(stream.JsonError) as caught:
        loaded(text, "data.trades")

    assert caught.value.message.startswith("The data source's answer is not valid JSON (")
    assert words in caught.value.message and "at byte" in caught.value.message


def test_a_malformed_row_early_in_a_long_answer_is_refused_without_reading_the_rest(monkeypatch):
    monkeypatch.setattr(stream, "CHUNK", 1024)
    rows = ",".join(json.dumps({"n": n, "pad": "x" * 50}) for n in range(20_000))
    text = '{"r": [{"n": -1, "bad" 1}, ' + rows + "]}"
    body = io.BytesIO(text.encode())

    with pytest.raises(stream.JsonError) as caught:
        stream.load(body, "r", **LIMITS)

    assert "Expecting ':' delimiter at byte 23" in caught.value.message
    assert body.tell() < 10 * 1024  # stopped at the first chunks, not at the end of 1.2 MB


def test_a_row_nesting_deeper_than_the_limit_is_refused():
    deep = "[" * 70 + "]" * 70
    with pytest.raises(stream.JsonError) as caught:
        loaded('{"r": [1, ' + deep + "]}", "r")

    assert "nests deeper than 64 levels" in caught.value.message


def test_nesting_hidden_by_brackets_inside_strings_is_still_counted():
    hidden = '{"x": "]", "y": ' * 40 + "1" + "}" * 40
    with pytest.raises(stream.JsonError) as caught:
        loaded('{"r": [' + hidden + "]}", "r", max_depth=20)

    assert "nests deeper than 20 levels" in caught.value.message


def test_a_row_nesting_past_pythons_own_limit_is_refused_in_words():
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(stream.JsonError) as caught:
        loaded('{"r": [' + deep + "]}", "r", max_depth=200_000)

    assert caught.value.message == "The data source's answer nests too deep to read."


def test_a_row_larger_than_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(stream, "MAX_ROW_CHARS", 1024 * 1024)
    with pytest.raises(stream.JsonError) as caught:
        loaded('{"r": [1, "' + "x" * (3 * 1024 * 1024) + '"]}', "r")

    assert caught.value.message == "A row of the data source's answer is larger than 1 MB, more than a report reads."


def test_too_many_values_outside_the_rows_are_refused_but_many_rows_are_not():
    many_rows = {"r": [{"a": n, "b": n} for n in range(2_000)]}
    assert len(loaded(json.dumps(many_rows), "r", max_values=1000)[1]) == 2_000

    with pytest.raises(stream.JsonError) as caught:
        loaded(json.dumps({"other": list(range(2_000)), "r": []}), "r", max_values=1000)

    assert "more than 1,000 values outside its rows" in caught.value.message


def test_text_that_is_not_utf8_is_refused_in_words():
    with pytest.raises(stream.JsonError) as caught:
        loaded(b'{"r": ["caf\xe9"]}', "r")

    assert caught.value.message == "The data source's answer is not valid UTF-8 text."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"data": {"other": []}}',
            "The records path 'data.trades' was not found in the data: 'data' has no 'trades'.",
        ),
        (
            '{"data": {"trades": {"a": 1}}}',
            "The records path 'data.trades' points to an object, not to a list of rows.",
        ),
        ('{"data": "text"}', "The records path 'data.trades' was not found in the data: 'data' has no 'trades'."),
    ],
)
def test_an_answer_of_another_shape_gets_the_records_path_error(text, message):
    body = io.BytesIO(text.encode())
    data = stream.load(body, "data.trades", **LIMITS)

    with pytest.raises(fetch.FetchError) as caught:
        fetch.select_rows(data, "data.trades")

    assert caught.value.message == message


def test_utf16_answers_are_not_streamed():
    assert stream.streamable(b"{}")
    assert stream.streamable("\ufeff{}".encode())
    assert not stream.streamable("{}".encode("utf-16"))


# --- what the limits count ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "x\\\\", "b": [1, {"c": "]]]"}]}',
        '["\\"[", "\\\\\\"{", {"k\\"": [[]]}]',
        '{"a": "\u4e2d[\U0001f600", "b": [1, 2, 3]}',
        "[1, 2, [3, [4, [5]]]]",
    ],
)
def test_the_structure_is_what_the_strings_hide_taken_out(text):
    regex_string = r'"[^"\\]*(?:\\.[^"\\]*)*"'  # the whole-string regex the limits used before
    import re

    bare = re.sub(regex_string, '""', text)
    expected = re.sub(r"[^\[\]{},]", "", bare).replace("{", "[").replace("}", "]")

    assert stream.structure(text).decode() == expected
    assert stream.value_count(stream.structure(text)) == bare.count(",") + bare.count("[") + bare.count("{") + 1


# --- sorting and hashing without holding the rows -----------------------------------------------


def test_the_external_sort_is_the_stable_sort_of_the_layout():
    generator = random.Random(7)
    rows = [
        {"n": n, "cls": generator.choice(["Bond", "Equity", None]), "v": generator.choice([1, 2.5, "3", None, "x"])}
        for n in range(500)
    ]
    shape = layout.parse(
        {
            "columns": [{"field": "n"}, {"field": "cls"}, {"field": "v"}],
            "sort": [{"field": "v", "descending": True}, {"field": "n", "descending": False}],
            "subtotal_by": "cls",
        }
    )
    _data, streamed = loaded(json.dumps({"r": rows}), "r")

    in_memory = layout.order(rows, shape)
    merged = rowstore.sorted_rows(streamed, layout._row_key(shape), run_size=37)  # 14 runs merged

    assert list(merged) == in_memory
    assert list(layout.order(streamed, shape)) == in_memory
    assert layout.order(streamed, shape) is layout.order(streamed, shape)  # sorted once, then kept


def test_the_layouts_order_is_what_it_was_before_one_key_replaced_several_sorts():
    rows = [{"n": n, "v": v} for n, v in enumerate([3, None, "b", 1, "A", None, 3, Decimal("2.5"), "a"])]
    shape = layout.parse({"columns": [{"field": "n"}, {"field": "v"}], "sort": [{"field": "v", "descending": True}]})

    before = list(rows)  # the two stable sorts layout.order made before
    before.sort(key=lambda row: layout._sort_key(row["v"]), reverse=True)
    before.sort(key=lambda row: row["v"] is None)

    assert layout.order(rows, shape) == before


def test_the_rows_hash_is_the_same_streamed_and_as_one_list():
    rows = AWKWARD_ROWS * 600  # several batches of a thousand
    _data, streamed = loaded(json.dumps({"r": rows}), "r")
    whole = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)

    assert conditions.rows_hash(streamed) == hashlib.sha256(whole.encode("utf-8", "surrogatepass")).hexdigest()
    assert conditions.rows_hash(rows) == conditions.rows_hash(streamed)
    assert conditions.rows_hash([]) == hashlib.sha256(b"[]").hexdigest()


@pytest.mark.parametrize("batch", [1, 3, 1000])
def test_rows_kept_in_batches_read_back_exactly_by_index_and_slice(monkeypatch, batch):
    monkeypatch.setattr(rowstore, "BATCH", batch)
    rows = [{"n": n, "lone": "\ud800", "big": 2**80, "f": 0.1 + n} for n in range(20)] + [None, True, "x", [1.5]]
    text = json.dumps({"r": rows})  # the lone surrogate goes as the escape \ud800, as json.loads reads it

    _data, kept = loaded(text, "r")

    assert list(kept) == json.loads(text)["r"]
    assert [kept[index] for index in range(-len(rows), len(rows))] == rows + rows
    for start in range(0, 25, 4):
        for stop in range(start, 26, 5):
            assert kept[start:stop] == rows[start:stop]
            assert kept[start:stop:3] == rows[start:stop:3]


@pytest.mark.parametrize(
    ("late_row", "plain"),
    [
        ({"name": "Acme", "n": -5, "ok": True, "none": None}, True),
        ({"name": '=HYPERLINK("http://x")', "n": 1}, False),
        ({"name": "-1250.50", "n": 1}, False),
        ({"name": "\tTab", "n": 1}, False),
        ({"name": "@SUM(A1)", "n": 1}, False),
        ({"name": {"nested": 1}, "n": 1}, False),
        ({"=key": "x", "n": 1}, False),
    ],
)
@pytest.mark.parametrize("csv_lines", [False, True], ids=["csv after", "csv while read"])
def test_the_csv_of_streamed_rows_converts_what_it_must_and_skips_the_check_when_nothing_needs_it(
    late_row, plain, csv_lines
):
    from reporting.pipeline import render

    rows = [{"name": f"Position {n}", "n": n, "ok": False, "none": None} for n in range(3_000)] + [late_row]
    _data, streamed = loaded(json.dumps({"r": rows}), "r", csv_lines=csv_lines)

    assert streamed.plain is plain
    # The CSV written while the rows were read is kept only when no cell needed converting.
    assert (streamed.csv_lines is not None) is (csv_lines and plain and late_row.keys() == rows[0].keys())
    assert render.rows_to_csv(streamed, render.columns_of(streamed)) == render.rows_to_csv(rows)


# --- rows of objects, decoded a buffer at a time ----------------------------------------------

FLAT_ROWS = [
    {"id": n, "name": f"Position {n}", "amount": n * 1.5, "ok": n % 2 == 0, "none": None} for n in range(5_000)
]
REORDERED = {"amount": 0, "id": -1, "none": None, "ok": True, "name": "the same keys in another order"}


@pytest.mark.parametrize(
    "odd_row",
    [
        {"id": -1, "name": '}, {"id": 99}, {', "amount": 0, "ok": False, "none": None},  # a row boundary in a string
        {"id": -1, "name": "] } ], [", "amount": 0, "ok": False, "none": None},
        {"id": -1, "name": {"nested": {"deeper": [{"x": 1}, {"y": 2}]}}, "amount": 0, "ok": False, "none": None},
        [1, "a row that is a list"],
        "a row that is only text",
        None,
        REORDERED,
        {"id": -1, "extra": "a column the other rows lack"},
    ],
    ids=["boundary in a string", "brackets in a string", "nested", "list", "text", "null", "reordered", "extra"],
)
@pytest.mark.parametrize("at", [0, 1_234, 4_999])
@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
@pytest.mark.parametrize("csv_lines", [False, True], ids=["csv after", "csv while read"])
def test_rows_of_objects_read_a_buffer_at_a_time_are_what_json_loads_reads(odd_row, at, indent, csv_lines, monkeypatch):
    from reporting.pipeline import render

    monkeypatch.setattr(stream, "CHUNK", 4096)  # many buffers, most cut inside a row
    rows = [*FLAT_ROWS[:at], odd_row, *FLAT_ROWS[at:]]
    text = json.dumps({"as_of": "x", "r": rows, "after": {"a": {}, "b": [{"c": 1}, {"d": 2}]}}, indent=indent)

    data, streamed = loaded(text, "r", csv_lines=csv_lines)

    assert list(streamed) == rows
    assert data["after"] == {"a": {}, "b": [{"c": 1}, {"d": 2}]}
    assert streamed.columns == render.columns_of(rows)
    assert streamed.complete is (isinstance(odd_row, dict) and odd_row.keys() == FLAT_ROWS[0].keys())
    assert (streamed.csv_lines is not None) is (csv_lines and streamed.complete and streamed.plain)
    assert render.rows_to_csv(streamed, streamed.columns) == render.rows_to_csv(rows)


def test_a_malformed_row_among_many_is_refused_at_the_byte_json_loads_names():
    good = ",".join(json.dumps(row) for row in FLAT_ROWS)
    text = '{"r": [' + good + ', {"id": 1 "name": 2}, ' + good + "]}"
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)

    with pytest.raises(stream.JsonError) as caught:
        loaded(text, "r")

    assert f"(Expecting ',' delimiter at byte {expected.value.pos:,})" in caught.value.message


def test_a_row_nesting_too_deep_after_many_flat_ones_is_refused():
    deep = '{"a": ' * 70 + "1" + "}" * 70
    with pytest.raises(stream.JsonError) as caught:
        loaded(json.dumps({"r": FLAT_ROWS})[:-2] + ", " + deep + ', {"id": 0}]}', "r")

    assert "nests deeper than 64 levels" in caught.value.message


def test_a_row_of_objects_nesting_past_pythons_own_limit_is_refused_in_words():
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(stream.JsonError) as caught:
        loaded('{"r": [{"id": 0}, ' + deep + ', {"id": 1}]}', "r", max_depth=200_000)

    assert caught.value.message == "The data source's answer nests too deep to read."


@pytest.mark.parametrize("csv_lines", [False, True], ids=["csv after", "csv while read"])
def test_the_csv_of_rows_with_one_column_each_has_one_cell_a_row(csv_lines):
    from reporting.pipeline import render

    rows = [{"only": f'text, with a comma and a quote " {n}'} for n in range(3_000)]
    _data, streamed = loaded(json.dumps({"r": rows}), "r", csv_lines=csv_lines)

    assert streamed.complete
    assert render.rows_to_csv(streamed, streamed.columns) == render.rows_to_csv(rows)
    assert render.rows_to_csv(streamed, streamed.columns).count(b"\r\n") == 3_001


# --- the CSV written in the pass that reads the rows --------------------------------------------


def test_the_csv_written_while_the_rows_are_read_is_the_csv_written_after(monkeypatch):
    from reporting.pipeline import render

    monkeypatch.setattr(stream, "CHUNK", 4096)  # the rows are read in many steps
    monkeypatch.setattr(rowstore, "READ_BYTES", 4096)  # … and the CSV's bytes read back in many
    monkeypatch.setattr(rowstore, "CSV_TEXT_CHARS", 4096)  # the CSV's text is written out many times
    rows = [{**row, "name": f'Zoë, "{row["name"]}" and\n中文 \U0001f600'} for row in FLAT_ROWS]
    _data, after = loaded(json.dumps({"r": rows}), "r")
    _data, while_read = loaded(json.dumps({"r": rows}), "r", csv_lines=True)

    assert after.csv_lines is None and while_read.csv_lines is not None
    written = render.rows_to_csv(while_read, while_read.columns)
    assert written == render.rows_to_csv(after, after.columns) == render.rows_to_csv(rows)
    assert written == render.rows_to_csv(while_read, while_read.columns)  # read again: the same
    assert written.count(b"\r\n") == 1 + len(rows)
    assert written.count(b"\n") == 1 + 2 * len(rows)  # each name holds a line break, quoted


def test_the_csv_written_while_the_rows_are_read_is_not_used_for_other_columns():
    from reporting.pipeline import render

    _data, streamed = loaded(json.dumps({"r": FLAT_ROWS}), "r", csv_lines=True)

    assert streamed.csv_lines is not None
    assert render.rows_to_csv(streamed, ["name", "id"]) == render.rows_to_csv(FLAT_ROWS, ["name", "id"])


def test_text_utf8_cannot_carry_fails_the_csv_as_before_and_not_the_reading():
    from reporting.pipeline import render

    text = json.dumps({"r": [*FLAT_ROWS, {**FLAT_ROWS[0], "name": "\ud800"}]})  # a lone surrogate, escaped

    _data, streamed = loaded(text, "r", csv_lines=True)

    assert streamed.length == len(FLAT_ROWS) + 1 and streamed.csv_lines is None
    with pytest.raises(UnicodeEncodeError):
        render.rows_to_csv(streamed, streamed.columns)
    with pytest.raises(UnicodeEncodeError):
        render.rows_to_csv(json.loads(text)["r"])


def test_a_malformed_answer_read_with_its_csv_is_refused_and_leaves_no_file_open(monkeypatch):
    opened = []
    real = stream.tempfile.TemporaryFile
    monkeypatch.setattr(stream.tempfile, "TemporaryFile", lambda *a, **k: opened.append(real(*a, **k)) or opened[-1])
    good = ",".join(json.dumps(row) for row in FLAT_ROWS)

    with pytest.raises(stream.JsonError):
        loaded('{"r": [' + good + ', {"id": 1 "name": 2}]}', "r", csv_lines=True)

    assert len(opened) == 2  # the rows' file and the CSV's
    assert opened[1].closed
