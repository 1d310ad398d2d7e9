"""Fetch: one HTTP GET of a JSON data source, with timeouts, a size cap and clear errors.

Plain values in, plain values out: the caller passes a `FetchRequest` and gets a
`FetchResult` or a `FetchError` that says whether retrying can help.

Only hosts in REPORTING_ALLOWED_SOURCE_HOSTS are fetched from (see `HostAllowlist`). The
name is checked before connecting, and the address actually connected to is checked on the
open socket, before a byte is sent: a name that resolves (or is re-pointed) to a loopback,
private or cloud-metadata address is refused. Redirects are followed one checked hop at a time.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import IO, Any
from urllib.parse import quote, quote_plus, urljoin, urlsplit

import requests
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from reporting import conf
from reporting.pipeline import rowstore, stream

USER_AGENT = "ScheduledReports/1.0"
_CHUNK = 64 * 1024
MAX_REDIRECTS = 5
SETTING = "REPORTING_ALLOWED_SOURCE_HOSTS"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Cloud instance-metadata endpoints (AWS/GCP/Azure, AWS IPv6, Alibaba): they hand out credentials.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address) for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
MAX_TIMEOUT_SECONDS = 300
SCHEMES = ("http", "https")
# RFC 9110 token: what a header name may be (no space, colon, CR or LF).
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


class FetchError(Exception):
    """The data could not be fetched; `permanent` says retrying will not help."""

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None, detail: str = ""):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.detail = detail


@dataclass(frozen=True)
class Auth:
    scheme: str = "none"  # none | bearer | header | basic
    header_name: str = ""
    secret_env_var: str = ""

    @property
    def custom_header(self) -> str:
        """The header that carries the secret for the 'custom header' scheme, else ''."""
        return (self.header_name or "X-API-Key") if self.scheme == "header" else ""


@dataclass(frozen=True)
class FetchRequest:
    base_url: str
    path: str = ""
    params: dict[str, str] = field(default_factory=dict)
    auth: Auth = Auth()
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    verify_tls: bool = True
    max_bytes: int = 1024 * 1024 * 1024
    # Entries of REPORTING_ALLOWED_SOURCE_HOSTS; None: read the setting when fetching.
    allowed_hosts: tuple[str, ...] | None = None
    # Keys or dotted paths removed from the answer before it is archived or rendered.
    drop_fields: tuple[str, ...] = ()
    # Where the rows are: a large answer's rows are then streamed, not held (reporting.pipeline.stream).
    records_path: str | None = None
    # A large answer's CSV is written as its rows stream, for a report attaching a plain CSV of them.
    csv_lines: bool = False

    @property
    def url(self) -> str:
        base = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        return urljoin(base, self.path.lstrip("/")) if self.path else self.base_url


@dataclass(frozen=True)
class FetchResult:
    url: str  # the URL as requested, without any secret
    content: bytes  # the response body exactly as received
    data: Any  # the parsed JSON


@dataclass(frozen=True)
class HostAllowlist:
    """REPORTING_ALLOWED_SOURCE_HOSTS: exact host names, domains (".example.com": it and its
    subdomains), IP addresses and CIDR networks.

    A URL's host must match an entry. The address connected to must be public, or be covered by
    an IP or network entry, or belong to a host name listed exactly (not through a domain): a
    domain entry never lets a name reach an internal address. A cloud-metadata address needs
    an IP or network entry.
    """

    names: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # The setting the entries come from, named in refusals (destinations have their own).
    setting: str = SETTING

    @classmethod
    def from_entries(cls, entries: tuple[str, ...] | list[str], *, setting: str = SETTING) -> HostAllowlist:
        """Parse the setting's entries; a malformed one is a permanent FetchError naming it."""
        names, domains, networks = set(), [], []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            network = _network(entry)
            if network is not None:
                networks.append(network)
            elif entry.startswith(".") and _HOST_NAME.match(entry[1:]):
                domains.append(entry[1:])
            elif _HOST_NAME.match(entry):
                names.add(entry)
            elif entry:
                raise FetchError(
                    f"{setting} has an entry that is not a host name, a domain (.example.com), "
                    f"an IP address or a network: {raw!r}.",
                    permanent=True,
                )
        return cls(names=frozenset(names), domains=tuple(domains), networks=tuple(networks), setting=setting)

    def check_url(self, url: str, *, redirected: bool = False) -> None:
        """Raise a permanent FetchError unless the URL is http(s), without user:password, to an allowed host."""
        problem = url_problem(url)
        if problem:
            where = f"The data source redirected to a URL that is refused: {problem[0].lower()}{problem[1:]}"
            raise FetchError(where if redirected else problem, permanent=True)
        host = _host_of(url)
        if self.allows_host(host):
            return
        if not (self.names or self.domains or self.networks):
            raise FetchError(
                f"No data source host is allowed: set {SETTING} to the hosts reports may fetch from "
                "(for example api.example.com).",
                permanent=True,
            )
        if redirected:
            raise FetchError(
                f"The data source redirected to {_origin(url)}, whose host {host} is not in {SETTING}.",
                permanent=True,
            )
        raise FetchError(f"The data source's host {host} is not in {SETTING}.", permanent=True)

    def allows_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        address = _ip(host)
        if address is not None:
            return self.covers(address)
        return host in self.names or any(host == domain or host.endswith("." + domain) for domain in self.domains)

    def covers(self, address: IPAddress) -> bool:
        return any(address.version == network.version and address in network for network in self.networks)

    def check_peer(self, *, host: str, address: str) -> None:
        """Raise a permanent FetchError when `host` connected to an internal address it may not reach."""
        ip = _ip(address.split("%", 1)[0])
        ip = getattr(ip, "ipv4_mapped", None) or ip
        if ip is None or self.covers(ip):
            return
        kind = address_kind(ip)
        metadata = ip in METADATA_ADDRESSES
        if kind is None or (not metadata and host.lower().rstrip(".") in self.names):
            return
        described = f"{kind} (cloud metadata)" if metadata else kind
        article = "an" if described[0] in "aeiou" else "a"
        advice = "" if metadata else f" List the exact host name or the address in {self.setting} to allow it."
        raise FetchError(
            f"{host} resolved to {ip}, {article} {described} address, which is refused.{advice}", permanent=True
        )


def url_problem(url: str) -> str:
    """What is wrong with a data source's URL, in words, before its host is looked at ('' if nothing)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "The data source's URL is not a valid URL."
    if parts.scheme.lower() not in SCHEMES:
        scheme = f"{parts.scheme}://" if parts.scheme else "no scheme"
        return f"The data source's URL must start with http:// or https://, not {scheme}."
    if parts.username is not None or parts.password is not None:
        # It would be stored, listed and logged with the URL: secrets go in an environment variable.
        return (
            "The data source's URL must not carry a user name or password (user:password@host): "
            "choose HTTP basic authentication and name the environment variable that holds them."
        )
    if not host:
        return "The data source's URL has no host name."
    return ""


def timeout_problem(label: str, seconds: float) -> str:
    """Why a connect or read timeout cannot be used ('' when it can): it must be more than 0 and bounded."""
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:  # also refuses NaN
        return f"The {label} timeout must be more than 0 and at most {MAX_TIMEOUT_SECONDS} seconds, not {seconds:g}."
    return ""


def header_name_problem(name: str) -> str:
    """Why `name` cannot be an HTTP header's name ('' when it can, or when it is empty)."""
    if name and not _HEADER_NAME.match(name):
        return (
            f"The header name {name!r} is not a valid HTTP header name: use letters, digits and "
            "dashes (such as X-API-Key), without spaces, colons or line breaks."
        )
    return ""


def secret_variable_problem(name: str) -> str:
    """Why a data source may not name the environment variable `name` as its secret ('' when it may).

    Only variables meant for data sources: otherwise an editor could make the worker send
    SECRET_KEY or a database password to a server of their choosing.
    """
    prefix = conf.REPORTING.get("SECRET_ENV_PREFIX", "REPORTING_SECRET_")
    listed = conf.REPORTING.get("SECRET_ENV_VARS", ())
    if not name or name in listed or (name.startswith(prefix) and len(name) > len(prefix)):
        return ""
    also = f", or be listed in REPORTING_SECRET_ENV_VARS ({', '.join(listed)})" if listed else ""
    return (
        f"The environment variable '{name}' may not hold a data source's secret: its name must start "
        f"with {prefix} (set by REPORTING_SECRET_ENV_PREFIX){also or ', or be listed in REPORTING_SECRET_ENV_VARS'}."
    )


def allowed_source_hosts(entries: tuple[str, ...] | list[str] | None = None) -> HostAllowlist:
    """The allowlist of `entries`, or of the REPORTING_ALLOWED_SOURCE_HOSTS setting."""
    if entries is None:
        entries = conf.REPORTING.get("ALLOWED_SOURCE_HOSTS", ())
    return HostAllowlist.from_entries(tuple(entries))


def check_source_url(url: str) -> None:
    """Raise a permanent FetchError when the URL's host is not allowed by the setting (for forms)."""
    allowed_source_hosts().check_url(url)


def address_kind(ip: IPAddress) -> str | None:
    """What kind of internal address `ip` is, in words, or None for a public one."""
    ip = getattr(ip, "ipv4_mapped", None) or ip
    checks = [
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-public", not ip.is_global),
    ]
    return next((kind for kind, matches in checks if matches), None)


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if _ip(entry) is None and "/" not in entry:
        return None
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


def fetch(request: FetchRequest, *, session: requests.Session | None = None) -> FetchResult:
    """GET `request.url` and parse it as JSON; raise FetchError on any failure.

    An error never carries the secret, even when the data source echoes it back.
    """
    body = io.BytesIO()
    url, data = download(request, body, session=session)
    return FetchResult(url=url, content=body.getvalue(), data=data)


@dataclass(frozen=True)
class Downloaded:
    url: str  # the URL finally read, redirects followed, without the secret
    data: Any  # the parsed JSON, without the dropped fields and the secret
    notes: tuple[str, ...] = ()  # what was taken out of the answer, in words


def download(request: FetchRequest, body: IO[bytes], *, session: requests.Session | None = None) -> tuple[str, Any]:
    """`fetch`, writing the answer to `body` as it arrives: returns the URL and the parsed data.

    With `body` a file, a large answer's bytes are not held in memory beside its parsed data.
    """
    downloaded = download_for_archive(request, body, session=session)
    return downloaded.url, downloaded.data


def download_for_archive(
    request: FetchRequest, body: IO[bytes], *, session: requests.Session | None = None
) -> Downloaded:
    """`download`, saying what was taken out of the answer before it is archived.

    When the request names fields to drop, or the answer holds the secret, `body` is rewritten
    as the cleaned JSON: what is archived is what is rendered, and never the secret.
    """
    _check_request(request)
    secret = _read_secret(request.auth)
    forms = secret_forms(request.auth, secret)
    try:
        url, data = _download(request, _headers(request.auth, secret), session, body)
    except FetchError as exc:
        exc.message, exc.detail = redact(exc.message, forms), redact(exc.detail, forms)
        raise
    rows = _streamed_rows(data, request.records_path)
    if rows is None:
        data, notes = _cleaned(data, forms, request.drop_fields)
        if notes:
            body.seek(0)
            body.truncate()
            body.write(json.dumps(data, ensure_ascii=False).encode())
    else:
        data, notes = _cleaned_stream(data, rows, body, forms, request)
    return Downloaded(url=redact(url, forms), data=data, notes=tuple(notes))


def _streamed_rows(data: Any, records_path: str | None) -> rowstore.RowStream | None:
    """The RowStream at `records_path` in `data`, when its rows are streamed; None otherwise."""
    if records_path is None:
        return None
    try:
        rows = select_rows(data, records_path)
    except FetchError:
        return None
    return rows if isinstance(rows, rowstore.RowStream) else None


def _cleaned_stream(
    data: Any, rows: rowstore.RowStream, body: IO[bytes], forms: list[str], request: FetchRequest
) -> tuple[Any, list[str]]:
    """`_cleaned` of an answer whose rows stream from `body`: the rows are cleaned one at a time.

    One pass finds whether any row holds a field to drop or the secret; only then is the
    answer written again, cleaned, to `body` (through a temporary file) and read again.
    """
    records_path = request.records_path or ""
    clean_row = _row_cleaner(forms, request.drop_fields, records_path)
    dropped: set[str] = set()
    found = False
    if clean_row is not None:  # else there is nothing to look for in the rows: no pass over them
        for row in rows:
            _row, row_dropped, row_found = clean_row(row)
            dropped |= row_dropped
            found = found or row_found
    skeleton_dropped = drop_fields(data, request.drop_fields)
    held_found = [False]
    data = _redacted_data(data, forms, held_found) if forms else data
    notes = _cleaning_notes([entry for entry in request.drop_fields if entry in dropped or entry in skeleton_dropped])
    if found or held_found[0]:
        notes.append(_SECRET_NOTE)
    if not notes:
        return data, notes
    with tempfile.TemporaryFile() as cleaned:
        stream.write(data, cleaned, rows if clean_row is None else (clean_row(row)[0] for row in rows))
        cleaned.seek(0)
        body.seek(0)
        body.truncate()
        shutil.copyfileobj(cleaned, body)
    return parse_answer(body, records_path, csv_lines=request.csv_lines), notes


def _row_cleaner(
    forms: list[str], drop: tuple[str, ...], records_path: str
) -> Callable[[Any], tuple[Any, set[str], bool]] | None:
    """A function cleaning one row as `_cleaned` cleans the whole answer: the row, the entries
    it dropped and whether it held the secret. None when no row could need it."""
    # Keys are dropped everywhere; a dotted path through the rows from the first field of a row.
    # Lists on the way are passed through, as _drop_path does: the path names keys only.
    through_rows = [part for part in records_path.split(".") if part and not part.isdigit()]
    in_rows: list[tuple[str, list[str]]] = []
    for entry in drop:
        path = [part for part in entry.split(".") if part]
        if len(path) == 1:
            in_rows.append((entry, path))
        elif len(path) > len(through_rows) and path[: len(through_rows)] == through_rows:
            in_rows.append((entry, path[len(through_rows) :]))
    as_written = [json.dumps(form, ensure_ascii=False)[1:-1] for form in forms]
    if not in_rows and not as_written:
        return None

    def clean(row: Any) -> tuple[Any, set[str], bool]:
        dropped = {
            entry
            for entry, path in in_rows
            if (_drop_path(row, path) if len(path) > 1 else _drop_key_everywhere(row, path[0]))
        }
        if as_written:
            written = json.dumps(row, ensure_ascii=False)  # every text of the row, keys too, as dumps escapes it
            if any(form in written for form in as_written):
                found = [False]
                return _redacted_data(row, forms, found), dropped, found[0]
        return row, dropped, False

    return clean


def _check_request(request: FetchRequest) -> None:
    """Refuse, before anything is sent, what a data source saved before these rules (or around the form) has."""
    problem = (
        timeout_problem("connect", request.connect_timeout)
        or timeout_problem("read", request.read_timeout)
        or header_name_problem(request.auth.custom_header)
    )
    if problem:
        raise FetchError(problem, permanent=True)


def secret_forms(auth: Auth, secret: str) -> list[str]:
    """Every form in which the secret may come back in text, longest first.

    Raw, JSON-escaped (also with "\\/"), URL-encoded and base64; for basic auth the same of the
    password alone, and base64 of "user:password" is what the Authorization header carries.
    Forms under 4 characters are left: redacting them would mangle every text they occur in.
    """
    if not secret:
        return []
    parts = [secret]
    if auth.scheme == "basic":
        parts.append(secret.partition(":")[2])
    forms = set()
    for part in filter(None, parts):
        escaped = json.dumps(part)[1:-1]
        encoded = part.encode()
        forms |= {part, escaped, escaped.replace("/", "\\/"), quote(part, safe=""), quote_plus(part)}
        forms |= {base64.b64encode(encoded).decode(), base64.urlsafe_b64encode(encoded).decode()}
        forms |= _url_secret_parts(part)
    return sorted((form for form in forms if len(form) >= 4), key=len, reverse=True)


def _url_secret_parts(secret: str) -> set[str]:
    """A secret that is a URL (a webhook's): its path and query, which libraries log and quote without the host.

    Parts under 8 characters ("/", "/hook") are left: they say nothing and occur everywhere.
    """
    try:
        parts = urlsplit(secret)
    except ValueError:
        return set()
    if parts.scheme.lower() not in SCHEMES or not parts.netloc:
        return set()
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    values = [value for pair in parts.query.split("&") for value in pair.partition("=")[2:]]
    return {part for part in (target, parts.path, *values) if len(part) >= 8}


def redact(text: str, forms: list[str]) -> str:
    """`text` with every form of the secret replaced by [secret]."""
    for form in forms:
        text = text.replace(form, "[secret]")
    return text


class SecretLogFilter(logging.Filter):
    """Redacts, in every log record it sees, every form of every value a data source may read as its secret.

    The fetch keeps secrets out of its own errors; this is for what it does not write itself:
    a library's message or a traceback quoting a URL or a header. Configured in settings.LOGGING.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        forms = secret_forms_in_environment()
        if not forms:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message, forms), ()
        record.exc_text = redact(record.exc_text, forms) if record.exc_text else record.exc_text
        record.stack_info = redact(record.stack_info, forms) if record.stack_info else record.stack_info
        return True


def secret_forms_in_environment() -> list[str]:
    """Every form of the value of every environment variable a data source or destination may name, longest first."""
    forms: set[str] = set()
    for name, value in os.environ.items():
        if value.strip() and not secret_variable_problem(name):
            # Any value with a colon may be a basic-auth "user:password": its password is redacted too.
            forms.update(secret_forms(Auth(scheme="basic" if ":" in value else "bearer"), value.strip()))
    return sorted(forms, key=len, reverse=True)


def _download(
    request: FetchRequest, headers: dict[str, str], session: requests.Session | None, body: IO[bytes]
) -> tuple[str, Any]:
    deadline = time.monotonic() + conf.REPORTING.get("FETCH_TOTAL_SECONDS", 300)
    allowlist = allowed_source_hosts(request.allowed_hosts)
    allowlist.check_url(request.url)
    prepared = requests.Request("GET", request.url, params=request.params, headers=headers)
    http = _session_for(request, allowlist, session)
    try:
        response = _send_following_redirects(http, http.prepare_request(prepared), request, allowlist, deadline)
    except requests.Timeout as exc:
        if time.monotonic() >= deadline:
            raise _past_deadline() from exc
        raise FetchError(
            f"The data source did not answer in time (connect {request.connect_timeout:g}s, "
            f"read {request.read_timeout:g}s).",
            permanent=False,
            detail=str(exc),
        ) from exc
    except requests.ConnectionError as exc:
        raise FetchError(
            f"Could not connect to the data source at {_origin(request.url)}.", permanent=False, detail=str(exc)
        ) from exc
    except requests.RequestException as exc:
        # Not `{exc}`: some of requests' messages quote header values, and so the secret.
        raise FetchError(f"The request to the data source failed ({type(exc).__name__}).", permanent=True) from exc
    with response:
        reader = _BoundedReader(response, read_timeout=request.read_timeout, deadline=deadline)
        _check_status(response, reader)
        _read_capped(response, reader, request.max_bytes, body)
        _check_content_type(response)  # read to its end: urllib3 put its connection back in the pool
    return response.url, parse_answer(body, request.records_path, csv_lines=request.csv_lines)


def source_session(request: FetchRequest) -> requests.Session:
    """A session for several fetches like `request` (one report's, one per recipient): connections kept alive.

    It keeps no cookies, so that nothing one fetch was given goes with the next; each
    connection's address is still checked when it is made.
    """
    return _session_for(request, allowed_source_hosts(request.allowed_hosts), None)


def guarded_session(allowlist: HostAllowlist) -> requests.Session:
    """A session whose every connection's address is checked against `allowlist` before a byte is sent.

    It uses no proxy and no ~/.netrc, keeps no cookies and follows no redirect by itself.
    """
    http = _SourceSession()
    http.mount("http://", _GuardedAdapter(allowlist))
    http.mount("https://", _GuardedAdapter(allowlist))
    http.allowlist = allowlist
    return http


def _session_for(request: FetchRequest, allowlist: HostAllowlist, session: requests.Session | None) -> requests.Session:
    """`session` when it was made by `source_session` for requests like this one; else it, or a new one, guarded."""
    if isinstance(session, _SourceSession) and session.fits(request, allowlist):
        return session
    http = session or _SourceSession(secret_header=request.auth.custom_header)
    http.mount("http://", _GuardedAdapter(allowlist))
    http.mount("https://", _GuardedAdapter(allowlist))
    if isinstance(http, _SourceSession):
        http.allowlist = allowlist
    return http


def _past_deadline(size: int | None = None) -> FetchError:
    total = conf.REPORTING.get("FETCH_TOTAL_SECONDS", 300)
    sent = f"; it had sent {filesizeformat(size)} by then" if size else ""
    return FetchError(
        f"The data source did not send its whole answer within {total:g} seconds "
        f"(REPORTING_FETCH_TOTAL_SECONDS){sent}. It may be overloaded: the run will be tried again later.",
        permanent=False,
    )


def _send_following_redirects(
    http: requests.Session,
    prepared: requests.PreparedRequest,
    request: FetchRequest,
    allowlist: HostAllowlist,
    deadline: float,
) -> requests.Response:
    """Send `prepared`, following up to MAX_REDIRECTS redirects, each only to an allowed host."""
    for hop in range(MAX_REDIRECTS + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            raise _past_deadline()
        response = http.send(
            prepared,
            # Neither waiting for the connection nor for a read may outlast the whole fetch's time.
            timeout=(min(request.connect_timeout, left), min(request.read_timeout, left)),
            verify=request.verify_tls,
            stream=True,
            allow_redirects=False,
        )
        if not response.is_redirect:
            return response
        response.close()  # unread: a redirect's body is never needed
        if hop == MAX_REDIRECTS:
            break
        target = urljoin(response.url, response.headers["Location"])
        allowlist.check_url(target, redirected=True)
        prepared = prepared.copy()
        prepared.prepare_url(target, None)
        http.rebuild_auth(prepared, response)  # drops the secret when the redirect leaves the host
    raise FetchError(f"The data source redirected more than {MAX_REDIRECTS} times.", permanent=True)


def parse_json(content: bytes | str) -> Any:
    """Parse an answer as JSON, refusing in words one too deep or too large to build."""
    try:
        text = content if isinstance(content, str) else content.decode(json.detect_encoding(content), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise _not_text(exc) from exc
    check_json_limits(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FetchError(
            f"The data source's answer is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).",
            permanent=True,
            detail=text[:500],
        ) from exc
    except ValueError as exc:  # Python's limit on the digits of an integer it converts
        raise FetchError(
            f"The data source's answer has a number longer than {sys.get_int_max_str_digits():,} digits, "
            "which cannot be read as a number.",
            permanent=True,
            detail=str(exc),
        ) from exc
    except RecursionError as exc:  # only when REPORTING_MAX_JSON_DEPTH is set above Python's own limit
        raise FetchError("The data source's answer nests too deep to read.", permanent=True) from exc


def check_json_limits(text: str) -> None:
    """Raise a permanent FetchError when the JSON in `text` nests too deep or holds too many values.

    Counted on the text, before a single object is built: json.loads builds everything first
    (45 MB of `[[],[],…]` took 1.3 GB) and recurses once per level. This needs a copy or two
    of the text, never more.
    """
    max_depth = conf.REPORTING.get("MAX_JSON_DEPTH", 64)
    max_values = conf.REPORTING.get("MAX_JSON_VALUES", 5_000_000)
    shape = stream.structure(text)  # a bracket or comma inside a string is not structure
    values = stream.value_count(shape)
    if values > max_values:
        raise FetchError(
            f"The data source's answer has more than {max_values:,} values (about {values:,}); "
            "the limit is REPORTING_MAX_JSON_VALUES.",
            permanent=True,
        )
    if stream.nesting_depth(shape, max_depth) > max_depth:
        raise FetchError(
            f"The data source's answer nests deeper than {max_depth} levels of lists and objects "
            "(REPORTING_MAX_JSON_DEPTH), more than any report reads.",
            permanent=True,
        )


def parse_answer(body: IO[bytes], records_path: str | None, *, csv_lines: bool = False) -> Any:
    """The answer in `body`, parsed: whole, or, when large, with its rows streamed.

    An answer over REPORTING["STREAM_ABOVE_BYTES"] whose rows are at `records_path` gets a
    RowStream there, which keeps them on disk (reporting.pipeline.stream), never all in memory;
    with `csv_lines`, their CSV is written in the same pass (rowstore.RowStream.csv_lines).
    Smaller answers, and answers not in UTF-8, are parsed whole.
    """
    body.seek(0, io.SEEK_END)
    size = body.tell()
    body.seek(0)
    if records_path is None or size <= conf.REPORTING.get("STREAM_ABOVE_BYTES", 8 * 1024 * 1024):
        return parse_json_file(body)
    if not stream.streamable(body.read(4)):
        return parse_json_file(body)
    try:
        return stream.load(
            body,
            records_path,
            max_depth=conf.REPORTING.get("MAX_JSON_DEPTH", 64),
            max_values=conf.REPORTING.get("MAX_JSON_VALUES", 5_000_000),
            csv_lines=csv_lines,
        )
    except stream.JsonError as exc:
        raise FetchError(exc.message, permanent=True, detail=exc.detail) from exc


def parse_json_file(body: IO[bytes]) -> Any:
    """`parse_json` of a whole binary file, holding its bytes only until they are decoded to text."""
    body.seek(0)
    content = body.read()
    try:
        text = content.decode(json.detect_encoding(content), "surrogatepass")  # as json.loads decodes bytes
    except UnicodeDecodeError as exc:
        raise _not_text(exc) from exc
    del content  # parsing needs only the text: the bytes would double what the answer takes in memory
    return parse_json(text)


def _cleaned(data: Any, forms: list[str], drop: tuple[str, ...]) -> tuple[Any, list[str]]:
    """`data` without the fields to drop and with the secret redacted; and notes saying so."""
    notes = _cleaning_notes(drop_fields(data, drop))
    found = [False]
    data = _redacted_data(data, forms, found) if forms else data
    if found[0]:
        notes.append(_SECRET_NOTE)
    return data, notes


_SECRET_NOTE = (
    "The data source's answer contained the data source's own secret: it is archived and rendered as [secret]."
)


def _cleaning_notes(dropped: list[str]) -> list[str]:
    if not dropped:
        return []
    return [f"Removed from the data before archiving and rendering, as its data source asks: {', '.join(dropped)}."]


def drop_fields(data: Any, entries: tuple[str, ...] | list[str]) -> list[str]:
    """Remove each entry from `data` in place; return the entries that removed something.

    A key name ("token") is removed from every object wherever it occurs; a dotted path
    ("meta.session.token") from the root, through every item of a list met on the way.
    """
    removed = []
    for entry in entries:
        path = [part for part in entry.split(".") if part]
        if path and (_drop_path(data, path) if len(path) > 1 else _drop_key_everywhere(data, path[0])):
            removed.append(entry)
    return removed


def drop_field_entries(text: str) -> list[str]:
    """The entries of a data source's "fields removed" setting: one per line or comma."""
    return [entry.strip() for entry in re.split(r"[,\n]", text) if entry.strip()]


def _drop_path(node: Any, path: list[str]) -> bool:
    if isinstance(node, list):
        return any([_drop_path(item, path) for item in node])  # a list: every item, not the first hit
    if not isinstance(node, dict) or path[0] not in node:
        return False
    if len(path) == 1:
        del node[path[0]]
        return True
    return _drop_path(node[path[0]], path[1:])


def _drop_key_everywhere(data: Any, key: str) -> bool:
    removed, pending = False, [data]
    while pending:  # a loop, not recursion: the depth is limited, but this needs no stack
        node = pending.pop()
        if isinstance(node, dict):
            removed = node.pop(key, _MISSING) is not _MISSING or removed
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return removed


_MISSING = object()


def _redacted_data(node: Any, forms: list[str], found: list[bool]) -> Any:
    """A copy of `node` with every form of the secret in its texts (keys too) replaced by [secret]."""
    if isinstance(node, str):
        redacted = redact(node, forms)
        found[0] = found[0] or redacted != node
        return redacted
    if isinstance(node, list):
        return [_redacted_data(item, forms, found) for item in node]
    if isinstance(node, dict):
        return {_redacted_data(key, forms, found): _redacted_data(value, forms, found) for key, value in node.items()}
    return node


def _not_text(exc: UnicodeDecodeError) -> FetchError:
    return FetchError("The data source's answer is not valid UTF-8 text.", permanent=True, detail=str(exc))


def select_rows(data: Any, records_path: str) -> Sequence[Any]:
    """Return the list at the dotted `records_path` in `data` (the data itself when empty).

    A list, or a RowStream where a large answer's rows are streamed (see `parse_answer`).
    """
    node = data
    walked = []
    for key in [part for part in records_path.split(".") if part]:
        walked.append(key)
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            parent = ".".join(walked[:-1])
            where = f"'{parent}' has no '{key}'" if parent else f"the response has no '{key}'"
            raise FetchError(f"The records path '{records_path}' was not found in the data: {where}.", permanent=True)
    if not isinstance(node, list | rowstore.RowStream):
        raise FetchError(
            f"The records path '{records_path or '(the whole response)'}' points to "
            f"{_json_kind(node)}, not to a list of rows.",
            permanent=True,
        )
    return node


def _read_secret(auth: Auth) -> str:
    """The secret from the environment variable named on the data source ('' without auth)."""
    if auth.scheme == "none":
        return ""
    problem = secret_variable_problem(auth.secret_env_var)
    if problem:  # checked on the form too; this catches a source saved before the rule, or around the form
        raise FetchError(f"{problem} Nothing was sent to the data source.", permanent=True)
    # Surrounding whitespace is dropped: secrets read from files often end in a newline.
    secret = os.environ.get(auth.secret_env_var, "").strip() if auth.secret_env_var else ""
    if not secret:
        raise FetchError(
            f"The data source's secret is missing: the environment variable "
            f"'{auth.secret_env_var or '(none named)'}' is not set on the worker.",
            permanent=True,
        )
    if any(not character.isprintable() for character in secret):
        raise FetchError(
            f"The secret in the environment variable '{auth.secret_env_var}' contains a line break or another "
            "control character, which an HTTP header cannot carry.",
            permanent=True,
        )
    return secret


def _headers(auth: Auth, secret: str) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if auth.scheme == "none":
        return headers
    if auth.scheme == "bearer":
        headers["Authorization"] = f"Bearer {secret}"
    elif auth.scheme == "header":
        headers[auth.custom_header] = secret
    elif auth.scheme == "basic":
        user, _, password = secret.partition(":")
        headers["Authorization"] = requests.auth._basic_auth_str(user, password)
    return headers


class _SourceSession(requests.Session):
    """A session that drops a custom secret header on a redirect to another host.

    requests itself drops only the Authorization header there. It ignores the environment:
    no proxy (the address check must see the real server) and no ~/.netrc credentials.
    """

    def __init__(self, *, secret_header: str = ""):
        super().__init__()
        self.secret_header = secret_header
        self.allowlist: HostAllowlist | None = None  # that of its guarded adapters, once mounted
        self.trust_env = False
        self.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # none kept

    def fits(self, request: FetchRequest, allowlist: HostAllowlist) -> bool:
        return self.allowlist == allowlist and self.secret_header == request.auth.custom_header

    def resolve_redirects(self, *args, **kwargs):
        # Redirects are followed by _send_following_redirects, one checked hop at a time;
        # requests' own look-ahead at the next hop would read a redirect's whole body, uncapped.
        return iter(())

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if self.secret_header and self.should_strip_auth(response.request.url, prepared_request.url):
            prepared_request.headers.pop(self.secret_header, None)


class _GuardedConnectionMixin:
    """Checks the address the socket actually connected to, before TLS or a byte of HTTP.

    Checked here rather than by resolving the name beforehand, so that a name re-pointed
    between a check and the connection (DNS rebinding) cannot slip past.
    """

    def __init__(self, *args, allowlist: HostAllowlist, **kwargs):
        super().__init__(*args, **kwargs)
        self.allowlist = allowlist

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        try:
            self.allowlist.check_peer(host=self.host, address=sock.getpeername()[0])  # type: ignore[attr-defined]
        except FetchError:
            sock.close()
            raise
        return sock


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedPoolManager(PoolManager):
    def __init__(self, *args, allowlist: HostAllowlist, **kwargs):
        super().__init__(*args, **kwargs)
        self.allowlist = allowlist
        self.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def _new_pool(self, scheme: str, host: str, port: int, request_context: dict | None = None) -> HTTPConnectionPool:
        context = dict(self.connection_pool_kw if request_context is None else request_context)
        return super()._new_pool(scheme, host, port, {**context, "allowlist": self.allowlist})


class _GuardedAdapter(HTTPAdapter):
    """An adapter whose connections refuse addresses the allowlist does not let the host reach."""

    def __init__(self, allowlist: HostAllowlist):
        self.allowlist = allowlist  # before super().__init__, which makes the pool manager
        super().__init__()

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs) -> None:
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = _GuardedPoolManager(
            num_pools=connections, maxsize=maxsize, block=block, allowlist=self.allowlist, **pool_kwargs
        )


class _BoundedReader:
    """Reads a response's body one network read at a time, none outlasting the fetch's deadline.

    requests' iter_content blocks until a whole chunk arrives, so a source that sends a byte
    at a time would hold a worker for as long as it likes; read1 returns what one read got.
    """

    def __init__(self, response: requests.Response, *, read_timeout: float, deadline: float):
        self.response, self.read_timeout, self.deadline = response, read_timeout, deadline
        self.size = 0

    def chunks(self, size: int = _CHUNK):
        """Yield the body's (decoded) bytes as they arrive; FetchError past the deadline or on a timeout."""
        raw = self.response.raw
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _past_deadline(self.size)
            self._limit_next_read(min(self.read_timeout, left))
            try:
                chunk = raw.read1(size, decode_content=True)
            except ReadTimeoutError as exc:
                if time.monotonic() >= self.deadline:
                    raise _past_deadline(self.size) from exc
                raise FetchError(
                    f"The data source stopped sending its answer for more than {self.read_timeout:g}s.",
                    permanent=False,
                ) from exc
            except (Urllib3Error, OSError) as exc:
                raise FetchError(
                    "The connection broke while reading the data.", permanent=False, detail=str(exc)
                ) from exc
            if not chunk:
                return
            self.size += len(chunk)
            yield chunk

    def _limit_next_read(self, seconds: float) -> None:
        # urllib3 internals (pinned in requirements.txt): the socket under the response.
        sock = getattr(getattr(self.response.raw, "connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(seconds)


def _check_status(response: requests.Response, reader: _BoundedReader) -> None:
    status = response.status_code
    if status < 400:
        return
    if status == 429 or status >= 500:
        raise FetchError(
            f"The data source is unavailable right now (HTTP {status} {response.reason}).",
            permanent=False,
            retry_after=retry_after_seconds(response.headers.get("Retry-After")),
        )
    words = {401: "refused our credentials", 403: "refused access", 404: "has no such resource"}
    raise FetchError(
        f"The data source {words.get(status, 'rejected the request')} (HTTP {status} {response.reason}).",
        permanent=True,
        detail=next(reader.chunks(500), b"").decode("utf-8", "replace"),
    )


def _check_content_type(response: requests.Response) -> None:
    content_type = response.headers.get("Content-Type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        raise FetchError(
            f"The data source answered with '{media_type}', not JSON. It may be an error page or a login page.",
            permanent=True,
        )


def _read_capped(response: requests.Response, reader: _BoundedReader, max_bytes: int, body: IO[bytes]) -> None:
    """Write the response's body to `body`, up to `max_bytes`."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(_too_large(int(declared), max_bytes), permanent=True)
    for chunk in reader.chunks():
        if reader.size > max_bytes:
            raise FetchError(_too_large(reader.size, max_bytes, at_least=True), permanent=True)
        body.write(chunk)


def _too_large(size: int, max_bytes: int, *, at_least: bool = False) -> str:
    amount = f"{'more than ' if at_least else ''}{filesizeformat(size)}"
    return f"The data source's answer is too large ({amount}; the limit is {filesizeformat(max_bytes)})."


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, (parsedate_to_datetime(value) - timezone.now()).total_seconds())
    except (TypeError, ValueError):
        return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _json_kind(node: Any) -> str:
    names = {dict: "an object", str: "a text", bool: "true/false", int: "a number", float: "a number"}
    return "nothing (null)" if node is None else names.get(type(node), type(node).__name__)
