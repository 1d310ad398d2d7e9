"""Render: subject, HTML and text parts and attachments from a report's data.

Plain values in, plain values out. Templates are Django templates rendered in the sandbox
(reporting.pipeline.sandbox): plain data only, a fixed set of tags and filters, bounded time
and output. The HTML part is autoescaped; the subject and the text part are not (they are
not HTML), so whatever shows them in a page must escape them.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.template import TemplateDoesNotExist, TemplateSyntaxError
from django.utils import timezone, translation

from reporting.periods import Period
from reporting.pipeline import charts as charts_module
from reporting.pipeline import formats, pdf, rowstore, sandbox, xlsx
from reporting.pipeline import layout as layout_module

GENERIC_TEXT_TEMPLATE = "reporting/email/report.txt"
# What a file name keeps of a recipient's key: anything else becomes "-".
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9_.-]")
# What the sandbox prints for a variable it cannot find (the MISSING_VARIABLE_MARK setting, reporting.conf).
_MISSING = re.compile("\u2063missing:(.*?)\u2063")


class RenderError(Exception):
    """The report could not be rendered; always permanent: the same input fails again."""

    def __init__(self, message: str, *, detail: str = ""):
        super().__init__(message)
        self.message = message
        self.detail = detail


# A file made larger than this goes to a temporary file, not memory (Attachment.spool); one
# up to IN_MEMORY_BYTES is kept as bytes (Attachment.content), larger ones stay in their spool.
SPOOL_BYTES = 8 * 1024 * 1024
IN_MEMORY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes  # b"" when the file is in `spool`
    mimetype: str
    content_id: str = ""  # set for an image shown inside the HTML as <img src="cid:…">
    spool: IO[bytes] | None = None  # a large file's content, in a temporary file

    @property
    def size(self) -> int:
        if self.spool is None:
            return len(self.content)
        return self.spool.seek(0, io.SEEK_END)

    def read(self) -> bytes:
        """The whole content, from memory or from the temporary file."""
        if self.spool is None:
            return self.content
        self.spool.seek(0)
        return self.spool.read()

    def open(self) -> IO[bytes]:
        """The content as a binary file, read from its start."""
        if self.spool is None:
            return io.BytesIO(self.content)
        self.spool.seek(0)
        return self.spool


def spooled_attachment(filename: str, mimetype: str, write: Callable[[IO[bytes]], None]) -> Attachment:
    """An attachment whose content `write` writes: in memory up to SPOOL_BYTES, else in a temporary file."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 -- the attachment owns it
    write(spool)
    if spool.tell() <= IN_MEMORY_BYTES:
        spool.seek(0)
        content = spool.read()
        spool.close()
        return Attachment(filename, content, mimetype)
    return Attachment(filename, b"", mimetype, spool=spool)


@dataclass(frozen=True)
class RenderRequest:
    template_name: str  # e.g. "reports/portfolio_summary.html"
    subject_template: str
    report: dict[str, Any]  # name, slug, description: what templates may show
    period: Period
    data: Any
    rows: Sequence[Any]  # a list, or a RowStream for a large answer (reporting.pipeline.stream)
    generated_at: datetime
    timezone: str = "UTC"  # dates and times in the email are shown in the report's timezone
    attach_csv: bool = True
    attach_xlsx: bool = False
    attach_pdf: bool = False  # the email as a paged PDF (reporting.pipeline.pdf)
    pdf_paper: str = pdf.A4
    charts: tuple[charts_module.ChartSpec, ...] = ()
    max_rows: int | None = None  # rows shown in the email (the CSV has them all); None: every row
    context_extra: dict[str, Any] = field(default_factory=dict)
    file_suffix: str = ""  # e.g. a recipient's client id: their files are named after it
    subject_prefix: str = ""  # e.g. "[Test] " on a test send, so that nobody takes it for the real one
    layout: layout_module.Layout | None = None  # the designed layout: the table, its files' columns, the headline
    locale: str = formats.DEFAULT_LOCALE  # how the layout writes numbers, amounts and dates
    # Given the files made (and the charts), those the email links to instead of attaching, each a
    # {"filename", "size", "url"}: the email says so in its one rendering (attachments.links_to_files).
    link_files: Callable[[list[Attachment]], list[dict[str, str]]] | None = None


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    attachments: list[Attachment]  # files, then the charts' images (with a content_id)
    links: list[dict[str, str]] = field(default_factory=list)  # the files it links to, from `link_files`

    @property
    def files(self) -> list[Attachment]:
        return [attachment for attachment in self.attachments if not attachment.content_id]

    @property
    def inline_images(self) -> list[Attachment]:
        return [attachment for attachment in self.attachments if attachment.content_id]


def load_libraries() -> None:
    """Import what rendering draws and writes with (matplotlib, Babel, openpyxl, jsonschema) now.

    Each is otherwise imported at its first use, so that beat, which renders nothing, does not
    load them (tests/test_beat_imports.py). Workers and the web call this at start, as they
    loaded them before: a worker before forking its pool, whose children then share them.
    WeasyPrint stays where a PDF is made: it needs system libraries a machine may lack.
    """
    import babel.dates
    import babel.numbers  # noqa: F401
    import jsonschema  # noqa: F401
    import openpyxl  # noqa: F401

    charts_module.load_matplotlib()


def render(request: RenderRequest) -> RenderedEmail:
    # The same email whichever process renders it: the report's timezone, the site's language.
    with timezone.override(request.timezone), translation.override(settings.LANGUAGE_CODE):
        return _render(request)


def _render(request: RenderRequest) -> RenderedEmail:
    columns = columns_of(request.rows)
    # Only the rows the email shows are laid out as cells: the CSV carries the rest.
    shown_rows = request.rows if request.max_rows is None else request.rows[: request.max_rows]
    images = _draw_charts(request)
    zone = ZoneInfo(request.timezone)
    rows = request.rows
    designed = None
    if request.layout is not None:
        rows = layout_module.order(request.rows, request.layout)
        shown = len(rows) if request.max_rows is None else request.max_rows
        designed = layout_module.lay_out(
            request.layout, request.data, rows, shown=shown, locale=request.locale, zone=zone
        )
    # The files first: the email says which of them it links to rather than attaches.
    files = _files(request, rows, columns, zone)
    links = request.link_files([*files, *(image for image, _title in images)]) if request.link_files else []
    context = {
        "report": dict(request.report),
        "period": period_values(request.period),
        "data": request.data,
        "rows": request.rows,
        "shown_rows": shown_rows,
        "max_rows": request.max_rows,
        "columns": columns,
        "table": [[_cell(row, column) for column in columns] for row in shown_rows],
        "generated_at": request.generated_at,
        "attach_csv": request.attach_csv,
        "attach_xlsx": request.attach_xlsx,
        "charts": [{"cid": image.content_id, "title": title} for image, title in images],
        "designed": designed,
        **(link_context(links, files) if links else {}),
        **request.context_extra,
    }
    if designed is not None and request.layout is not None and request.layout.intro:
        designed["intro"] = render_string(request.layout.intro, context, what="layout's intro text")
    subject = request.subject_prefix + render_subject(request.subject_template, context)
    html = _render_file([request.template_name], context, "body", html=True)
    text_names = [_text_template_for(request.template_name), GENERIC_TEXT_TEMPLATE]
    text = with_links_in_text(_render_file(text_names, context, "text part", html=False), links)
    if request.attach_pdf:
        document = _pdf(request, html, [image for image, _title in images])
        files.append(Attachment(_filename(request, "pdf"), document, pdf.MIMETYPE))
    return RenderedEmail(
        subject=subject, html=html, text=text, attachments=[*files, *(image for image, _title in images)], links=links
    )


def _files(request: RenderRequest, rows: Sequence[Any], columns: list[str], zone: ZoneInfo) -> list[Attachment]:
    """The CSV and XLSX the report attaches, as asked (the PDF is made of the email, later)."""
    files = []
    layout = request.layout
    if request.attach_csv:

        def write_csv_file(out: IO[bytes]) -> None:
            if layout is None:
                write_csv(out, request.rows, columns)
            else:
                write_designed_csv(out, rows, layout, request.locale, zone)

        files.append(spooled_attachment(_filename(request, "csv"), "text/csv", write_csv_file))
    if request.attach_xlsx:

        def write_xlsx_file(out: IO[bytes]) -> None:
            title = request.report["name"]
            if layout is None:
                xlsx.write_xlsx(out, request.rows, columns, sheet_title=title, timezone=request.timezone)
            else:
                xlsx.write_designed_xlsx(out, rows, layout, locale=request.locale, sheet_title=title, zone=zone)

        try:
            files.append(spooled_attachment(_filename(request, "xlsx"), xlsx.MIMETYPE, write_xlsx_file))
        except xlsx.TooManyRows as exc:
            raise RenderError(exc.message) from exc
    return files


def still_attached(attachments: list[Attachment], links: list[dict[str, str]]) -> list[Attachment]:
    """The attachments an email still carries when it links to `links`: the files not linked, and its images."""
    linked = {link["filename"] for link in links}
    return [each for each in attachments if each.content_id or each.filename not in linked]


def link_context(links: list[dict[str, str]], files: list[Attachment]) -> dict[str, Any]:
    """What templates are told of the files linked rather than attached, and of those still attached."""
    attached = still_attached(files, links)
    return {
        "linked_attachments": links,
        "attach_csv": any(each.mimetype == "text/csv" for each in attached),  # "the attached CSV has them all"
        "attach_xlsx": any(each.mimetype == xlsx.MIMETYPE for each in attached),
    }


def with_links_in_text(text: str, links: list[dict[str, str]]) -> str:
    """`text`, with the links its template left out added at its end: a report's own text template
    may not include the generic link block."""
    missing = [link for link in links if link["url"] not in text]
    return text.rstrip("\n") + "\n\n" + "".join(map(_link_in_text, missing)) if missing else text


def _link_in_text(link: dict[str, str]) -> str:
    return f"{link['filename']} ({link['size']}) is too large to attach. Download it from the archive:\n{link['url']}\n"


def chart_specs(raw: Any) -> tuple[charts_module.ChartSpec, ...]:
    """A report's `charts` definition as specs; RenderError in words when it is not valid."""
    try:
        return tuple(charts_module.parse_specs(raw))
    except charts_module.ChartError as exc:
        raise RenderError(f"The report's charts are not valid: {exc.message}") from exc


def _draw_charts(request: RenderRequest) -> list[tuple[Attachment, str]]:
    """Each declared chart as a PNG to show inline, with its title; RenderError in words."""
    drawn = []
    labels = {column.field: column.label for column in request.layout.columns} if request.layout else {}
    for number, spec in enumerate(request.charts, start=1):
        try:
            rows = charts_module.rows_for(spec, request.data, request.rows)
            chart = charts_module.draw(spec, rows, period_label=request.period.label, labels=labels)
        except charts_module.ChartError as exc:
            raise RenderError(f"Chart {number} cannot be drawn: {exc.message}") from exc
        name = f"chart-{number}.png"
        drawn.append((Attachment(name, chart.png, "image/png", content_id=name), chart.title))
    return drawn


def _pdf(request: RenderRequest, html: str, images: list[Attachment]) -> bytes:
    """The email's HTML and charts as a PDF; RenderError in words when it cannot be made here."""
    try:
        return pdf.html_to_pdf(
            html,
            title=request.report["name"],
            period_label=request.period.label,
            paper=request.pdf_paper,
            images={image.content_id: (image.mimetype, image.content) for image in images},
        )
    except pdf.PdfError as exc:
        raise RenderError(exc.message, detail=exc.detail) from exc


def period_values(period: Period) -> dict[str, Any]:
    """A period as templates see it: plain values, no object to walk from."""
    return {
        "start": period.start,
        "end": period.end,
        "label": period.label,
        "key": period.key,
        "kind": period.kind,
        "at": period.at,
    }


def render_subject(subject_template: str, context: dict[str, Any], *, strict: bool = True) -> str:
    """The subject line; `strict=False` lets variables the context lacks pass (the form has no data)."""
    subject = _in_sandbox(
        lambda: sandbox.render_string(subject_template, context, what="subject template").strip(),
        what="subject template",
        syntax_error="The subject template has an error: {}",
    )
    subject = _check_missing(subject, "subject") if strict else _MISSING.sub("", subject) or "(subject)"
    if "\n" in subject or "\r" in subject:
        raise RenderError("The subject would contain a line break, which email headers cannot carry.")
    if not subject:
        raise RenderError("The subject template rendered to an empty subject.")
    return subject


def render_string(template_text: str, context: dict[str, Any], *, what: str, strict: bool = True) -> str:
    """Render a one-line template such as a path or query parameter (not HTML)."""
    rendered = _in_sandbox(
        lambda: sandbox.render_string(template_text, context, what=what).strip(),
        what=what,
        syntax_error=f"The {what} has a template error: {{}}",
    )
    return _check_missing(rendered, what) if strict else _MISSING.sub("", rendered)


def _in_sandbox(render_it: Callable[[], str], *, what: str, syntax_error: str) -> str:
    """What `render_it` renders, or RenderError in words: a mistake, a limit, a layout not allowed."""
    try:
        return render_it()
    except (sandbox.TemplateLimitError, rowstore.OutOfOrder) as exc:
        raise RenderError(exc.message) from exc
    except TemplateSyntaxError as exc:
        raise RenderError(syntax_error.format(exc)) from exc
    except TemplateDoesNotExist as exc:
        raise RenderError(
            f"The {what} includes or extends '{exc}', which is not one of the layouts under "
            f"{' or '.join(sandbox.LAYOUT_FOLDERS)}."
        ) from exc
    except Exception as exc:  # a filter or tag failing on unexpected data
        raise RenderError(f"The {what} failed on this data: {type(exc).__name__}: {exc}") from exc


def columns_of(rows: Iterable[Any]) -> list[str]:
    """Column names in order of first appearance across the rows."""
    if isinstance(rows, rowstore.RowStream):  # found as they were loaded: reading them again takes a pass
        if rows.columns is None:
            rows.columns = _columns_of(rows)
        return list(rows.columns)
    return _columns_of(rows)


def _columns_of(rows: Iterable[Any]) -> list[str]:
    columns = rowstore.Columns()
    for row in rows:
        columns.add(row)
    return columns.names()


def rows_to_csv(rows: Sequence[Any], columns: list[str] | None = None) -> bytes:
    """CSV with a header row, UTF-8 with a byte-order mark so spreadsheet programs read it right."""
    buffer = io.BytesIO()
    write_csv(buffer, rows, columns if columns is not None else columns_of(rows))
    return buffer.getvalue()


def write_csv(out: IO[bytes], rows: Iterable[Any], columns: list[str]) -> None:
    """`rows_to_csv`, written to `out` as the rows come."""
    header = [_csv_value(column) for column in columns]  # names come from the API too
    if isinstance(rows, rowstore.RowStream) and _cells_as_they_are(rows, columns):
        out.write(codecs.BOM_UTF8)
        if rows.csv_lines is not None:  # written as the answer was read
            out.write(_csv_line(header).encode("utf-8"))
            for chunk in rows.csv_chunks():
                out.write(chunk)
            return
        lines = rowstore.CsvLines(out, columns)
        lines.writer.writerow(header)
        for batch in rows.lists():
            lines.add(batch)
        lines.flush()
        return
    # Encoded as it is written: no second copy of the whole file as one str.
    with _text_on(out) as text:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(header)
        if isinstance(rows, rowstore.RowStream) and rows.plain:  # no cell to convert: known from the answer's text
            writer.writerows(list(map(row.get, columns)) for row in rows)
        else:
            writer.writerows(_csv_cells(row, columns) for row in rows)


def _cells_as_they_are(rows: rowstore.RowStream, columns: list[str]) -> bool:
    """Whether each row's cells go into the CSV as they are, at C speed (rowstore.CsvLines): no cell to
    convert (known from the answer's text), and every row an object with exactly these columns."""
    return rows.plain and rows.complete and len(columns) > 1 and columns == rows.columns


def _csv_line(cells: list[Any]) -> str:
    line = io.StringIO()
    csv.writer(line, lineterminator="\r\n").writerow(cells)
    return line.getvalue()


def designed_csv(rows: Iterable[Any], layout: layout_module.Layout, locale: str, zone: ZoneInfo) -> bytes:
    """The CSV of a designed layout: its columns and labels, the rows in its order, values as the
    locale writes them (see reporting.pipeline.formats), ';' between cells where it uses a decimal comma."""
    buffer = io.BytesIO()
    write_designed_csv(buffer, rows, layout, locale, zone)
    return buffer.getvalue()


def write_designed_csv(
    out: IO[bytes], rows: Iterable[Any], layout: layout_module.Layout, locale: str, zone: ZoneInfo
) -> None:
    """`designed_csv`, written to `out` as the rows come."""
    with _text_on(out) as text:
        writer = csv.writer(text, delimiter=formats.csv_delimiter(locale), lineterminator="\r\n")
        writer.writerow([_csv_value(label) for label in layout_module.csv_header(layout)])
        for row in rows:
            cells = layout_module.csv_cells(layout, row, locale, zone)
            writer.writerow([value if written else _csv_value(value) for value, written in cells])


@contextmanager
def _text_on(out: IO[bytes]) -> Iterator[io.TextIOWrapper]:
    """`out` as UTF-8 text with a byte-order mark, left open when done."""
    out.write(codecs.BOM_UTF8)  # written once: "utf-8-sig" would make each write slower
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=False)
    try:
        yield text
    finally:
        text.flush()
        text.detach()


def _csv_cells(row: Any, columns: list[str]) -> list[Any]:
    cells = list(map(row.get, columns)) if type(row) is dict else [_cell(row, column) for column in columns]
    # The csv module writes None as an empty cell itself; only nested JSON and text a
    # spreadsheet would run as a formula need converting (most rows need neither).
    if _needs_converting(cells):
        cells = [_csv_value(cell) for cell in cells]
    return cells


def _needs_converting(cells: list[Any]) -> bool:
    # A plain loop: this runs once per row of the CSV, and is faster than any() over a generator.
    for cell in cells:
        kind = type(cell)
        if kind is str:
            if cell[:1] in _FORMULA_START:
                return True
        elif kind is dict or kind is list:
            return True
    return False


def _cell(row: Any, column: str) -> Any:
    if isinstance(row, dict):
        return row.get(column)
    if isinstance(row, list):
        index = int(column.removeprefix("column ")) - 1 if column.startswith("column ") else -1
        return row[index] if 0 <= index < len(row) else None
    return row if column == "value" else None


# What makes a spreadsheet read a cell as a formula (OWASP, "CSV injection").
_FORMULA_START = frozenset("=+-@\t\r")
# Text that is only a number ("-1250.50") is read as that number, never as a formula.
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value[:1] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value  # OWASP: a leading quote makes the spreadsheet show it as text
    return value


def _render_file(names: list[str], context: dict[str, Any], what: str, *, html: bool) -> str:
    """Render the first of the layouts `names` that exists; `html` escapes every value for HTML."""
    try:
        template = sandbox.find_layout(names, html=html)
    except TemplateDoesNotExist as exc:
        raise RenderError(f"The {what} template '{names[0]}' does not exist.") from exc
    except TemplateSyntaxError as exc:
        raise RenderError(f"The {what} template has an error: {exc}") from exc
    rendered = _in_sandbox(
        lambda: sandbox.render_layout(template, context, what=f"{what} template"),
        what=f"{what} template",
        syntax_error=f"The {what} template has an error: {{}}",
    )
    return _check_missing(rendered, f"{what} template")


def _check_missing(rendered: str, what: str) -> str:
    """The rendered text, or RenderError naming the variables the template could not find."""
    names = list(dict.fromkeys(name for name in _MISSING.findall(rendered)))
    if not names:
        return rendered
    shown = ", ".join("a value it could not use" if name == "%s" else f"'{name}'" for name in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    raise RenderError(
        f"The {what} refers to {shown}{more}, not found in the data or the report. "
        'For a value that may be absent, use {% firstof value "fallback" %}.'
    )


def _text_template_for(html_template: str) -> str:
    return html_template.removesuffix(".html") + ".txt"


def _filename(request: RenderRequest, extension: str) -> str:
    period = request.period
    stamp = period.start.isoformat() if period.start == period.end else f"{period.start}_{period.end}"
    if period.at is not None:
        stamp = period.at.strftime("%Y-%m-%d_%H%M")
    suffix = f"_{_SAFE_FILENAME.sub('-', request.file_suffix)[:40]}" if request.file_suffix else ""
    return f"{request.report['slug']}_{stamp}{suffix}.{extension}"
