"""Charts drawn from rows: a real PNG of the email's width, labelled, or an error in words."""

import io

import pytest
from PIL import Image

from reporting.pipeline import charts
from reporting.pipeline.charts import ChartError, ChartSpec

DAYS = [{"date": f"2026-11-{day:02d}", "value": 1_000_000 + day * 1500} for day in range(1, 31)]
HOLDINGS = [
    {"asset_class": "Equities", "value": 600},
    {"asset_class": "Bonds", "value": 300},
    {"asset_class": "Equities", "value": 100},
    {"asset_class": "Cash", "value": "50.5"},
]


def image(chart: charts.Chart) -> Image.Image:
    return Image.open(io.BytesIO(chart.png))


def test_it_draws_a_line_over_time_at_twice_the_email_width():
    spec = ChartSpec(kind="line", x="date", y="value", title="Portfolio value")
    chart = charts.draw(spec, DAYS, period_label="November 2026")

    picture = image(chart)
    assert picture.format == "PNG"
    assert picture.size == (charts.WIDTH_PX * charts.SCALE, charts.HEIGHT_PX * charts.SCALE)
    assert chart.title == "Portfolio value — November 2026"
    assert len(picture.convert("RGB").getcolors(maxcolors=100_000)) > 10  # something was drawn


def test_it_draws_bars_by_category_with_the_sums():
    spec = ChartSpec.from_dict({"kind": "bar", "x": "asset_class", "y": "value", "title": "Allocation"})
    chart = charts.draw(spec, HOLDINGS, period_label="20 November 2026")

    assert image(chart).size == (1280, 600)
    assert chart.title == "Allocation — 20 November 2026"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "pie", "x": "a", "y": "b"}, "Unknown chart kind 'pie': use 'line' or 'bar'."),
        ({"kind": "line", "x": "", "y": "b"}, "A chart lacks x."),
        ({"kind": "line", "x": "a", "y": "b", "colour": "red"}, "A chart has unknown keys: colour."),
        ("line", "Each chart must be an object with kind, x, y and title."),
    ],
)
def test_it_refuses_a_bad_definition_in_words(raw, message):
    with pytest.raises(ChartError) as caught:
        charts.parse_specs([raw])
    assert caught.value.message == message


def test_a_definition_without_a_title_gets_one_from_its_fields():
    [spec] = charts.parse_specs([{"kind": "bar", "x": "asset_class", "y": "market_value"}])
    assert spec.title == "Market value by asset class"


@pytest.mark.parametrize(
    ("spec", "rows", "message"),
    [
        (ChartSpec("line", "date", "value", "V"), [{"date": "yesterday", "value": 1}], "'date' must be a date"),
        (ChartSpec("bar", "name", "value", "V"), [{"name": "a", "value": "lots"}], "'value' must be a number"),
        (ChartSpec("line", "date", "missing", "V"), DAYS, "The chart 'V' has no rows with both 'date' and 'missing'."),
    ],
)
def test_it_says_in_words_when_the_data_does_not_fit_the_chart(spec, rows, message):
    with pytest.raises(ChartError) as caught:
        charts.draw(spec, rows, period_label="November 2026")
    assert message in caught.value.message


def test_a_chart_can_draw_other_rows_of_the_response():
    [spec] = charts.parse_specs(
        [{"kind": "line", "x": "date", "y": "value", "title": "Value", "rows": "summary.daily"}]
    )
    data = {"summary": {"daily": DAYS}, "positions": HOLDINGS}

    assert charts.rows_for(spec, data, HOLDINGS) == DAYS
    assert spec.to_dict()["rows"] == "summary.daily"
    with pytest.raises(ChartError, match=r"reads rows from 'summary\.daily', which is not in the data"):
        charts.rows_for(spec, {"summary": {}}, HOLDINGS)


def test_a_line_has_one_point_a_date_the_sum_of_its_rows():
    spec = ChartSpec(kind="line", x="date", y="value", title="Flows")
    split = [{"date": f"2026-11-{day:02d}", "value": value} for day in range(1, 8) for value in (day, 10 * day)]
    summed = [{"date": f"2026-11-{day:02d}", "value": 11 * day} for day in range(7, 0, -1)]

    drawn = charts.draw(spec, split, period_label="November 2026").png

    assert drawn == charts.draw(spec, summed, period_label="November 2026").png
    assert drawn != charts.draw(spec, split[::2], period_label="November 2026").png
