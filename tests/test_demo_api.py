from datetime import date, timedelta

import pytest
from django.urls import reverse

from reporting.demo import data

DAILY_URL = reverse("demo-daily-portfolio")
PERFORMANCE_URL = reverse("demo-monthly-performance")


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


def test_it_returns_the_portfolio_at_the_close_of_a_day(client):
    response = client.get(DAILY_URL, {"date": "2025-03-14"})

    assert response.status_code == 200
    body = response.json()
    assert body["as_of"] == "2025-03-14"
    assert body["currency"] == "GBP"
    assert set(body["summary"]) == {"total_value", "cash", "day_pnl", "day_return_pct"}
    assert len(body["positions"]) == len(data.INSTRUMENTS)
    assert set(body["positions"][0]) == {
        "instrument",
        "isin",
        "asset_class",
        "quantity",
        "price",
        "market_value",
        "day_pnl",
        "weight_pct",
    }


def test_it_adds_positions_and_cash_up_to_the_total(client):
    body = client.get(DAILY_URL, {"date": "2025-03-14"}).json()

    summary, positions = body["summary"], body["positions"]
    market_values = sum(position["market_value"] for position in positions)
    assert summary["total_value"] == pytest.approx(market_values + summary["cash"], abs=0.005)
    assert summary["day_pnl"] == pytest.approx(sum(position["day_pnl"] for position in positions), abs=0.005)
    cash_weight = 100 * summary["cash"] / summary["total_value"]
    assert sum(position["weight_pct"] for position in positions) + cash_weight == pytest.approx(100, abs=0.05)
    for position in positions:
        assert position["market_value"] == pytest.approx(position["quantity"] * position["price"], abs=0.005)


def test_it_gives_the_same_numbers_for_the_same_day_on_every_call(client):
    first = client.get(DAILY_URL, {"date": "2025-06-30"}).json()
    second = client.get(DAILY_URL, {"date": "2025-06-30"}).json()

    assert first == second == data.daily_portfolio(date(2025, 6, 30))
    assert first != client.get(DAILY_URL, {"date": "2025-07-01"}).json()


def test_it_makes_the_day_pnl_the_change_since_the_previous_close():
    today, yesterday = data.daily_portfolio(date(2025, 3, 14)), data.daily_portfolio(date(2025, 3, 13))

    day_pnl = today["summary"]["total_value"] - yesterday["summary"]["total_value"]
    assert today["summary"]["day_pnl"] == pytest.approx(day_pnl, abs=0.005)
    assert today["summary"]["day_return_pct"] == pytest.approx(
        100 * day_pnl / yesterday["summary"]["total_value"], abs=0.0001
    )


def test_it_keeps_fridays_prices_over_the_weekend():
    friday, saturday, sunday = (data.daily_portfolio(date(2025, 3, day)) for day in (14, 15, 16))

    assert saturday["summary"]["total_value"] == sunday["summary"]["total_value"] == friday["summary"]["total_value"]
    assert saturday["summary"]["day_pnl"] == 0


def test_it_reports_performance_consistent_with_the_daily_figures(client):
    response = client.get(PERFORMANCE_URL, {"from": "2025-03-01", "to": "2025-03-31"})

    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["to"], body["currency"]) == ("2025-03-01", "2025-03-31", "GBP")
    summary = body["summary"]
    closing = data.daily_portfolio(date(2025, 3, 31))
    assert summary["end_value"] == closing["summary"]["total_value"]
    assert summary["start_value"] == data.daily_portfolio(date(2025, 2, 28))["summary"]["total_value"]
    assert summary["net_pnl"] == pytest.approx(summary["end_value"] - summary["start_value"], abs=0.005)
    daily_pnls = [data.daily_portfolio(day)["summary"]["day_pnl"] for day in _days(date(2025, 3, 1), date(2025, 3, 31))]
    assert summary["net_pnl"] == pytest.approx(sum(daily_pnls), abs=0.01)
    assert summary["return_pct"] == pytest.approx(100 * summary["net_pnl"] / summary["start_value"], abs=0.0001)


def test_it_lists_each_days_closing_value_in_the_range(client):
    body = client.get(PERFORMANCE_URL, {"from": "2025-03-01", "to": "2025-03-31"}).json()

    assert [point["date"] for point in body["daily"]] == [
        day.isoformat() for day in _days(date(2025, 3, 1), date(2025, 3, 31))
    ]
    assert body["daily"][9] == {
        "date": "2025-03-10",
        "value": data.daily_portfolio(date(2025, 3, 10))["summary"]["total_value"],
    }
    assert body["daily"][-1]["value"] == body["summary"]["end_value"]


def test_it_splits_performance_by_asset_class_including_cash(client):
    body = client.get(PERFORMANCE_URL, {"from": "2025-03-01", "to": "2025-03-31"}).json()

    classes = {row["asset_class"]: row for row in body["by_asset_class"]}
    assert set(classes) == {"ETF", "Equity", "Bond", "Cash-like", "Cash"}
    assert sum(row["start_value"] for row in classes.values()) == pytest.approx(
        body["summary"]["start_value"], abs=0.01
    )
    assert sum(row["end_value"] for row in classes.values()) == pytest.approx(body["summary"]["end_value"], abs=0.01)
    assert sum(row["pnl"] for row in classes.values()) == pytest.approx(body["summary"]["net_pnl"], abs=0.01)
    assert sum(row["weight_pct"] for row in classes.values()) == pytest.approx(100, abs=0.05)
    assert classes["Cash"]["pnl"] == 0


def test_it_gives_each_position_its_pnl_over_the_period(client):
    body = client.get(PERFORMANCE_URL, {"from": "2025-03-01", "to": "2025-03-31"}).json()

    opening = {row["isin"]: row for row in data.daily_portfolio(date(2025, 2, 28))["positions"]}
    closing = {row["isin"]: row for row in data.daily_portfolio(date(2025, 3, 31))["positions"]}
    for position in body["positions"]:
        isin = position["isin"]
        assert {key: position[key] for key in closing[isin]} == closing[isin]
        pnl = closing[isin]["market_value"] - opening[isin]["market_value"]
        assert position["period_pnl"] == pytest.approx(pnl, abs=0.005)
        assert position["period_return_pct"] == pytest.approx(100 * pnl / opening[isin]["market_value"], abs=0.0001)


def test_it_accepts_a_range_of_exactly_400_days(client):
    end = date(2025, 3, 31)
    start = end - timedelta(days=399)

    response = client.get(PERFORMANCE_URL, {"from": start.isoformat(), "to": end.isoformat()})

    assert response.status_code == 200
    assert len(response.json()["daily"]) == 400


@pytest.mark.parametrize(
    "query",
    [{}, {"date": ""}, {"date": "yesterday"}, {"date": "2025-02-30"}, {"date": "14/03/2025"}],
)
def test_it_refuses_a_missing_or_invalid_day(client, query):
    response = client.get(DAILY_URL, query)

    assert response.status_code == 400
    assert "date" in response.json()["error"]


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ({"to": "2025-03-31"}, "'from'"),
        ({"from": "2025-03-01"}, "'to'"),
        ({"from": "2025-03-01", "to": "2025-13-01"}, "'to'"),
        ({"from": "2025-04-01", "to": "2025-03-31"}, "after"),
        ({"from": "2024-01-01", "to": "2025-03-31"}, "400 days"),
    ],
)
def test_it_refuses_a_bad_range(client, query, complaint):
    response = client.get(PERFORMANCE_URL, query)

    assert response.status_code == 400
    assert complaint in response.json()["error"]


def test_it_only_answers_get(client):
    assert client.post(DAILY_URL, {"date": "2025-03-14"}).status_code == 405
