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


CLIENTS_URL = reverse("demo-clients-positions")


def _statement_url(client_id: str) -> str:
    return reverse("demo-client-statement", args=[client_id])


def test_it_lists_the_positions_of_every_client_each_row_marked_with_its_client(client):
    response = client.get(CLIENTS_URL, {"date": "2025-03-31"})

    assert response.status_code == 200
    body = response.json()
    assert body["as_of"] == "2025-03-31"
    by_client: dict[str, list[dict]] = {}
    for row in body["positions"]:
        by_client.setdefault(row["client_id"], []).append(row)
    assert set(by_client) == {"C001", "C002", "C003", "C004", "C005", "C006"}
    for client_id, rows in by_client.items():
        holdings = data.client_holdings(data.CLIENTS_BY_ID[client_id])
        assert [row["isin"] for row in rows] == [instrument.isin for instrument, _quantity in holdings]
        assert {row["currency"] for row in rows} == {data.CLIENTS_BY_ID[client_id].currency}
        assert sum(row["weight_pct"] for row in rows) == pytest.approx(100, abs=0.05)
    assert set(body["positions"][0]) == {
        "client_id",
        "instrument",
        "isin",
        "asset_class",
        "quantity",
        "price",
        "market_value",
        "currency",
        "weight_pct",
    }


def test_it_gives_the_clients_different_holdings_and_currencies():
    holdings = {client.client_id: tuple(data.client_holdings(client)) for client in data.CLIENTS}

    assert len(set(holdings.values())) == len(data.CLIENTS)
    assert {client.currency for client in data.CLIENTS} == {"GBP", "EUR", "USD"}


def test_it_values_a_position_at_the_pound_price_times_the_rate_of_the_clients_currency():
    euro_client = data.CLIENTS_BY_ID["C004"]
    day = date(2025, 3, 31)
    rate = data.fx_rate("EUR", day)

    rows = [row for row in data.clients_positions(day)["positions"] if row["client_id"] == "C004"]

    assert rate != 1.0
    for (instrument, quantity), row in zip(data.client_holdings(euro_client), rows, strict=True):
        assert row["quantity"] == quantity
        assert row["price"] == pytest.approx(data.price_on(instrument, day) * rate, abs=0.0001)
        assert row["market_value"] == pytest.approx(quantity * row["price"], abs=0.005)


def test_it_gives_a_client_its_statement_for_a_month(client):
    response = client.get(_statement_url("C003"), {"from": "2025-03-01", "to": "2025-03-31"})

    assert response.status_code == 200
    body = response.json()
    assert (body["client_id"], body["client_name"], body["currency"]) == ("C003", "Calloway Foundation", "USD")
    assert (body["from"], body["to"]) == ("2025-03-01", "2025-03-31")
    summary = body["summary"]
    assert summary["change"] == pytest.approx(summary["end_value"] - summary["start_value"], abs=0.005)
    assert summary["change_pct"] == pytest.approx(100 * summary["change"] / summary["start_value"], abs=0.0001)
    assert summary["end_value"] == pytest.approx(sum(row["market_value"] for row in body["positions"]), abs=0.005)
    assert summary["start_value"] == pytest.approx(sum(row["start_value"] for row in body["positions"]), abs=0.005)
    assert sum(row["end_value"] for row in body["by_asset_class"]) == pytest.approx(summary["end_value"], abs=0.01)
    assert [point["date"] for point in body["daily"]] == [
        day.isoformat() for day in _days(date(2025, 3, 1), date(2025, 3, 31))
    ]
    assert body["daily"][-1]["value"] == summary["end_value"]
    assert {row["client_id"] for row in body["positions"]} == {"C003"}


@pytest.mark.parametrize("client_id", [client.client_id for client in data.CLIENTS])
def test_the_statement_agrees_with_the_positions_of_the_same_client_and_day(client, client_id):
    everyone = client.get(CLIENTS_URL, {"date": "2025-03-31"}).json()["positions"]
    previous_day = client.get(CLIENTS_URL, {"date": "2025-02-28"}).json()["positions"]
    statement = client.get(_statement_url(client_id), {"from": "2025-03-01", "to": "2025-03-31"}).json()

    own = [row for row in everyone if row["client_id"] == client_id]
    assert [{key: row[key] for key in own[0]} for row in statement["positions"]] == own
    assert statement["summary"]["end_value"] == pytest.approx(sum(row["market_value"] for row in own), abs=0.005)
    opening = [row for row in previous_day if row["client_id"] == client_id]
    assert [row["start_value"] for row in statement["positions"]] == [row["market_value"] for row in opening]


@pytest.mark.parametrize("client_id", ["C999", "c001", "C0011", " C001", "C001 ", "../C001", "C001/.."])
def test_it_refuses_a_client_it_does_not_know_in_words(client, client_id):
    response = client.get(_statement_url(client_id), {"from": "2025-03-01", "to": "2025-03-31"})

    assert response.status_code == 404
    assert response.json() == {"error": f"There is no client {client_id!r}."}


@pytest.mark.parametrize(
    "path",
    [
        "/demo-api/clients/../C001/statement",
        "/demo-api/clients/C001%2F../statement",
        "/demo-api/clients/C001%2F..%2F..%2Fportfolio/statement",
        "/demo-api/clients/%2E%2E%2FC001/statement",
        "/demo-api/clients/C001%00/statement",
    ],
)
def test_it_refuses_a_hostile_client_id(client, path):
    response = client.get(path, {"from": "2025-03-01", "to": "2025-03-31"})

    assert response.status_code == 404
    assert "There is no client" in response.json()["error"]


def test_it_cuts_a_long_unknown_client_id_short_in_the_error(client):
    response = client.get(_statement_url("X" * 500), {"from": "2025-03-01", "to": "2025-03-31"})

    assert response.status_code == 404
    assert response.json()["error"] == f"There is no client {'X' * 40!r}."


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ({"to": "2025-03-31"}, "'from'"),
        ({"from": "2025-03-01", "to": "31/03/2025"}, "'to'"),
        ({"from": "2025-04-01", "to": "2025-03-31"}, "after"),
        ({"from": "2024-01-01", "to": "2025-03-31"}, "400 days"),
    ],
)
def test_it_refuses_a_bad_statement_range_in_words(client, query, complaint):
    response = client.get(_statement_url("C001"), query)

    assert response.status_code == 400
    assert complaint in response.json()["error"]


@pytest.mark.parametrize("query", [{}, {"date": "2025-02-30"}, {"date": "last month"}])
def test_it_refuses_a_bad_day_for_the_clients_positions_in_words(client, query):
    response = client.get(CLIENTS_URL, query)

    assert response.status_code == 400
    assert "Give 'date' as a date in the form YYYY-MM-DD" in response.json()["error"]


def test_the_client_endpoints_only_answer_get(client):
    assert client.post(CLIENTS_URL, {"date": "2025-03-31"}).status_code == 405
    assert client.post(_statement_url("C001"), {"from": "2025-03-01", "to": "2025-03-31"}).status_code == 405
