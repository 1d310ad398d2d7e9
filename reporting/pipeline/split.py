"""Split: one answer's rows divided among recipients, and what each recipient's report is made of.

Plain values in, plain values out. The rule that keeps each recipient to their own rows is
strict on purpose: a row belongs to a recipient only when its field, as text, equals the
recipient's attribute exactly. Text is compared as it is (no trimming, no case folding:
"ACME" is not "acme", "C1 " is not "C1"), a whole number as its decimal digits (7 is "7",
never "007"), and anything else (missing, null, true/false, a fraction, a list, an object)
matches nobody. A row that matches nobody is sent to nobody and counted.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from numbers import Number
from operator import itemgetter
from typing import Any
from urllib.parse import quote

from reporting.pipeline import rowstore

_MISSING = object()


@dataclass(frozen=True)
class Split:
    rows_by_key: dict[str, list[Any]]  # every key asked for, with its rows ([] when none)
    unmatched: int  # rows whose field matched no key (missing, null, another type, or nobody's)


def value_at(row: Any, field: str) -> Any:
    """The value at the dotted `field` within `row`, or _MISSING."""
    node = row
    for name in field.split("."):
        if not isinstance(node, dict) or name not in node:
            return _MISSING
        node = node[name]
    return node


def match_key(value: Any) -> str | None:
    """The text a row's field is matched on, or None when it can match nobody."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def split_rows(rows: Sequence[Any], field: str, keys: set[str]) -> Split:
    """Each row to the one key its `field` equals exactly; the rows of other keys are not kept."""
    rows_by_key: dict[str, list[Any]] = {key: [] for key in keys}
    unmatched = 0
    for row in rows:
        key = match_key(value_at(row, field))
        mine = rows_by_key.get(key) if key is not None else None
        if mine is None:
            unmatched += 1
        else:
            mine.append(row)
    return Split(rows_by_key=rows_by_key, unmatched=unmatched)


class KeyOrder:
    """The rows of each key asked for, key after key in sorted order: for dividing a whole answer among many.

    The matched rows are sorted by key on disk (rowstore.sorted_rows, stable: each key's rows stay
    in their order), so at most a sort run's rows and one key's rows are held, however large the
    answer. Iterating gives (key, rows) for the keys that have rows; `unmatched` counts the rest.
    """

    def __init__(self, rows: Iterable[Any], field: str, keys: set[str]):
        self.unmatched = 0
        self._sorted = rowstore.sorted_rows(self._matched(rows, field, keys), key=itemgetter(0))

    def _matched(self, rows: Iterable[Any], field: str, keys: set[str]) -> Iterator[tuple[str, Any]]:
        for row in rows:
            key = match_key(value_at(row, field))
            if key is None or key not in keys:
                self.unmatched += 1
            else:
                yield key, row

    def __iter__(self) -> Iterator[tuple[str, list[Any]]]:
        for key, pairs in itertools.groupby(self._sorted, key=itemgetter(0)):
            yield key, [row for _key, row in pairs]


def data_with_rows(records_path: str, rows: Sequence[Any]) -> Any:
    """The recipient's data: their rows at `records_path` and nothing else of the answer.

    Whatever else the answer held (totals over all clients, other clients' names) is not
    theirs to see, so the templates of a split report get only this.
    """
    data: Any = rows
    for name in reversed([name for name in records_path.split(".") if name]):
        data = {name: data}
    return data


def column_totals(rows: Sequence[Any], columns: list[str]) -> dict[str, float | int]:
    """The sum of each column whose values are all numbers (ignoring empty cells) over `rows`."""
    totals: dict[str, float | int] = {}
    for column in columns:
        total: float | int = 0
        numeric = False
        for row in rows:
            value = row.get(column) if isinstance(row, dict) else None
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, Number):
                numeric = False
                break
            total += value  # type: ignore[operator]
            numeric = True
        if numeric:
            totals[column] = round(total, 10) if isinstance(total, float) else total
    return totals


def recipient_values(*, email: str, name: str, attributes: dict[str, str]) -> dict[str, str]:
    """The recipient as templates see it: their email, name and attributes, plain text only."""
    return {**{str(key): str(value) for key, value in attributes.items()}, "email": email, "name": name}


def values_for_path(values: dict[str, str]) -> dict[str, str]:
    """The recipient's values as path segments: every character but letters, digits and -._~ percent-encoded.

    A value cannot start a query or fragment ("?", "#") or carry its own escapes ("%"). A value
    that would lead elsewhere however it is encoded (with "/" or "\\", servers that decode
    before routing see a new segment; "." and "..") becomes a marker that `path_problem` refuses,
    so that the path fails only when it uses it.
    """
    safe = {}
    for key, value in values.items():
        unsafe = value in {".", ".."} or "/" in value or "\\" in value
        safe[key] = f"{_UNSAFE}{key}{_UNSAFE}" if unsafe else quote(value, safe="")
    return safe


_UNSAFE = "\x00"


def path_problem(path: str) -> str:
    """What makes a rendered path lead somewhere other than it says, in words ('' when nothing)."""
    if _UNSAFE in path:
        key = path.split(_UNSAFE)[1]
        return (
            f"The recipient's '{key}' cannot be used in the path: it contains '/' or '\\', or is '.' or '..', "
            "which would lead to another address."
        )
    inner = path.split("?", 1)[0].strip("/")
    segments = inner.split("/") if inner else []
    if any(segment in {".", ".."} for segment in segments):
        return f"The path would be '{path}': a segment '.' or '..' would lead to another address."
    if "" in segments:
        return f"The path would be '{path}', with an empty segment: a recipient attribute it uses is empty."
    return ""
