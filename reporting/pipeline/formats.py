"""Numbers, amounts, percentages and dates as a locale writes them: the same in the email, the CSV and the XLSX.

Babel (CLDR's data) does the writing. The email shows each value as the locale writes it
("1.234,50 €" in de-DE, "€1,234.50" in en-GB). The CSV keeps values a spreadsheet of that
locale reads back as numbers and dates: the locale's decimal mark and no thousands
separators, and ";" between cells where the decimal mark is a comma, as Excel there expects.
The XLSX keeps numbers and dates as Excel types with a number format built from the same
settings: Excel shows them with its user's own separators.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation, localcontext
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

# Babel and its locale data are imported in the functions that write values, not here:
# beat imports this module through reporting.models and writes nothing (tests/test_beat_imports.py).
if TYPE_CHECKING:
    from babel import Locale

# The locales a report may be written in: the common ones of the firms this is for.
LOCALES = [
    ("en-GB", "English (United Kingdom): 1,234.50 · 31 Oct 2026"),
    ("en-US", "English (United States): 1,234.50 · Oct 31, 2026"),
    ("en-IE", "English (Ireland)"),
    ("de-DE", "Deutsch (Deutschland): 1.234,50 · 31.10.2026"),
    ("de-AT", "Deutsch (Österreich)"),
    ("fr-FR", "Français (France): 1 234,50 · 31 oct. 2026"),
    ("fr-BE", "Français (Belgique)"),
    ("nl-NL", "Nederlands"),
    ("it-IT", "Italiano"),
    ("es-ES", "Español"),
    ("pt-PT", "Português"),
    ("sv-SE", "Svenska"),
    ("da-DK", "Dansk"),
    ("nb-NO", "Norsk bokmål"),
    ("fi-FI", "Suomi"),
    ("pl-PL", "Polski"),
    ("ja-JP", "日本語"),
]
DEFAULT_LOCALE = "en-GB"
KINDS = ("text", "number", "currency", "percent", "date")
NUMERIC_KINDS = ("number", "currency", "percent")
DATE_STYLES = ("short", "medium", "long")
MAX_DECIMALS = 6
_CURRENCY_CODE = re.compile(r"[A-Z]{3}")
_PLAIN_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")


@dataclass(frozen=True)
class Format:
    """How one column or figure is written."""

    kind: str = "text"  # one of KINDS
    decimals: int = 2
    currency: str = ""  # a fixed ISO 4217 code, e.g. EUR
    currency_field: str = ""  # …or the row's field that holds each row's code
    percent_points: bool = False  # the values are percentage points already (12.5 means 12.5 %), not fractions
    date_style: str = "medium"  # one of DATE_STYLES
    negative_red: bool = False

    @property
    def numeric(self) -> bool:
        return self.kind in NUMERIC_KINDS


def locale_problem(code: str) -> str:
    """'' when `code` is a locale reports may use; else why not, in words."""
    if code in dict(LOCALES):
        return ""
    return f"'{code}' is not one of the locales offered ({', '.join(code for code, _ in LOCALES)})."


def currency_problem(code: str) -> str:
    if _CURRENCY_CODE.fullmatch(code) and code in _known_currencies():
        return ""
    return f"'{code}' is not an ISO 4217 currency code (three capital letters, e.g. EUR, GBP, USD)."


@lru_cache(maxsize=1)
def _known_currencies() -> frozenset[str]:
    from babel.numbers import list_currencies

    return frozenset(list_currencies())


@lru_cache(maxsize=64)
def _locale(code: str) -> Locale:
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(code, sep="-")
    except (ValueError, UnknownLocaleError):
        return Locale.parse(DEFAULT_LOCALE, sep="-")


# --- reading values -----------------------------------------------------------------------


def as_number(value: Any) -> Decimal | None:
    """The value as an exact number, or None: JSON numbers and text that is only a number ("1234.50").

    Not booleans, not NaN or infinity, not "1,234" (whose meaning depends on the locale it came from).
    """
    number = _exact(value)
    # Past 10^30 no amount is real, and the text of one can ask for millions of digits ("1e1000000"):
    # such a value is shown as the text it is.
    return number if number is None or number.adjusted() <= MAX_EXPONENT else None


MAX_EXPONENT = 30


def _exact(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):  # a total the layout added up (a headline figure's total_of)
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= 100 and _PLAIN_NUMBER.fullmatch(value):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def as_moment(value: Any, zone: ZoneInfo) -> date | datetime | None:
    """An ISO date, or a timestamp in the report's timezone (naive), or None."""
    if isinstance(value, datetime):
        return value.astimezone(zone).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        if _ISO_DATE.fullmatch(value):
            return date.fromisoformat(value)
        if _ISO_MOMENT.fullmatch(value):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment.astimezone(zone).replace(tzinfo=None) if moment.tzinfo else moment
    except ValueError:  # 2026-02-30: not a date
        return None
    return None


def currency_of(fmt: Format, row: Any) -> str:
    """The currency code of a value in `row`: the fixed one, or the row's own when valid; '' when none."""
    if fmt.currency:
        return fmt.currency
    if fmt.currency_field and isinstance(row, dict):
        code = row.get(fmt.currency_field)
        if isinstance(code, str) and not currency_problem(code.strip().upper()):
            return code.strip().upper()
    return ""


# --- the email ----------------------------------------------------------------------------


def display(value: Any, fmt: Format, locale: str, *, currency: str = "", zone: ZoneInfo | None = None) -> str:
    """The value as the email shows it; '' for a missing value. A value that is not what the
    format expects (text in a number column) is shown as it is."""
    if value is None:
        return ""
    if fmt.kind in NUMERIC_KINDS:
        number = as_number(value)
        if number is not None:
            return display_number(number, fmt, locale, currency=currency)
    elif fmt.kind == "date":
        moment = as_moment(value, zone or ZoneInfo("UTC"))
        if moment is not None:
            return display_moment(moment, fmt.date_style, locale)
    if isinstance(value, dict | list):
        return "…"  # nested data has no place in a cell; the CSV has it in full
    return str(value)


def display_number(number: Decimal, fmt: Format, locale: str, *, currency: str = "") -> str:
    # Enough digits for any total of amounts below 10^MAX_EXPONENT, at MAX_DECIMALS places.
    with localcontext() as context:
        context.prec = 100
        return _display_number(number, fmt, locale, currency=currency)


def _display_number(number: Decimal, fmt: Format, locale: str, *, currency: str = "") -> str:
    from babel.numbers import format_currency, format_decimal, format_percent

    where = _locale(locale)
    decimals = _decimals(fmt)
    if fmt.kind == "percent":
        fraction = number / 100 if fmt.percent_points else number
        return format_percent(fraction, format=_percent_pattern(locale, decimals), locale=where)
    if fmt.kind == "currency" and currency:
        return format_currency(
            number, currency, format=_currency_pattern(locale, decimals), locale=where, currency_digits=False
        )
    return format_decimal(number, format=_decimal_pattern(decimals), locale=where)


def display_moment(moment: date | datetime, style: str, locale: str) -> str:
    from babel.dates import format_date, format_time

    where = _locale(locale)
    style = style if style in DATE_STYLES else "medium"
    if isinstance(moment, datetime):
        return f"{format_date(moment.date(), style, locale=where)} {format_time(moment.time(), 'short', locale=where)}"
    return format_date(moment, style, locale=where)


def _decimals(fmt: Format) -> int:
    return max(0, min(MAX_DECIMALS, fmt.decimals))


def _decimal_pattern(decimals: int, *, grouped: bool = True) -> str:
    whole = "#,##0" if grouped else "0"
    return whole + ("." + "0" * decimals if decimals else "")


_FRACTION = re.compile(r"0(\.0+)?(?![0#])")


@lru_cache(maxsize=256)
def _currency_pattern(locale: str, decimals: int) -> str:
    """The locale's currency pattern ("¤#,##0.00", "#,##0.00 ¤") with `decimals` places."""
    pattern = _locale(locale).currency_formats["standard"].pattern
    return _FRACTION.sub("0" + ("." + "0" * decimals if decimals else ""), pattern)


@lru_cache(maxsize=256)
def _percent_pattern(locale: str, decimals: int) -> str:
    pattern = _locale(locale).percent_formats[None].pattern
    return _FRACTION.sub("0" + ("." + "0" * decimals if decimals else ""), pattern)


# --- the CSV ------------------------------------------------------------------------------


def csv_delimiter(locale: str) -> str:
    """';' where the decimal mark is a comma (a spreadsheet there splits on ';'), else ','."""
    from babel.numbers import get_decimal_symbol

    return ";" if get_decimal_symbol(_locale(locale)) == "," else ","


def csv_value(value: Any, fmt: Format, locale: str, *, zone: ZoneInfo | None = None) -> Any:
    """The value as the CSV holds it: numbers with the locale's decimal mark and no grouping
    (percentages in points, amounts without their symbol), dates as the locale writes them short."""
    if fmt.kind in NUMERIC_KINDS:
        number = as_number(value)
        if number is not None:
            if fmt.kind == "percent" and not fmt.percent_points:
                number *= 100
            pattern = _decimal_pattern(_decimals(fmt), grouped=False)
            from babel.numbers import format_decimal

            with localcontext() as context:
                context.prec = 100
                return format_decimal(number, format=pattern, locale=_locale(locale))
    elif fmt.kind == "date":
        moment = as_moment(value, zone or ZoneInfo("UTC"))
        if moment is not None:
            written = moment.strftime(_strftime_pattern(locale))
            return f"{written} {moment:%H:%M}" if isinstance(moment, datetime) else written
    return value


def csv_unit(fmt: Format) -> str:
    """What the CSV's header adds to a column's label, since its cells carry no symbol: ' (EUR)', ' (%)'."""
    if fmt.kind == "percent":
        return " (%)"
    if fmt.kind == "currency" and fmt.currency:
        return f" ({fmt.currency})"
    return ""


@lru_cache(maxsize=64)
def _strftime_pattern(locale: str) -> str:
    """The locale's short date as strftime writes it, with a four-digit year: %d.%m.%Y, %m/%d/%Y."""
    out = []
    for token in _date_tokens(locale):
        if token[0] == "'":
            out.append(token.strip("'").replace("%", "%%"))
        elif token[0] == "y":
            out.append("%Y")
        elif token[0] == "M":
            out.append({1: "%-m", 2: "%m"}.get(len(token), "%b"))
        elif token[0] == "d":
            out.append("%d" if len(token) == 2 else "%-d")
        elif token[0].isalpha():
            continue
        else:
            out.append(token.replace("%", "%%"))
    return "".join(out).strip()


# --- the XLSX -----------------------------------------------------------------------------


def xlsx_value(value: Any, fmt: Format, zone: ZoneInfo | None = None) -> tuple[Any, bool]:
    """The cell's value: a number (percentages as fractions, as Excel's % format expects) or a date,
    and True; or the value as it is and False, when it is not what the format expects."""
    if fmt.kind in NUMERIC_KINDS:
        number = as_number(value)
        if number is not None:
            if fmt.kind == "percent" and fmt.percent_points:
                number /= 100
            whole = number == number.to_integral_value() and abs(number) < 2**53
            return (int(number) if whole else float(number)), True
    elif fmt.kind == "date":
        moment = as_moment(value, zone or ZoneInfo("UTC"))
        if moment is not None:
            return moment, True
    return value, False


@lru_cache(maxsize=512)
def xlsx_number_format(fmt: Format, locale: str, currency: str = "", *, timestamp: bool = False) -> str:
    """An Excel number format for the column (Excel writes it with its user's own separators); '' for text."""
    if fmt.kind == "date":
        written = _excel_date(locale, fmt.date_style)
        return f"{written} hh:mm" if timestamp else written
    if fmt.kind not in NUMERIC_KINDS:
        return ""
    number = _decimal_pattern(_decimals(fmt))
    if fmt.kind == "percent":
        number += "%"
    elif fmt.kind == "currency" and currency:
        from babel.numbers import get_currency_symbol

        symbol = '"' + get_currency_symbol(currency, locale=_locale(locale)).replace('"', "") + '"'
        before = _locale(locale).currency_formats["standard"].pattern.lstrip().startswith("¤")
        number = f"{symbol}{number}" if before else f"{number} {symbol}"
    if fmt.negative_red:
        return f"{number};[Red]-{number}"
    return number


@lru_cache(maxsize=64)
def _excel_date(locale: str, style: str) -> str:
    """The locale's date (short with a four-digit year, or its medium or long form) as an Excel format."""
    out = []
    for token in _date_tokens(locale, "short" if style == "short" else style):
        if token[0] == "'":
            literal = token.strip("'")
            out.append(f'"{literal}"' if literal else "")
        elif token[0] == "y":
            out.append("yyyy")
        elif token[0] == "M":
            out.append("m" * min(len(token), 4))
        elif token[0] in "dE":
            out.append(("d" * min(len(token), 2)) if token[0] == "d" else ("ddd" if len(token) < 4 else "dddd"))
        elif token[0].isalpha():
            continue
        else:
            out.append("".join(ch if ch in " ./-,:" else f"\\{ch}" for ch in token))
    return "".join(out).strip()


_DATE_TOKEN = re.compile(r"'[^']*'|([A-Za-z])\1*|[^A-Za-z']+")


def _date_tokens(locale: str, style: str = "short") -> list[str]:
    from babel.dates import get_date_format

    pattern = get_date_format(style if style in DATE_STYLES else "medium", locale=_locale(locale)).pattern  # type: ignore[arg-type]
    return [match.group(0) for match in _DATE_TOKEN.finditer(pattern)]
