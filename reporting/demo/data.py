"""Deterministic synthetic portfolio data for the demo API.

Every number is a pure function of the day asked about: the same day gives the same
prices in any process, on any call, so a month's performance agrees with the daily
figures of the days inside it. Prices are made up; only the instruments are real names.

A price is a trend, a few slow waves shared with the market and the instrument's own
waves, plus a small jiggle seeded from the date. Markets are closed at weekends, so
Saturday and Sunday keep Friday's prices.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

CURRENCY = "GBP"
CASH_BALANCE = 42_350.00
CASH_ASSET_CLASS = "Cash"
# Day zero of the price model; any day before or after it works the same way.
EPOCH = date(2024, 1, 1)
# Periods (in days) of the slow waves prices follow: about a month, a quarter, half a year, a year.
WAVE_PERIODS = (23.0, 61.0, 157.0, 389.0)
WAVE_WEIGHTS = (0.15, 0.25, 0.3, 0.3)


@dataclass(frozen=True)
class Instrument:
    name: str
    isin: str
    asset_class: str
    quantity: int
    base_price: float  # GBP at EPOCH, before waves and jiggle
    annual_drift: float  # log-return per year
    market_beta: float  # how much of the market's moves it takes
    wave_amplitude: float  # size of its own slow waves, in log-price
    daily_noise: float  # standard deviation of the day's jiggle, in log-price


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("Vanguard FTSE All-World UCITS ETF", "IE00B3RBWM25", "ETF", 4_200, 108.40, 0.07, 1.0, 0.02, 0.003),
    Instrument("iShares Core FTSE 100 UCITS ETF", "IE0005042456", "ETF", 25_000, 8.21, 0.05, 0.9, 0.03, 0.003),
    Instrument("AstraZeneca plc", "GB0009895292", "Equity", 1_150, 112.30, 0.08, 0.6, 0.08, 0.009),
    Instrument("Unilever plc", "GB00B10RZP78", "Equity", 2_600, 45.95, 0.04, 0.5, 0.05, 0.007),
    Instrument("HSBC Holdings plc", "GB0005405286", "Equity", 14_000, 7.12, 0.06, 1.1, 0.07, 0.010),
    Instrument("Shell plc", "GB00BP6MXD84", "Equity", 3_800, 27.48, 0.03, 0.9, 0.09, 0.010),
    Instrument("Apple Inc", "US0378331005", "Equity", 520, 165.20, 0.10, 1.2, 0.08, 0.011),
    Instrument("AT&T Inc", "US00206R1023", "Equity", 3_900, 17.38, 0.02, 0.7, 0.06, 0.008),
    Instrument("UK Gilt 4.25% 2032", "GB0004893086", "Bond", 2_500, 101.20, 0.01, -0.1, 0.02, 0.002),
    Instrument("UK Gilt 0.875% 2029", "GB00BJMHB534", "Bond", 2_000, 88.15, 0.02, -0.1, 0.015, 0.0015),
    Instrument("iShares Core £ Corp Bond UCITS ETF", "IE00B3F81R35", "Bond", 1_400, 105.10, 0.02, 0.1, 0.025, 0.002),
    Instrument(
        "Royal London Short Term Money Market Fund", "GB00B8XYYQ86", "Cash-like", 95_000, 1.1204, 0.045, 0.0, 0.0, 0.0
    ),
)


def daily_portfolio(day: date) -> dict[str, Any]:
    """The portfolio at the close of `day`: summary figures and one row per position."""
    positions = _positions(day)
    total_value = _total_value(positions)
    previous_total = _total_value(_positions(day - timedelta(days=1)))
    day_pnl = round(total_value - previous_total, 2)
    return {
        "as_of": day.isoformat(),
        "currency": CURRENCY,
        "summary": {
            "total_value": total_value,
            "cash": CASH_BALANCE,
            "day_pnl": day_pnl,
            "day_return_pct": _percent(day_pnl, previous_total, places=4),
        },
        "positions": [_with_weight(position, total_value) for position in positions],
    }


def performance(start: date, end: date) -> dict[str, Any]:
    """Performance over the days `start` to `end`, both inclusive.

    The start value is the close of the day before `start`, so that the net P&L is what
    the portfolio earned over the days of the range.
    """
    opening = _positions(start - timedelta(days=1))
    closing = daily_portfolio(end)
    start_value = _total_value(opening)
    end_value = closing["summary"]["total_value"]
    net_pnl = round(end_value - start_value, 2)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "currency": CURRENCY,
        "summary": {
            "start_value": start_value,
            "end_value": end_value,
            "net_pnl": net_pnl,
            "return_pct": _percent(net_pnl, start_value, places=4),
        },
        "by_asset_class": _by_asset_class(opening, closing["positions"], end_value),
        "daily": [{"date": day.isoformat(), "value": _total_value(_positions(day))} for day in _days(start, end)],
        "positions": [
            _with_period_pnl(position, opening_position)
            for position, opening_position in zip(closing["positions"], opening, strict=True)
        ],
    }


def price_on(instrument: Instrument, day: date) -> float:
    """The instrument's closing price on `day`, to 4 decimal places."""
    trading_day = _last_trading_day(day)
    t = (trading_day - EPOCH).days
    log_price = (
        math.log(instrument.base_price)
        + instrument.annual_drift * t / 365.0
        + instrument.market_beta * _market_move(trading_day)
        + instrument.wave_amplitude * _waves(t, _phases(instrument.isin))
        + instrument.daily_noise * _jiggle(instrument.isin, trading_day)
    )
    return round(math.exp(log_price), 4)


def _positions(day: date) -> list[dict[str, Any]]:
    """Rows without weights: instrument, prices and the day's P&L per position."""
    rows = []
    for instrument in INSTRUMENTS:
        price = price_on(instrument, day)
        market_value = round(instrument.quantity * price, 2)
        previous_value = round(instrument.quantity * price_on(instrument, day - timedelta(days=1)), 2)
        rows.append(
            {
                "instrument": instrument.name,
                "isin": instrument.isin,
                "asset_class": instrument.asset_class,
                "quantity": instrument.quantity,
                "price": price,
                "market_value": market_value,
                "day_pnl": round(market_value - previous_value, 2),
            }
        )
    return rows


def _total_value(positions: list[dict[str, Any]]) -> float:
    return round(sum(position["market_value"] for position in positions) + CASH_BALANCE, 2)


def _with_weight(position: dict[str, Any], total_value: float) -> dict[str, Any]:
    return {**position, "weight_pct": _percent(position["market_value"], total_value, places=2)}


def _with_period_pnl(position: dict[str, Any], opening_position: dict[str, Any]) -> dict[str, Any]:
    period_pnl = round(position["market_value"] - opening_position["market_value"], 2)
    return {
        **position,
        "period_pnl": period_pnl,
        "period_return_pct": _percent(period_pnl, opening_position["market_value"], places=4),
    }


def _by_asset_class(
    opening: list[dict[str, Any]], closing: list[dict[str, Any]], end_value: float
) -> list[dict[str, Any]]:
    """Start and end value per asset class, cash included, in the order classes first appear."""
    start_values: dict[str, float] = defaultdict(float)
    end_values: dict[str, float] = defaultdict(float)
    for position in opening:
        start_values[position["asset_class"]] += position["market_value"]
    for position in closing:
        end_values[position["asset_class"]] += position["market_value"]
    start_values[CASH_ASSET_CLASS] = end_values[CASH_ASSET_CLASS] = CASH_BALANCE
    rows = []
    for asset_class, start_value in start_values.items():
        start_value, class_end = round(start_value, 2), round(end_values[asset_class], 2)
        pnl = round(class_end - start_value, 2)
        rows.append(
            {
                "asset_class": asset_class,
                "start_value": start_value,
                "end_value": class_end,
                "pnl": pnl,
                "return_pct": _percent(pnl, start_value, places=4),
                "weight_pct": _percent(class_end, end_value, places=2),
            }
        )
    return rows


def _percent(part: float, whole: float, *, places: int) -> float:
    return round(100.0 * part / whole, places) if whole else 0.0


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


def _last_trading_day(day: date) -> date:
    """Saturday and Sunday take Friday's close."""
    return day - timedelta(days=max(0, day.weekday() - 4))


def _market_move(day: date) -> float:
    """The move every instrument shares (scaled by its beta): slow waves plus the day's news."""
    t = (day - EPOCH).days
    return 0.06 * _waves(t, _phases("market")) + 0.004 * random.Random(day.toordinal()).gauss(0.0, 1.0)


def _waves(t: int, phases: tuple[float, ...]) -> float:
    return sum(
        weight * math.sin(2 * math.pi * t / period + phase)
        for weight, period, phase in zip(WAVE_WEIGHTS, WAVE_PERIODS, phases, strict=True)
    )


def _phases(key: str) -> tuple[float, ...]:
    # A string seed is hashed with SHA-512 by `random`, so it is the same in every process.
    generator = random.Random(f"phases:{key}")
    return tuple(generator.uniform(0.0, 2 * math.pi) for _ in WAVE_PERIODS)


def _jiggle(key: str, day: date) -> float:
    return random.Random(f"{key}:{day.toordinal()}").gauss(0.0, 1.0)


# Clients of the demo: each holds a few of the instruments above, valued in its own base
# currency. Pound prices are converted at a made-up rate that follows the same price model.


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    currency: str


CLIENTS: tuple[Client, ...] = (
    Client("C001", "Ashdown Family Trust", "GBP"),
    Client("C002", "Brennan & Okafor Pension Scheme", "GBP"),
    Client("C003", "Calloway Foundation", "USD"),
    Client("C004", "Dubois Holdings SA", "EUR"),
    Client("C005", "Eastgate Endowment", "GBP"),
    Client("C006", "Fairlie Investments GmbH", "EUR"),
)
CLIENTS_BY_ID = {client.client_id: client for client in CLIENTS}
# Units of each currency one pound buys; "GBP" is not here, its rate is 1.
FX_RATES: dict[str, Instrument] = {
    "EUR": Instrument("Pound in euros", "FX:GBPEUR", "FX", 0, 1.17, 0.0, 0.0, 0.02, 0.002),
    "USD": Instrument("Pound in US dollars", "FX:GBPUSD", "FX", 0, 1.27, 0.0, 0.0, 0.03, 0.003),
}


def clients_positions(day: date) -> dict[str, Any]:
    """Every client's positions at the close of `day`, each row marked with its client's id."""
    rows = [row for client in CLIENTS for row in _with_weights(_client_positions(client, day))]
    return {"as_of": day.isoformat(), "positions": rows}


def client_statement(client: Client, start: date, end: date) -> dict[str, Any]:
    """One client's statement for the days `start` to `end`, both inclusive, in its own currency.

    As for `performance`, the start value is the close of the day before `start`.
    """
    opening = _client_positions(client, start - timedelta(days=1))
    closing = _with_weights(_client_positions(client, end))
    start_value, end_value = _client_value(opening), _client_value(closing)
    change = round(end_value - start_value, 2)
    return {
        "client_id": client.client_id,
        "client_name": client.name,
        "currency": client.currency,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "summary": {
            "start_value": start_value,
            "end_value": end_value,
            "change": change,
            "change_pct": _percent(change, start_value, places=4),
        },
        "by_asset_class": _client_asset_classes(opening, closing, end_value),
        "daily": [
            {"date": day.isoformat(), "value": _client_value(_client_positions(client, day))}
            for day in _days(start, end)
        ],
        "positions": [
            _with_change(position, opening_position)
            for position, opening_position in zip(closing, opening, strict=True)
        ],
    }


def client_holdings(client: Client) -> list[tuple[Instrument, int]]:
    """The instruments the client holds, in the order of INSTRUMENTS, with its quantity of each."""
    # A string seed is hashed with SHA-512, so every process picks the same holdings.
    generator = random.Random(f"holdings:{client.client_id}")
    picked = sorted(generator.sample(range(len(INSTRUMENTS)), generator.randint(5, 8)))
    return [
        (INSTRUMENTS[index], max(10, int(round(INSTRUMENTS[index].quantity * generator.uniform(0.05, 0.6), -1))))
        for index in picked
    ]


def fx_rate(currency: str, day: date) -> float:
    """Units of `currency` one pound buys at the close of `day`."""
    return price_on(FX_RATES[currency], day) if currency in FX_RATES else 1.0


def _client_positions(client: Client, day: date) -> list[dict[str, Any]]:
    rate = fx_rate(client.currency, day)
    rows = []
    for instrument, quantity in client_holdings(client):
        price = round(price_on(instrument, day) * rate, 4)
        rows.append(
            {
                "client_id": client.client_id,
                "instrument": instrument.name,
                "isin": instrument.isin,
                "asset_class": instrument.asset_class,
                "quantity": quantity,
                "price": price,
                "market_value": round(quantity * price, 2),
                "currency": client.currency,
            }
        )
    return rows


def _client_value(positions: list[dict[str, Any]]) -> float:
    return round(sum(position["market_value"] for position in positions), 2)


def _with_weights(positions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    total_value = _client_value(positions)
    return [_with_weight(position, total_value) for position in positions]


def _with_change(position: dict[str, Any], opening_position: dict[str, Any]) -> dict[str, Any]:
    change = round(position["market_value"] - opening_position["market_value"], 2)
    return {
        **position,
        "start_value": opening_position["market_value"],
        "change": change,
        "change_pct": _percent(change, opening_position["market_value"], places=4),
    }


def _client_asset_classes(
    opening: list[dict[str, Any]], closing: list[dict[str, Any]], end_value: float
) -> list[dict[str, Any]]:
    """Start and end value per asset class, in the order classes first appear."""
    start_values: dict[str, float] = defaultdict(float)
    end_values: dict[str, float] = defaultdict(float)
    for opening_position, position in zip(opening, closing, strict=True):
        start_values[opening_position["asset_class"]] += opening_position["market_value"]
        end_values[position["asset_class"]] += position["market_value"]
    rows = []
    for asset_class, start_value in start_values.items():
        start_value, class_end = round(start_value, 2), round(end_values[asset_class], 2)
        change = round(class_end - start_value, 2)
        rows.append(
            {
                "asset_class": asset_class,
                "start_value": start_value,
                "end_value": class_end,
                "change": change,
                "change_pct": _percent(change, start_value, places=4),
                "weight_pct": _percent(class_end, end_value, places=2),
            }
        )
    return rows
