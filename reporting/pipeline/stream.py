"""Large answers, read as they stream: the rows at a report's records path, never all held.

An answer larger than REPORTING["STREAM_ABOVE_BYTES"] is not parsed whole. `load` reads its
file once, a chunk at a time: it builds everything outside the rows (the rest of the
response, which templates read as before), and decodes the rows with Python's own JSON
decoder (C speed), checking and counting them and writing them to a temporary file in
batches. A `rowstore.RowStream` then stands in the data where the list of rows was: each time
it is iterated, it reads the rows back from that file, a batch at a time. Whatever iterates it
holds one batch of rows, whatever the size of the answer.

Plain values in, plain values out: this module knows JSON and files, not runs or reports.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from reporting.pipeline.rowstore import Columns, CsvLines, RowStream, RowWriter

CHUNK = 1024 * 1024
# A row of an answer larger than this is refused: one row is held whole while it is read.
MAX_ROW_CHARS = 64 * 1024 * 1024
# What `structure` keeps of JSON text: quotes, brackets and commas; and a string in what it kept.
_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in b'"[]{},')
_REDUCED_STRING = re.compile(rb'"[^"]*"')
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A JSON string (a key too: erring on the safe side) that may start with a formula character:
# one of them, or any escape (a tab, a return, or a \u escape of anything).
_MAYBE_FORMULA = re.compile(r'"(?:[=+\-@]|\\)')
_DECODER = json.JSONDecoder()
# What more text can still turn into a value: a literal or number cut at the end of a chunk.
_CUT_SHORT = 64


class JsonError(Exception):
    """The answer is not JSON this module can read; `message` says why, in words."""

    def __init__(self, message: str, *, detail: str = ""):
        super().__init__(message)
        self.message = message
        self.detail = detail


def streamable(head: bytes) -> bool:
    """Whether an answer starting with `head` can be streamed: UTF-8 (with or without a BOM)."""
    return json.detect_encoding(head[:4]) in ("utf-8", "utf-8-sig")


def structure(text: str) -> bytes:
    """The brackets and commas of JSON `text` outside its strings, each "{" and "}" written "[" and "]".

    What the limits count, at C speed: escaped backslashes and quotes go first, then every
    byte but a quote, a bracket or a comma, then the strings (now only their quotes and any
    brackets or commas they held).
    """
    encoded = text.encode("utf-8", "surrogatepass").replace(b"\\\\", b"").replace(b'\\"', b"")
    reduced = _REDUCED_STRING.sub(b"", encoded.translate(None, _NOT_STRUCTURE))
    return reduced.replace(b"{", b"[").replace(b"}", b"]")


def value_count(structure: bytes) -> int:
    """How many values the JSON of this `structure` holds: one per comma and opening bracket, and one more."""
    return structure.count(b",") + structure.count(b"[") + 1


def nesting_depth(structure: bytes, limit: int) -> int:
    """How deep the brackets of `structure` nest, counted up to `limit` + 1.

    Each pass removes the innermost pairs, so the passes needed are the depth: at most
    `limit` + 1 passes over a shrinking text, each at C speed.
    """
    brackets = structure.replace(b",", b"")
    depth = 0
    while brackets and depth <= limit:
        inner_removed = brackets.replace(b"[]", b"")
        if len(inner_removed) == len(brackets):  # unbalanced: the decoder will say where, unless too deep
            return depth + brackets.count(b"[")
        brackets, depth = inner_removed, depth + 1
    return depth


# --- reading JSON text from a binary file, a chunk at a time ----------------------------------


class _Text:
    """The UTF-8 text of a binary file from `offset` on, read a chunk at a time.

    Reads with an explicit seek before each chunk, so several readers can share one file.
    """

    def __init__(self, file: IO[bytes], offset: int = 0):
        self.file = file
        self.offset = offset  # of the next chunk in the file
        self.decode = codecs.getincrementaldecoder("utf-8")("surrogatepass").decode
        self.buffer = ""
        self.pos = 0
        self.base = offset  # the byte offset of buffer[0]
        self.eof = False
        self.before_drop: Callable[[str], None] | None = None

    def more(self, size: int | None = None) -> bool:
        """Add the next `size` bytes (a CHUNK) to the buffer, dropping what was read; False at the end."""
        if self.eof:
            return False
        if self.pos:
            read = self.buffer[: self.pos]
            if self.before_drop is not None:
                self.before_drop(read)
            self.base += len(read) if read.isascii() else len(read.encode("utf-8", "surrogatepass"))
            self.buffer, self.pos = self.buffer[self.pos :], 0
        self.file.seek(self.offset)
        data = self.file.read(size or CHUNK)
        self.offset += len(data)
        try:
            self.buffer += self.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise JsonError("The data source's answer is not valid UTF-8 text.", detail=str(exc)) from exc
        self.eof = not data
        return bool(data)

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end), without taking it."""
        while True:
            self.pos = _WHITESPACE.match(self.buffer, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self.more():
                return ""

    def closes(self, closing: str) -> bool:
        """After an item of a list or object: True at its closing bracket, False at a comma (either taken)."""
        found = self.peek()
        if found == closing:
            self.pos += 1
            return True
        if found != ",":
            raise self.invalid("Expecting ',' delimiter" if found else "Unexpected end of the answer")
        self.pos += 1
        return False

    def empty(self, closing: str) -> bool:
        """At the start of a list or object: whether it closes at once (its closing bracket then taken)."""
        if self.peek() != closing:
            return False
        self.pos += 1
        return True

    def take(self, expected: str) -> None:
        found = self.peek()
        if found != expected:
            raise self.invalid(f"Expecting '{expected}'" if found else "Unexpected end of the answer")
        self.pos += 1

    def value(self, *, max_chars: int | None = None) -> Any:
        """The next JSON value, read whole; more of the file is read while it is cut short."""
        self.peek()
        size = CHUNK
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof or not self._cut_short(exc):
                    ended = self.eof and exc.pos >= len(self.buffer)
                    raise self.invalid("Unexpected end of the answer" if ended else exc.msg, at=exc.pos) from exc
            except RecursionError as exc:
                raise JsonError("The data source's answer nests too deep to read.") from exc
            except ValueError as exc:  # Python's limit on the digits of an integer it converts
                raise JsonError(
                    "The data source's answer has a number too long to be read as a number.", detail=str(exc)
                ) from exc
            else:
                if end < len(self.buffer) or self.eof:  # a number at the very end may go on
                    self.pos = end
                    return value
            if max_chars is not None and len(self.buffer) - self.pos > max_chars:
                raise JsonError(
                    f"A row of the data source's answer is larger than {max_chars // (1024 * 1024)} MB, "
                    "more than a report reads."
                )
            self.more(size)
            size = min(size * 2, 64 * CHUNK)  # a long value is read in growing steps: linear, not quadratic

    def _cut_short(self, exc: json.JSONDecodeError) -> bool:
        """Whether more text could make this a value: the error is at the end of what was read."""
        return exc.msg.startswith("Unterminated string") or len(self.buffer) - exc.pos < _CUT_SHORT

    def invalid(self, message: str, *, at: int | None = None) -> JsonError:
        where = self.pos if at is None else at
        read = self.buffer[:where]
        offset = self.base + len(read.encode("utf-8", "surrogatepass"))
        return JsonError(
            f"The data source's answer is not valid JSON ({message} at byte {offset:,}).",
            detail=self.buffer[max(0, where - 200) : where + 300],
        )


# --- the rows ---------------------------------------------------------------------------------


class _CsvDraft:
    """The CSV lines of the rows, written in the pass that reads them: kept only if the rows turn
    out plain and complete, which only the end of the pass tells (see `RowStream.csv_lines`)."""

    def __init__(self) -> None:
        self.lines: CsvLines | None = None
        self.failed = False

    def add(self, rows: list[Any]) -> None:
        if self.failed:
            return
        try:
            if self.lines is None:
                if type(rows[0]) is not dict:
                    raise TypeError("not an object")
                self.lines = CsvLines(tempfile.TemporaryFile(), list(rows[0]))  # noqa: SIM115 -- see kept()
            self.lines.add(rows)
        except (KeyError, TypeError, ValueError, csv.Error):  # not plain rows: write_csv takes another way
            self.discard()

    def discard(self) -> None:
        self.failed = True
        if self.lines is not None:
            self.lines.out.close()
            self.lines = None

    def kept(self, rows: RowStream) -> IO[bytes] | None:
        """The file of CSV lines, if they are the CSV of `rows`; None (and the file gone) if not."""
        if self.lines is not None and rows.plain and rows.complete and self.lines.columns == rows.columns:
            try:
                self.lines.flush()
            except ValueError:  # text UTF-8 cannot carry (a lone surrogate): write_csv says so
                self.discard()
                return None
            return self.lines.out
        self.discard()
        return None


def _lists(text: _Text) -> Iterator[list[Any]]:
    """The values of a list whose "[" was taken, up to and with its "]", several at a time.

    Most answers are lists of objects: then all the rows in the buffer up to its last "},"
    are decoded in one call of the decoder's C scanner, as the list "[" + those rows + "]".
    That text is a list exactly when the cut falls between two rows (cut inside a row or a
    string, it is not valid JSON), and then it holds the very values the rows' own list does.
    When it is not, the rows are read one at a time from there on.
    """
    if text.empty("]"):
        return
    # The decoder's own scanner (what raw_decode calls, less a Python frame a row).
    scan, whitespace = _DECODER.scan_once, _WHITESPACE.match  # type: ignore[attr-defined]
    whole = True  # rows still taken a buffer at a time
    while True:
        if whole and len(text.buffer) - text.pos < CHUNK // 2:
            text.more()
        buffer, pos = text.buffer, text.pos
        if whole:
            cut = buffer.rfind("},", pos)
            if cut > pos:
                between = "[" + buffer[pos : cut + 1] + "]"
                try:
                    values, end = scan(between, 0)
                except (StopIteration, json.JSONDecodeError, RecursionError, ValueError):
                    end = 0
                if end == len(between):
                    text.pos = whitespace(buffer, cut + 2).end()  # type: ignore[union-attr]
                    yield values
                    continue
            whole = False
        # One value at a time, at C speed: a whole value, then its comma, in the buffer as it is.
        try:
            value, end = scan(buffer, pos)
        except (StopIteration, json.JSONDecodeError, RecursionError, ValueError):
            end = len(buffer)  # cut short, or wrong: text.value() reads on, or says what is wrong
        if end < len(buffer) - 1 and buffer[end] == ",":
            text.pos = whitespace(buffer, end + 1).end()  # type: ignore[union-attr]
            yield [value]
            continue
        if end < len(buffer) and buffer[end] == "]":
            text.pos = end + 1
            yield [value]
            return
        yield [text.value(max_chars=MAX_ROW_CHARS)]
        if text.closes("]"):
            return
        text.peek()  # past the whitespace, for the common case above


# --- loading an answer: everything but the rows, and where they are ---------------------------


def load(file: IO[bytes], records_path: str, *, max_depth: int, max_values: int, csv_lines: bool = False) -> Any:
    """The answer in `file` with the list at `records_path` replaced by a RowStream.

    Reads the file once, to its end: every row is decoded (and kept on disk, see RowWriter) so
    that a malformed one fails here, with its byte offset, and not in the middle of sending;
    `file` is not needed afterwards. Where the answer
    has no list at the records path, the value found there is kept as it is, and the caller's
    check of the records path says what is wrong. `max_depth` and `max_values` are the limits
    of REPORTING_MAX_JSON_DEPTH and _VALUES: depth is checked on every row, the number of
    values on what is held (everything outside the rows). With `csv_lines`, the rows' CSV lines
    are written in the same pass, for when they turn out plain and complete (RowStream.csv_lines).
    """
    file.seek(0)
    text = _Text(file, len(codecs.BOM_UTF8) if file.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8 else 0)
    path = [part for part in records_path.split(".") if part]
    loader = _Loader(text, max_depth=max_depth, max_values=max_values, csv_lines=csv_lines)
    data = loader.along(path, depth=0)
    if text.peek():
        raise text.invalid("Extra data")
    return data


class _Loader:
    def __init__(self, text: _Text, *, max_depth: int, max_values: int, csv_lines: bool = False):
        self.text = text
        self.max_depth = max_depth
        self.max_values = max_values
        self.values = 0
        self.csv_lines = csv_lines

    def along(self, path: list[str], *, depth: int) -> Any:
        """The value at the text's position, read whole except along `path` to the rows."""
        text = self.text
        found = text.peek()
        if not path and found == "[":
            return self.rows(depth)
        if path and found == "{":
            text.pos += 1
            return self._object(path, depth)
        if path and found == "[" and path[0].isdigit():
            text.pos += 1
            return self._array(path, depth)
        return self.held(depth)

    def held(self, depth: int) -> Any:
        """A value outside the rows: read whole and kept, within the limits."""
        start = self.text.pos
        value = self.text.value()
        self._check(self.text.buffer[start : self.text.pos], depth, count=True)
        return value

    def _object(self, path: list[str], depth: int) -> dict[str, Any]:
        text = self.text
        result: dict[str, Any] = {}
        closed = text.empty("}")
        while not closed:
            if text.peek() != '"':
                raise text.invalid("Expecting property name enclosed in double quotes")
            key = text.value()
            text.take(":")
            # As json.loads, a key given twice keeps its last value.
            result[key] = self.along(path[1:], depth=depth + 1) if key == path[0] else self.held(depth + 1)
            self.values += 1
            closed = text.closes("}")
        return result

    def _array(self, path: list[str], depth: int) -> list[Any]:
        text = self.text
        result: list[Any] = []
        closed = text.empty("]")
        while not closed:
            at_path = len(result) == int(path[0])
            result.append(self.along(path[1:], depth=depth + 1) if at_path else self.held(depth + 1))
            self.values += 1
            closed = text.closes("]")
        return result

    def rows(self, depth: int) -> RowStream:
        """Check and count the rows of the list at the text's position, find their columns; return them as a stream."""
        text = self.text
        text.pos += 1  # the "["
        unchecked = text.pos  # where the rows not yet checked start in the buffer
        containers = 0  # rows read since then that are objects or lists
        objects = 0  # rows that are objects, of all
        plain = True  # no text that may start with a formula character, no nested value: see RowStream.plain

        def check(span: str) -> None:
            nonlocal plain
            # A span with one bracket per object or list row nests no deeper than the rows: most answers.
            # Any other (a nested value, a bracket inside a string) is counted properly.
            if span.count("{") + span.count("[") != containers:
                plain = False
                self._check(span, depth + 1, count=False)
            elif plain and _MAYBE_FORMULA.search(span):
                plain = False

        def check_before_drop(read: str) -> None:
            nonlocal unchecked, containers
            check(read[unchecked:])
            unchecked, containers = 0, 0

        kept = RowWriter()
        columns = Columns()
        draft = _CsvDraft() if self.csv_lines else None
        text.before_drop = check_before_drop
        try:
            for rows in _lists(text):
                kept.extend(rows)
                if draft is not None:
                    draft.add(rows)
                if len(rows) > 1 and columns.add_objects(rows):  # most answers: objects only
                    containers += len(rows)
                    objects += len(rows)
                    continue
                for row in rows:
                    columns.add(row)
                    if isinstance(row, dict):
                        containers += 1
                        objects += 1
                    elif isinstance(row, list):
                        containers += 1
            check(text.buffer[unchecked : text.pos])
        except BaseException:
            if draft is not None:
                draft.discard()  # its file now, not when collected
            raise
        finally:
            text.before_drop = None
        stream = kept.rows()
        stream.columns = columns.names()
        stream.plain = plain and objects == stream.length
        stream.complete = columns.complete and objects == stream.length
        if draft is not None:
            stream.csv_lines = draft.kept(stream)
        return stream

    def _check(self, span: str, depth: int, *, count: bool) -> None:
        """The limits on JSON text read: its nesting (below `depth`), and what is held."""
        if not span or span.isdigit():
            return
        shape = structure(span)
        if count:
            self.values += value_count(shape)
            if self.values > self.max_values:
                raise JsonError(
                    f"The data source's answer has more than {self.max_values:,} values outside its rows; "
                    "the limit is REPORTING_MAX_JSON_VALUES."
                )
        if depth + nesting_depth(shape, self.max_depth) > self.max_depth:
            raise JsonError(
                f"The data source's answer nests deeper than {self.max_depth} levels of lists and objects "
                "(REPORTING_MAX_JSON_DEPTH), more than any report reads."
            )


# --- writing an answer out again ---------------------------------------------------------------


def write(data: Any, out: IO[bytes], rows: Iterable[Any] | None = None) -> None:
    """Write `data` as JSON to `out`, the RowStream in it as the list of `rows` (its own by default)."""
    marker = f"\u2063rows-{id(out)}\u2063"
    streams: list[RowStream] = []

    def placeholder(value: Any) -> str:
        if isinstance(value, RowStream):
            streams.append(value)
            return marker
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    text = json.dumps(data, ensure_ascii=False, default=placeholder)
    before, _marker, after = text.partition(json.dumps(marker, ensure_ascii=False))
    out.write(before.encode("utf-8", "surrogatepass"))
    if streams:
        rows = streams[0] if rows is None else rows
        out.write(b"[")
        batch: list[str] = []
        for index, row in enumerate(rows):
            batch.append(("," if index else "") + json.dumps(row, ensure_ascii=False))
            if len(batch) >= 1000:
                out.write("".join(batch).encode("utf-8", "surrogatepass"))
                batch = []
        out.write("".join(batch).encode("utf-8", "surrogatepass") + b"]")
        out.write(after.encode("utf-8", "surrogatepass"))
