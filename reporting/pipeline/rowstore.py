"""Rows kept on disk and read back a batch at a time: what stands in a large answer's list of rows.

A `RowStream` is written by a `RowWriter` (reporting.pipeline.stream.load writes one as it reads
an answer; `sorted_rows` writes one in another order) and read as often as needed, never all
held. `CsvLines` writes the CSV lines of rows whose cells need no converting at C speed.

Plain values in, plain values out: this module knows rows and files, not runs or reports.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import io
import itertools
import marshal
import operator
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

READ_BYTES = 1024 * 1024  # of a kept file, read at a time


class OutOfOrder(Exception):
    """Asked of streamed rows what only holding them all could answer: reversed, sorted, regrouped."""

    def __init__(self) -> None:
        self.message = (
            "The rows of this answer are too many to hold at once: a template can read them in order "
            "(for, first, last, length, slice), not reverse, sort or regroup them."
        )
        super().__init__(self.message)


class Columns:
    """Column names in order of first appearance across rows, added one row at a time: an
    object's keys, "column N" for the items of a list, "value" for anything else."""

    def __init__(self) -> None:
        self._names: dict[str, None] = {}
        self._previous_keys: Any = None
        self._list_width = 0
        # Every row so far an object with the same keys (in any order): each holds every column.
        self.complete = True

    def add(self, row: Any) -> None:
        if isinstance(row, dict):
            # Rows of an API mostly share their keys: a row with the keys of the one before adds none.
            if row.keys() != self._previous_keys:  # compared as sets
                if self._previous_keys is not None:
                    self.complete = False
                self._names.update(dict.fromkeys(str(key) for key in row))
                self._previous_keys = row.keys()
            return
        self.complete = False
        if isinstance(row, list):
            if len(row) > self._list_width:
                self._names.update(dict.fromkeys(f"column {index + 1}" for index in range(self._list_width, len(row))))
                self._list_width = len(row)
        else:
            self._names["value"] = None

    def add_objects(self, rows: list[Any]) -> bool:
        """`add` for each of `rows` if all are objects, in loops at C speed; False (nothing added) if not."""
        try:
            orders = dict.fromkeys(map(tuple, map(dict.keys, rows)))  # each distinct order of keys, once
        except TypeError:  # dict.keys of a row that is not an object
            return False
        for keys in orders:
            self.add(dict.fromkeys(keys))
        return True

    def names(self) -> list[str]:
        return list(self._names)


class RowStream(Sequence):
    """Rows kept on disk, read again each time they are iterated: a batch at a time in memory.

    Stands in the data where the list of rows was: `len`, iteration, truth, an index and a
    forward slice work as on the list. Reading the rows backwards raises OutOfOrder: that would
    mean holding them all. The rows are kept as the JSON decoder made them, in batches written
    with `marshal` (plain values only: read back exactly, three to four times faster than
    decoding their JSON again) to a temporary file of this process's own: see `RowWriter`.
    """

    def __init__(self, file: IO[bytes], batches: list[tuple[int, int]], count: int):
        self.file = file
        self.batches = batches  # (offset, size) in `file` of each batch of BATCH rows (the last maybe fewer)
        self.length = count
        self.sorted_by: dict[Any, RowStream] = {}  # the rows in a layout's order, once sorted (layout.order)
        self.columns: list[str] | None = None  # the rows' columns, once found (render.columns_of)
        # Every row an object of plain values, no text in it starting with a character that makes a
        # spreadsheet read a formula ("=", "+", "-", "@", a tab or return), as far as its JSON text
        # shows: then the CSV needs no cell converted (render.write_csv). False when not known.
        self.plain = False
        # Every row an object with every column (the same keys): its cells can be taken at C speed.
        self.complete = False
        # The rows' CSV lines (no header), written as they were read when `load` was asked to: only
        # when the rows are plain and complete, with `columns` as the CSV's columns (see CsvLines).
        self.csv_lines: IO[bytes] | None = None

    def __len__(self) -> int:
        return self.length

    def __bool__(self) -> bool:
        return self.length > 0

    def __iter__(self) -> Iterator[Any]:
        return self._from(0)

    def _from(self, first_batch: int) -> Iterator[Any]:
        for batch in self.lists(first_batch):
            yield from batch

    def lists(self, first_batch: int = 0) -> Iterator[list[Any]]:
        """The rows a batch at a time, each a list: for loops that take a whole batch at C speed."""
        for offset, size in self.batches[first_batch:]:
            self.file.seek(offset)  # each reader its own place: several may read at once
            yield marshal.loads(self.file.read(size))

    def csv_chunks(self) -> Iterator[bytes]:
        """The bytes of `csv_lines`, a chunk at a time (several readers may read at once)."""
        if self.csv_lines is None:
            return
        offset = 0
        while True:
            self.csv_lines.seek(offset)
            chunk = self.csv_lines.read(READ_BYTES)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self.length)
            if step < 0:
                raise OutOfOrder()
            if start >= stop:
                return []
            skipped = start // BATCH * BATCH
            return list(itertools.islice(self._from(start // BATCH), start - skipped, stop - skipped, step))
        position = index + self.length if index < 0 else index
        if not 0 <= position < self.length:
            raise IndexError("row index out of range")
        return self[position : position + 1][0]

    def __reversed__(self) -> Iterator[Any]:
        raise OutOfOrder()

    def __repr__(self) -> str:
        return f"<RowStream of {self.length:,} rows>"


BATCH = 1000  # rows a RowStream writes and reads at a time


class RowWriter:
    """Writes rows to a temporary file, a batch at a time, to read them back as a RowStream."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 -- the RowStream made of it owns it
        self.batches: list[tuple[int, int]] = []
        self.count = 0
        self._batch: list[Any] = []

    def add(self, row: Any) -> None:
        self._batch.append(row)
        if len(self._batch) >= BATCH:
            self._flush()

    def extend(self, rows: list[Any]) -> None:
        batch = self._batch
        batch.extend(rows)
        if len(batch) >= BATCH:
            self._batch = []
            for start in range(0, len(batch) - BATCH + 1, BATCH):
                self._write(batch[start : start + BATCH])
            self._batch = batch[len(batch) // BATCH * BATCH :]

    def _flush(self) -> None:
        if self._batch:
            self._write(self._batch)
            self._batch = []

    def _write(self, batch: list[Any]) -> None:
        written = marshal.dumps(batch)
        self.batches.append((self.file.tell(), len(written)))
        self.file.write(written)
        self.count += len(batch)

    def rows(self) -> RowStream:
        self._flush()
        return RowStream(self.file, self.batches, self.count)


CSV_TEXT_CHARS = 256 * 1024  # CSV text held before it is encoded and written out


class CsvLines:
    """CSV lines of rows that are objects holding every one of `columns`, written to `out` as UTF-8.

    The cells are written as they are, with no Python code per row (`operator.itemgetter` into
    `csv.writer.writerows`, into text encoded a chunk at a time): only for rows whose cells
    need no converting, which render.write_csv knows (RowStream.plain). A row that is not an
    object, or lacks a column, raises KeyError or TypeError.
    """

    def __init__(self, out: IO[bytes], columns: list[str]):
        if len(columns) < 2:  # itemgetter of one name gives the cell, not a row of cells
            raise ValueError("CsvLines needs at least two columns")
        self.out = out
        self.columns = columns
        self.cells = operator.itemgetter(*columns)
        self._start_text()

    def _start_text(self) -> None:
        # A new StringIO each time: one only written to keeps ASCII text at a byte a character.
        self.text = io.StringIO()
        self.writer = csv.writer(self.text, lineterminator="\r\n")

    def add(self, rows: list[Any]) -> None:
        self.writer.writerows(map(self.cells, rows))
        if self.text.tell() >= CSV_TEXT_CHARS:
            self.flush()

    def flush(self) -> None:
        self.out.write(self.text.getvalue().encode("utf-8"))
        self._start_text()


# --- sorting more rows than memory holds -------------------------------------------------------


def sorted_rows(rows: Iterable[Any], key: Callable[[Any], Any], *, run_size: int = 20_000) -> RowStream:
    """The rows sorted by `key` (a stable sort), as a RowStream.

    An external merge sort: runs of at most `run_size` rows are sorted in memory and written to
    temporary files, then merged into the result, so at most `run_size` rows are held at once.
    """
    numbered = enumerate(rows)
    result = RowWriter()
    with contextlib.ExitStack() as spools:
        runs: list[IO[bytes]] = []
        while run := sorted(
            ((key(row), index, row) for index, row in itertools.islice(numbered, run_size)), key=_first_two
        ):
            spool = spools.enter_context(tempfile.TemporaryFile())
            for item in run:
                pickle.dump(item, spool, protocol=pickle.HIGHEST_PROTOCOL)
            spool.seek(0)
            runs.append(spool)
        for _key, _index, row in heapq.merge(*map(_unpickled, runs), key=_first_two):
            result.add(row)
    return result.rows()


def _first_two(item: tuple[Any, int, Any]) -> tuple[Any, int]:
    return item[0], item[1]


def _unpickled(spool: IO[bytes]) -> Iterator[Any]:
    """What was pickled to `spool`, one item after another: our own temporary file, written just before."""
    while True:
        try:
            yield pickle.load(spool)
        except EOFError:
            return
