"""Recipients as text and as files: the attributes' "name = value" lines, and CSV / XLSX tables.

Plain values in and out, no database: the service (reporting/services/recipients.py) reads
and writes recipients. A table has the columns email, name, active, lists (list names
separated by ";") and one column per attribute (its header is the attribute's name; an empty
cell means the recipient has no such attribute). Problems are collected in words, each
naming its row (as a spreadsheet numbers it: the header is row 1) and column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from reporting.models import ATTRIBUTE_NAME, MAX_ATTRIBUTES, attributes_problems

# tablib (with pandas where installed) and openpyxl are imported where a file is read or
# written, not here: beat loads the admin, and this module with it, and reads no file
# (tests/test_beat_imports.py).
if TYPE_CHECKING:
    from openpyxl.cell import Cell

OWN_COLUMNS = ("email", "name", "active", "lists")
LIST_SEPARATOR = ";"
MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254
FORMATS = ("csv", "xlsx")
TRUE_WORDS = frozenset({"yes", "y", "true", "1", "active"})
FALSE_WORDS = frozenset({"no", "n", "false", "0", "inactive"})
# What makes a spreadsheet read a cell as a formula (OWASP, "CSV injection"); a plain number is read as one.
_FORMULA_START = frozenset("=+-@\t\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class TableError(Exception):
    """A file that cannot be read as a table at all, in words."""


# --- the attributes as "name = value" lines (the recipient's form) ------------------------------------------------


def attributes_as_text(attributes: dict[str, str]) -> str:
    return "\n".join(f"{name} = {value}" for name, value in sorted(attributes.items()))


def attributes_from_text(text: str) -> tuple[dict[str, str], list[str]]:
    """The attributes written one "name = value" per line, and what is wrong with them in words."""
    attributes: dict[str, str] = {}
    first_line: dict[str, int] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, equals, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:
            problems.append(f"Line {number} ({line.strip()[:40]!r}): write one attribute per line as name = value.")
        elif name in first_line:
            problems.append(f"Line {number}: '{name}' is already set on line {first_line[name]}; give it once.")
        elif not value:
            problems.append(f"Line {number}: '{name}' has no value: give one, or remove the line.")
        else:
            first_line[name] = number
            attributes[name] = value
    return attributes, problems + attributes_problems(attributes)


def attributes_brief(attributes: dict[str, str], *, limit: int = 80) -> str:
    """ "client_id=C001, currency=EUR", cut short with "…" past `limit` characters."""
    text = ", ".join(f"{name}={value}" for name, value in sorted(attributes.items()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- reading a table --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipientRow:
    """One row of an import: None for a column the file does not have (left as it is)."""

    row: int
    email: str
    name: str | None
    active: bool | None
    lists: list[str] | None
    attributes: dict[str, str | None]  # None: no such attribute (the cell is empty)


@dataclass
class Table:
    rows: list[RecipientRow] = field(default_factory=list)
    attribute_columns: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def format_of(filename: str) -> str:
    extension = filename.rpartition(".")[2].lower()
    if extension not in FORMATS:
        raise TableError(f"'{filename}' is neither a .csv nor an .xlsx file.")
    return extension


def read_table(content: bytes, *, filename: str) -> Table:
    """The recipients in a CSV or XLSX file, checked cell by cell; `problems` lists every one found."""
    cells = _read_cells(content, format_of(filename))
    if not cells or not any(_text(value) for value in cells[0]):
        raise TableError("The file is empty: its first row must name the columns (email, name, active, lists, …).")
    headers = [_text(value) for value in cells[0]]
    table = Table()
    columns = _columns(headers, table.problems)
    if table.problems:
        return table
    table.attribute_columns = [name for name in columns.values() if name not in OWN_COLUMNS]
    first_row: dict[str, int] = {}
    for number, values in enumerate(cells[1:], start=2):
        if len(values) > len(headers) and any(_text(value) for value in values[len(headers) :]):
            table.problems.append(f"Row {number}: it has more cells than the header has columns.")
            continue
        cell = {name: _text(values[index]) if index < len(values) else "" for index, name in columns.items()}
        if not any(cell.values()):
            continue  # a blank row
        row = _row(number, cell, table.problems)
        if row is None:
            continue
        key = row.email.lower()
        if key in first_row:
            table.problems.append(
                f"Row {number}, column email: {row.email} is already on row {first_row[key]} "
                "(addresses are the same whatever their case)."
            )
            continue
        first_row[key] = number
        table.rows.append(row)
    return table


def _read_cells(content: bytes, file_format: str) -> list[list[object]]:
    if file_format == "csv":
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TableError("The CSV file is not UTF-8 text: save it as “CSV UTF-8” and try again.") from exc
        try:
            # A cell quoted on export (below) reads back as it was.
            return [[_unquote(value) for value in row] for row in csv.reader(io.StringIO(text, newline=""))]
        except csv.Error as exc:
            raise TableError(f"The CSV file cannot be read: {exc}.") from exc
    from import_export.formats import base_formats

    try:
        dataset = base_formats.XLSX().create_dataset(content)
    except Exception as exc:  # openpyxl raises many kinds for a file that is not a workbook
        raise TableError("The file is not an Excel workbook (.xlsx) that can be read.") from exc
    return [list(dataset.headers or []), *(list(row) for row in dataset)]


def _columns(headers: list[str], problems: list[str]) -> dict[int, str]:
    """Column index → its name: our own columns whatever their case, attributes by their exact name."""
    columns: dict[int, str] = {}
    seen: dict[str, int] = {}
    for index, header in enumerate(headers):
        name = header.lower() if header.lower() in OWN_COLUMNS else header
        letter = _column_letter(index)
        if not name:
            problems.append(f"Column {letter} has no name in the header row: name it, or delete the column.")
            continue
        if name.lower() in seen:
            problems.append(f"Column {letter} ('{header}') is the same as column {_column_letter(seen[name.lower()])}.")
            continue
        if name not in OWN_COLUMNS and not ATTRIBUTE_NAME.fullmatch(name):
            problems.append(
                f"Column {letter} ('{header[:70]}') is not an attribute name: use letters, digits and underscores, "
                "not starting with a digit."
            )
        seen[name.lower()] = index
        columns[index] = name
    attributes = [name for name in columns.values() if name not in OWN_COLUMNS]
    if "email" not in columns.values():
        problems.append("The file has no email column: each row needs the recipient's email address.")
    if len(attributes) > MAX_ATTRIBUTES:
        problems.append(f"At most {MAX_ATTRIBUTES} attribute columns; the file has {len(attributes)}.")
    return columns


def _row(number: int, cell: dict[str, str], problems: list[str]) -> RecipientRow | None:
    found: list[str] = []
    email = cell["email"]
    if not email:
        found.append(f"Row {number}, column email: the email address is missing.")
    else:
        try:
            validate_email(email)
            if len(email) > MAX_EMAIL_LENGTH:
                raise ValidationError("too long")
        except ValidationError:
            found.append(f"Row {number}, column email: {email[:100]!r} is not a valid email address.")
    name = cell.get("name")
    if name is not None and len(name) > MAX_NAME_LENGTH:
        found.append(f"Row {number}, column name: longer than {MAX_NAME_LENGTH} characters.")
    elif name is not None and not name.isprintable():
        found.append(f"Row {number}, column name: it contains a line break or another control character.")
    active = _active(cell.get("active"))
    if active == "?":
        found.append(f"Row {number}, column active: {cell['active'][:20]!r} is not yes or no.")
    attributes = {column: value or None for column, value in cell.items() if column not in OWN_COLUMNS}
    for column, value in attributes.items():
        found += [f"Row {number}, column {column}: {problem}" for problem in attributes_problems({column: value or ""})]
    problems += found
    if found:
        return None
    lists = cell.get("lists")
    return RecipientRow(
        row=number,
        email=email,
        name=name,
        active=active if isinstance(active, bool) else None,  # "?" was refused above
        lists=None if lists is None else sorted({part.strip() for part in lists.split(LIST_SEPARATOR) if part.strip()}),
        attributes=attributes,
    )


def _active(value: str | None) -> bool | str | None:
    """True or False; None for no such column, "" for an empty cell, "?" for anything else."""
    if value is None or value == "":
        return value
    word = value.strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else "?"


def _text(value: object) -> str:
    """A cell as text, trimmed: numbers without a spurious ".0", dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


# --- writing a table --------------------------------------------------------------------------------------------


def export_rows(recipients: Iterable[dict]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of an export, from dicts of email, name, active, lists and attributes.

    Attribute columns are every attribute any recipient has, sorted by name: the file
    reads back in as the same recipients.
    """
    recipients = list(recipients)
    names = sorted({name for recipient in recipients for name in recipient["attributes"]})
    header = [*OWN_COLUMNS, *names]
    rows = [
        [
            recipient["email"],
            recipient["name"],
            "yes" if recipient["active"] else "no",
            f"{LIST_SEPARATOR} ".join(sorted(recipient["lists"])),
            *(recipient["attributes"].get(name, "") for name in names),
        ]
        for recipient in recipients
    ]
    return header, rows


def to_csv(header: list[str], rows: list[list[str]]) -> bytes:
    """CSV, UTF-8 with a byte-order mark; text a spreadsheet would run as a formula is quoted with "'"."""
    import tablib
    from import_export.formats import base_formats

    dataset = tablib.Dataset(*([_quote(value) for value in row] for row in rows), headers=header)
    return base_formats.CSV().export_data(dataset).encode("utf-8-sig")


def to_xlsx(header: list[str], rows: list[list[str]], *, title: str = "Recipients") -> bytes:
    """An .xlsx workbook whose every cell is text: never a formula, a number or an error code."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title)
    sheet.freeze_panes = "A2"
    for values in (header, *rows):
        sheet.append([_text_cell(sheet, value) for value in values])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _text_cell(sheet, value: str) -> Cell:
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, value=value)
    cell.data_type = "s"  # openpyxl would make "=…" a live formula
    return cell


def _is_formula_like(value: str) -> bool:
    return value[:1] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(value)


def _quote(value: str) -> str:
    """A leading "'" for text a spreadsheet would run (OWASP), and for text that starts with "'" itself.

    Quoting the latter too makes the quote reversible: `_unquote(_quote(v)) == v` for all text.
    """
    return "'" + value if _is_formula_like(value) or value.startswith("'") else value


def _unquote(value: str) -> str:
    if value.startswith("'") and (_is_formula_like(value[1:]) or value[1:].startswith("'")):
        return value[1:]
    return value
