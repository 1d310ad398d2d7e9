"""Send only if: is a run's data worth sending, as its report says? Plain values in, words out.

A report may send only when its data has rows, when a figure crosses a threshold, or when
its rows changed since the last run that was sent. A run whose data does not meet its
condition is skipped: nothing is rendered or sent, and the run keeps the reason in words.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from reporting.pipeline.checks import value_at

ALWAYS, HAS_ROWS, THRESHOLD, CHANGED = "always", "has_rows", "threshold", "changed"
VALUE, TOTAL = "value", "total"  # the figure: a value in the response, or the total of a field over the rows
OPERATORS: dict[str, tuple[str, Callable[[Decimal, Decimal], bool]]] = {
    "above": ("above", operator.gt),
    "at_least": ("at least", operator.ge),
    "below": ("below", operator.lt),
    "at_most": ("at most", operator.le),
}


@dataclass(frozen=True)
class Condition:
    """A report's condition: `kind` is one of ALWAYS, HAS_ROWS, THRESHOLD, CHANGED."""

    kind: str = ALWAYS
    figure: str = ""  # a dotted path in the response (VALUE), or a field of each row (TOTAL)
    figure_is: str = VALUE
    operator: str = "above"
    threshold: Decimal | None = None


@dataclass(frozen=True)
class LastSent:
    """The report's last run that was sent, as the CHANGED condition compares with it."""

    run_id: int
    rows_hash: str  # "" when it was sent before its hash was kept
    sent_on: str  # e.g. "1 Oct 2026"


class FigureError(Exception):
    """The figure of a THRESHOLD condition cannot be read from the data: the run is held, in words."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def rows_hash(rows: Iterable[Any]) -> str:
    """A stable fingerprint of the rows: sha256 of their canonical JSON (sorted keys, no whitespace).

    Hashed a row at a time, as the rows stream: the same digest as of the whole list's JSON.
    """
    digest = hashlib.sha256(b"[")
    batch: list[str] = []
    for index, row in enumerate(rows):
        batch.append(("," if index else "") + _canonical(row))
        if len(batch) >= 1000:
            digest.update("".join(batch).encode("utf-8", "surrogatepass"))
            batch = []
    digest.update("".join(batch).encode("utf-8", "surrogatepass") + b"]")
    return digest.hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def in_words(condition: Condition) -> str:
    """The condition as staff read it: "only if the total of market_value is above 1,000,000"."""
    if condition.kind == HAS_ROWS:
        return "only if there are rows"
    if condition.kind == CHANGED:
        return "only if the data changed"
    if condition.kind == THRESHOLD:
        words, _compare = OPERATORS[condition.operator]
        threshold = number_in_words(condition.threshold) if condition.threshold is not None else "?"
        return f"only if {_figure_name(condition)} is {words} {threshold}"
    return "always"


@dataclass(frozen=True)
class Verdict:
    """What becomes of a run: held (the reasons), skipped (the reason), or sent (neither)."""

    held: list[str]
    skipped: str = ""


def verdict(
    condition: Condition,
    *,
    rows: Sequence[Any],
    failures: list[str],
    data: Any,
    digest: str = "",
    last_sent: LastSent | None = None,
) -> Verdict:
    """The data checks' `failures` and the condition together: a check holds the run before the condition
    judges it, but for no rows when it sends only if there are some (skipped, not held for having none);
    a figure that cannot be read holds it too."""
    if condition.kind == HAS_ROWS and not rows:
        return Verdict(held=[], skipped=skip_reason(condition, rows=rows, data=data))
    if failures:
        return Verdict(held=failures)
    try:
        return Verdict(
            held=[], skipped=skip_reason(condition, rows=rows, data=data, digest=digest, last_sent=last_sent)
        )
    except FigureError as exc:
        return Verdict(held=[exc.message])


def skip_reason(
    condition: Condition, *, rows: Sequence[Any], data: Any, digest: str = "", last_sent: LastSent | None = None
) -> str:
    """Why the run is not sent, in words ("Not sent: …"); "" when it is sent.

    `digest` is `rows_hash(rows)` and `last_sent` the report's last sent run, for CHANGED.
    FigureError when a THRESHOLD's figure cannot be read.
    """
    if condition.kind == HAS_ROWS and not rows:
        return "Not sent: only if there are rows, and the data has none."
    if condition.kind == THRESHOLD:
        figure = read_figure(condition, rows=rows, data=data)
        _words, compare = OPERATORS[condition.operator]
        if condition.threshold is not None and not compare(figure, condition.threshold):
            return f"Not sent: {in_words(condition)}, and it is {number_in_words(figure)}."
    if condition.kind == CHANGED and last_sent is not None and last_sent.rows_hash == digest:
        return (
            f"Not sent: only if the data changed, and it is the same as run #{last_sent.run_id} "
            f"sent on {last_sent.sent_on}."
        )
    return ""


def read_figure(condition: Condition, *, rows: Sequence[Any], data: Any) -> Decimal:
    """The figure a THRESHOLD compares: the value at its path, or the total of its field over the rows."""
    if condition.figure_is == TOTAL:
        total = Decimal(0)
        for number, row in enumerate(rows, start=1):
            value = value_at(row, condition.figure)
            if value is None:
                continue  # an empty cell adds nothing, as the email's totals
            amount = _decimal(value)
            if amount is None:
                raise FigureError(
                    f"Send only if: row {number}'s {condition.figure} is {value!r}, not a number, so the total of "
                    f"{condition.figure} cannot be compared with the threshold."
                )
            total += amount
        return total
    value = value_at(data, condition.figure)
    if value is None:
        raise FigureError(
            f"Send only if: the figure {condition.figure} is missing from the data, so it cannot be compared "
            "with the threshold."
        )
    amount = _decimal(value)
    if amount is None:
        raise FigureError(
            f"Send only if: the figure {condition.figure} is {value!r}, not a number, so it cannot be compared "
            "with the threshold."
        )
    return amount


def number_in_words(number: Decimal) -> str:
    """A number as staff read it: thousands separated, no trailing zeros (1,000,000; 950,000.5)."""
    text = f"{number:,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _figure_name(condition: Condition) -> str:
    return f"the total of {condition.figure}" if condition.figure_is == TOTAL else condition.figure


def _decimal(value: Any) -> Decimal | None:
    """A JSON number, or text that is one ("1234.50"), as a Decimal; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        # Through str: a float's shortest form (0.1, not 0.1000000000000000055…).
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None
