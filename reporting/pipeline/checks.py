"""Data checks: is the fetched data fit to send? Plain values in, failures in words out.

A report that fails a check is held back rather than sent: staff can send it anyway or
fetch the data again (reporting.runs.release_held_run / rerun_held_run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from reporting.pipeline.rowstore import RowStream


@dataclass(frozen=True)
class CheckSettings:
    """A report's checks: 0, empty or None switches each one off."""

    min_rows: int = 1
    required_fields: tuple[str, ...] = ()
    max_age_field: str = ""  # dotted path into the response, e.g. "meta.as_of"
    max_age_hours: int | None = None
    timezone: str = "UTC"  # of a timestamp without an offset


def field_names(text: str) -> tuple[str, ...]:
    """The names in a comma-separated list, stripped, without empty ones."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def failed_checks(*, rows: Sequence[Any], data: Any, checks: CheckSettings, now: datetime) -> list[str]:
    """Every check the data fails, each in words; empty when the data may be sent."""
    failures = [
        *check_min_rows(rows=rows, min_rows=checks.min_rows),
        *check_required_fields(rows=rows, fields=checks.required_fields),
    ]
    if checks.max_age_field and checks.max_age_hours is not None:
        failures += check_max_age(
            data=data, path=checks.max_age_field, max_hours=checks.max_age_hours, timezone=checks.timezone, now=now
        )
    return failures


def check_min_rows(*, rows: Sequence[Any], min_rows: int) -> list[str]:
    if not min_rows or len(rows) >= min_rows:
        return []
    return [f"The data has {_count(len(rows), 'row')}; this report needs at least {min_rows}."]


def check_required_fields(*, rows: Sequence[Any], fields: tuple[str, ...]) -> list[str]:
    """A failure per field that some rows lack or leave empty, with the first such row (from 1)."""
    failures = []
    for name in fields:
        lacking = [number for number, row in enumerate(rows, start=1) if _is_empty(_field(row, name))]
        if lacking:
            verb = "lacks" if len(lacking) == 1 else "lack"
            failures.append(f"{len(lacking)} of {_count(len(rows), 'row')} {verb} '{name}' (first: row {lacking[0]}).")
    return failures


def check_max_age(*, data: Any, path: str, max_hours: int, timezone: str, now: datetime) -> list[str]:
    """The timestamp at `path` must be at most `max_hours` old; a date counts from its midnight."""
    value = value_at(data, path)
    if _is_empty(value):
        return [f"The timestamp field {path} is missing from the data, so its age cannot be checked."]
    moment = parse_timestamp(value, timezone=timezone)
    if moment is None:
        return [f"The timestamp field {path} is not an ISO date or date and time: {value!r}."]
    hours = (now - moment).total_seconds() / 3600
    if hours <= max_hours:
        return []
    return [f"The data is {_hours(hours)} old ({path} = {value}); the limit is {_count(max_hours, 'hour')}."]


def parse_timestamp(value: Any, *, timezone: str) -> datetime | None:
    """An ISO 8601 date or date and time as an aware datetime (naive: in `timezone`); None if not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
    return parsed


def value_at(data: Any, path: str) -> Any:
    """The value at the dotted `path` in `data` (list items by index), or None when there is none."""
    node = data
    for key in [part for part in path.split(".") if part]:
        node = _field(node, key)
    return node


def _field(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list | RowStream) and key.isdigit() and int(key) < len(node):
        return node[int(key)]  # a large answer's rows too: "data.trades.0.as_of"
    return None


def _is_empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == [] or value == {}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _hours(hours: float) -> str:
    """Hours to one decimal, rounded up so that an age over the limit never reads as the limit."""
    shown = math.ceil(hours * 10) / 10
    text = f"{shown:.1f}".removesuffix(".0")
    return f"{text} hour" if text == "1" else f"{text} hours"
