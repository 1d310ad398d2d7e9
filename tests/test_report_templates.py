import copy
from datetime import UTC, date, datetime
from typing import Any

import pytest

from reporting import stage_inputs
from reporting.demo import data as demo
from reporting.periods import Period, period_containing
from reporting.pipeline.render import RenderedEmail, RenderRequest, render

DAY = date(2025, 3, 14)
GENERATED_AT = datetime(2025, 3, 15, 6, 0, tzinfo=UTC)
REPORT_TEMPLATES = ["reports/table.html", "reports/portfolio_summary.html", "reports/monthly_performance.html"]


def _money(amount: float) -> str:
    """What floatformat:"2g" shows under the project's en-gb locale."""
    return f"{amount:,.2f}"


def _render(
    template_name: str, data: dict[str, Any], period: Period, max_rows: int | None = None, **context_extra: Any
) -> RenderedEmail:
    return render(
        RenderRequest(
            template_name=template_name,
            subject_template="{{ report.name }} — {{ period.label }}",
            report={"name": "Demo portfolio", "slug": "demo-portfolio", "description": "Values in GBP."},
            period=period,
            data=data,
            rows=data["positions"],
            generated_at=GENERATED_AT,
            max_rows=max_rows,
            context_extra=context_extra,
        )
    )


def _demo_data_for(template_name: str) -> tuple[dict[str, Any], Period]:
    if template_name == "reports/monthly_performance.html":
        period = period_containing("monthly", DAY)
        return demo.performance(period.start, period.end), period
    return demo.daily_portfolio(DAY), period_containing("daily", DAY)


def test_it_shows_the_daily_headline_figures():
    data = demo.daily_portfolio(DAY)

    email = _render("reports/portfolio_summary.html", data, period_containing("daily", DAY))

    summary = data["summary"]
    assert summary["day_pnl"] > 0
    for part in (email.html, email.text):
        assert _money(summary["total_value"]) in part
        assert "+" + _money(summary["day_pnl"]) in part
        assert f"+{summary['day_return_pct']:.2f}" in part
        assert _money(summary["cash"]) in part
    assert "14 March 2025" in email.html
    assert "15 Mar 2025, 06:00 UTC" in email.html


def test_it_shows_every_position_in_the_daily_summary():
    data = demo.daily_portfolio(DAY)

    email = _render("reports/portfolio_summary.html", data, period_containing("daily", DAY))

    for position in data["positions"]:
        assert position["isin"] in email.html
        assert _money(position["market_value"]) in email.html
        assert _money(position["market_value"]) in email.text
        assert f"{position['weight_pct']:.2f}%" in email.html
    assert "Vanguard FTSE All-World UCITS ETF" in email.html
    assert "UK Gilt 4.25% 2032" in email.text


def test_it_shows_a_loss_in_red_with_a_minus_sign():
    data = copy.deepcopy(demo.daily_portfolio(DAY))
    data["summary"]["day_pnl"] = -12345.6
    data["summary"]["day_return_pct"] = -0.5812

    email = _render("reports/portfolio_summary.html", data, period_containing("daily", DAY))

    assert "-12,345.60" in email.html
    assert "+-12,345.60" not in email.html
    assert 'color:#b42318;">-12,345.60' in email.html
    assert "-12,345.60" in email.text
    assert "-0.58" in email.text


def test_it_shows_the_monthly_headline_and_allocation():
    period = period_containing("monthly", DAY)
    data = demo.performance(period.start, period.end)

    email = _render("reports/monthly_performance.html", data, period)

    summary = data["summary"]
    for part in (email.html, email.text):
        assert "March 2025" in part
        assert _money(summary["start_value"]) in part
        assert _money(summary["end_value"]) in part
        assert _money(abs(summary["net_pnl"])) in part
        for allocation in data["by_asset_class"]:
            assert allocation["asset_class"] in part
            assert _money(allocation["end_value"]) in part
    invested = [row for row in data["by_asset_class"] if row["asset_class"] != "Cash"]
    best = max(invested, key=lambda row: row["return_pct"])
    worst = min(invested, key=lambda row: row["return_pct"])
    assert f">{best['asset_class']}</div>" in email.html
    assert f">{worst['asset_class']}</div>" in email.html
    assert "1 Mar 2025 \N{EN DASH} 31 Mar 2025" in email.html


def test_it_shows_every_position_in_the_monthly_report():
    period = period_containing("monthly", DAY)
    data = demo.performance(period.start, period.end)

    email = _render("reports/monthly_performance.html", data, period)

    for position in data["positions"]:
        assert position["isin"] in email.html
        assert _money(abs(position["period_pnl"])) in email.html
        assert _money(abs(position["period_pnl"])) in email.text


@pytest.mark.parametrize("template_name", REPORT_TEMPLATES)
def test_it_escapes_the_html_part_but_not_the_text_part(template_name):
    data, period = _demo_data_for(template_name)

    email = _render(template_name, data, period)

    assert "AT&amp;T Inc" in email.html
    assert "AT&T Inc" not in email.html
    assert "AT&T Inc" in email.text
    assert "&amp;" not in email.text


@pytest.mark.parametrize("template_name", REPORT_TEMPLATES)
def test_it_escapes_markup_from_the_data_in_the_html_part(template_name):
    data, period = _demo_data_for(template_name)
    data = copy.deepcopy(data)
    data["positions"][0]["instrument"] = "<script>alert(1)</script>"
    data["positions"][0]["asset_class"] = '<img src=x onerror="alert(2)">'

    email = _render(template_name, data, period, max_rows=5)

    assert "<script>" not in email.html
    assert "<img" not in email.html
    assert "&lt;script&gt;" in email.html
    assert "<script>" in email.text


def test_it_caps_the_generic_table_at_max_rows():
    data = demo.daily_portfolio(DAY)

    email = _render("reports/table.html", data, period_containing("daily", DAY), max_rows=5)

    names = [position["isin"] for position in data["positions"]]
    assert all(name in email.html for name in names[:5])
    assert not any(name in email.html for name in names[5:])
    assert "Showing 5 of 12 rows." in email.html


def test_it_shows_all_rows_of_the_generic_table_by_default():
    data = demo.daily_portfolio(DAY)

    email = _render("reports/table.html", data, period_containing("daily", DAY))

    assert all(position["isin"] in email.html for position in data["positions"])
    assert "Showing" not in email.html
    assert _money(data["positions"][0]["market_value"]) in email.html


def test_it_caps_the_generic_text_part_at_max_rows_too():
    data = demo.daily_portfolio(DAY)

    email = _render("reports/table.html", data, period_containing("daily", DAY), max_rows=5)

    names = [position["isin"] for position in data["positions"]]
    assert all(name in email.text for name in names[:5])
    assert not any(name in email.text for name in names[5:])
    assert "Showing 5 of 12 rows; the attached CSV has them all." in email.text


def test_it_says_no_rows_only_when_there_are_none():
    empty = _render("reports/table.html", {"positions": []}, period_containing("daily", DAY))
    none_shown = _render("reports/table.html", demo.daily_portfolio(DAY), period_containing("daily", DAY), max_rows=0)

    assert "No rows for this period." in empty.html
    assert "No rows for this period." in empty.text
    assert "No rows for this period." not in none_shown.html
    assert "No rows for this period." not in none_shown.text
    assert "Showing 0 of 12 rows." in none_shown.html


def test_it_lists_the_first_50_rows_in_the_generic_text_part():
    rows = [{"account": f"ACC-{number:03}", "balance": number * 1000.5} for number in range(1, 61)]

    email = _render("reports/table.html", {"positions": rows}, period_containing("daily", DAY))

    assert "ACC-050" in email.text
    assert "ACC-051" not in email.text
    assert _money(50 * 1000.5) in email.text
    assert "Showing 50 of 60 rows; the attached CSV has them all." in email.text
    assert "ACC-060" in email.html


@pytest.mark.parametrize("template_name", ["reports/portfolio_summary.html", "reports/monthly_performance.html"])
def test_it_caps_the_positions_at_max_rows_but_keeps_the_totals_of_all(template_name):
    data, period = _demo_data_for(template_name)

    email = _render(template_name, data, period, max_rows=3)

    shown, left_out = data["positions"][:3], data["positions"][3:]
    assert all(position["isin"] in email.html for position in shown)
    assert not any(position["isin"] in email.html for position in left_out)
    # The text part cuts names to 28 characters.
    assert all(position["instrument"][:27] in email.text for position in shown)
    assert not any(position["instrument"][:27] in email.text for position in left_out)
    summary = data["summary"]
    total = summary["total_value"] if "total_value" in summary else summary["end_value"]
    for part in (email.html, email.text):
        assert f"Showing 3 of {len(data['positions'])} positions" in part
        assert _money(total) in part


@pytest.mark.django_db
def test_the_demo_reports_draw_their_charts_from_the_demo_data():
    from reporting.demo.setup import install_demo

    daily, monthly = install_demo(base_url="http://127.0.0.1:8000/demo-api/").reports
    march = period_containing("monthly", DAY)

    day = period_containing("daily", DAY)
    day_email = render(stage_inputs.render_request_for(daily, day, demo.daily_portfolio(DAY)))
    month_email = render(stage_inputs.render_request_for(monthly, march, demo.performance(march.start, march.end)))

    assert [image.filename for image in day_email.inline_images] == ["chart-1.png"]
    assert 'alt="Allocation by asset class — 14 March 2025"' in day_email.html
    assert [image.filename for image in month_email.inline_images] == ["chart-1.png", "chart-2.png"]
    assert 'alt="Portfolio value — March 2025"' in month_email.html
    assert [file.filename for file in month_email.files] == [
        "monthly-performance_2025-03-01_2025-03-31.csv",
        "monthly-performance_2025-03-01_2025-03-31.xlsx",
    ]


def test_every_shipped_report_layout_uses_only_the_sandboxs_tags_and_filters():
    from pathlib import Path

    import reporting
    from reporting.pipeline import sandbox

    folder = Path(reporting.__file__).parent / "templates"
    names = [
        str(path.relative_to(folder))
        for layouts in sandbox.LAYOUT_FOLDERS
        for path in sorted((folder / layouts).glob("*.*"))
        if not path.name.startswith("alert.")  # failure alerts are ours, rendered outside the sandbox
    ]

    for name in names:
        sandbox.find_layout([name], html=name.endswith(".html"))  # compiles, or says which tag or filter

    assert "reports/portfolio_summary.html" in names and "reporting/email/base.html" in names
