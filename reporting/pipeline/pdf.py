"""The report as a PDF: the rendered email's HTML and charts laid out on A4 or Letter pages by WeasyPrint.

Plain values in, PDF bytes out. Every page has a header (the report's name and period) and a
footer ("Page 2 of 5"); a table's header row is repeated on each page the table runs over; the
charts, which the email shows as `cid:` images, are embedded from the images themselves.
Nothing is fetched: the HTML carries data from an API, so every URL but a data: URI is refused.

WeasyPrint loads the system library pango when it is imported: it is imported only when a PDF
is made, so a machine without pango runs every other report, and a report asking for a PDF
fails in words (PdfError) instead of the worker failing to start.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

MIMETYPE = "application/pdf"
A4, LETTER = "A4", "letter"  # CSS page size keywords
PAPERS = [(A4, "A4 (210 × 297 mm)"), (LETTER, "Letter (8.5 × 11 in)")]
SYSTEM_PACKAGES = "libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0"  # Debian and Ubuntu
HOW_TO_INSTALL = (
    f"install it with `apt-get install {SYSTEM_PACKAGES}` on Debian or Ubuntu (`make install` does), "
    "or `brew install pango` on macOS"
)
# WeasyPrint's libraries (cffi's "cannot load library 'libpango-1.0-0'") as the packages people know.
_LIBRARIES = {"pango": "pango", "harfbuzz": "harfbuzz", "fontconfig": "fontconfig", "gobject": "glib (gobject)"}
_CANNOT_LOAD = re.compile(r"cannot load library '([^']+)'")
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]')


class PdfError(Exception):
    """The PDF cannot be made on this machine; the message says why and what to install."""

    def __init__(self, message: str, *, detail: str = ""):
        super().__init__(message)
        self.message = message
        self.detail = detail


def html_to_pdf(
    html: str,
    *,
    title: str,
    period_label: str,
    paper: str = A4,
    images: Mapping[str, tuple[str, bytes]] | None = None,
) -> bytes:
    """The email's `html` as a paged PDF; `images` maps each `cid:` it shows to (mimetype, content)."""
    weasyprint = _weasyprint()
    no_fetching = weasyprint.URLFetcher(allowed_protocols=("data",))
    document = weasyprint.HTML(string=html, url_fetcher=no_fetching)
    # WeasyPrint's own parsed tree, read only when the pages are laid out: changed in place
    # rather than serialised and parsed a second time.
    _embed_images(document.etree_element, images or {})
    _repeat_header_rows(document.etree_element)
    pages = weasyprint.CSS(
        string=page_css(title=title, period_label=period_label, paper=paper), url_fetcher=no_fetching
    )
    return document.write_pdf(stylesheets=[pages])


def page_css(*, title: str, period_label: str, paper: str) -> str:
    """The print stylesheet: paper size, header and footer, no email background, a table's rows kept whole
    (the rows of a table with a header: the email's layout is a table too, whose rows must break)."""
    size = LETTER if paper == LETTER else A4
    return f"""
@page {{
  size: {size};
  margin: 20mm 14mm 18mm;
  @top-left {{ content: {_css_string(title)}; font: 600 9pt sans-serif; color: #1f2a44; }}
  @top-right {{ content: {_css_string(period_label)}; font: 9pt sans-serif; color: #44506a; }}
  @bottom-center {{ content: "Page " counter(page) " of " counter(pages); font: 8pt sans-serif; color: #6b7280; }}
}}
html, body, body > table {{ background: #ffffff !important; }}
body > table > tbody > tr > td {{ padding: 0 !important; }}
thead {{ display: table-header-group; }}
thead ~ tbody > tr, img {{ break-inside: avoid; }}
"""


def _css_string(text: str) -> str:
    """`text` as a quoted CSS string: quotes, backslashes and control characters escaped, so a
    report's name cannot end the string or the rule. (The space after an escape ends it, and is not shown.)"""
    escaped = "".join(f"\\{ord(char):06x} " if _NEEDS_ESCAPE.match(char) else char for char in text)
    return f'"{escaped}"'


def _embed_images(root: ElementTree.Element, images: Mapping[str, tuple[str, bytes]]) -> None:
    """Point each `<img src="cid:…">` of an image the email carries at a data: URI of it."""
    for element in root.iter("img"):
        source = element.get("src", "")
        if source.startswith("cid:") and source[4:] in images:
            mimetype, content = images[source[4:]]
            element.set("src", f"data:{mimetype};base64,{base64.b64encode(content).decode('ascii')}")


def _repeat_header_rows(root: ElementTree.Element) -> None:
    """A table's first row of <th> cells becomes its <thead>, which WeasyPrint repeats on each page.

    The email's tables (mail clients' HTML) have no <thead>: the parser puts every row in a <tbody>.
    """
    for table in list(root.iter("table")):
        if table.find("thead") is not None or (body := table.find("tbody")) is None:
            continue
        first = body.find("tr")
        cells = [cell for cell in first if isinstance(cell.tag, str)] if first is not None else []
        if first is not None and cells and all(cell.tag == "th" for cell in cells):
            body.remove(first)
            head = ElementTree.Element("thead")
            head.append(first)
            table.insert(list(table).index(body), head)


def _weasyprint() -> Any:
    """The weasyprint module, or PdfError naming the system library it could not load."""
    try:
        import weasyprint
    except OSError as exc:  # cffi could not load a library WeasyPrint needs
        library = _library_in(str(exc))
        raise PdfError(
            f"PDF could not be made: the system library {library} is missing; {HOW_TO_INSTALL}.", detail=str(exc)
        ) from exc
    except ImportError as exc:
        raise PdfError(
            "PDF could not be made: the Python package weasyprint is not installed; "
            "install it with `pip install -r requirements.txt`.",
            detail=str(exc),
        ) from exc
    return weasyprint


def _library_in(error: str) -> str:
    """The library a load error names, as its package is known ("pango"); pango when it names none."""
    named = _CANNOT_LOAD.search(error)
    name = named.group(1).lower() if named else ""
    return next((known for part, known in _LIBRARIES.items() if part in name), "pango")
