import base64
import contextlib
import io
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote, quote_plus

import pytest
from django.core.management import CommandError, call_command
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from reporting import preview
from reporting.models import ReportRun
from reporting.pipeline.fetch import (
    Auth,
    FetchError,
    FetchRequest,
    download_for_archive,
    drop_fields,
    fetch,
    select_rows,
)
from tests import factories

SECRET = "s3cret-Token-9f8e7d"
POSITIONS = {"data": {"positions": [{"isin": "GB0002634946", "value": 1250.5}, {"isin": "US0378331005", "value": 99}]}}


@pytest.fixture
def bearer(monkeypatch) -> Auth:
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_TOKEN", SECRET)
    return Auth(scheme="bearer", secret_env_var="REPORTING_SECRET_POSITIONS_API_TOKEN")


def request_to(httpserver: HTTPServer, path: str = "positions", **fields) -> FetchRequest:
    return FetchRequest(base_url=httpserver.url_for("/v1/"), path=path, **fields)


def fetch_error(request: FetchRequest) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch(request)
    return caught.value


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- success --------------------------------------------------------------------------


def test_it_fetches_and_parses_json(httpserver):
    httpserver.expect_request("/v1/positions", method="GET").respond_with_json(POSITIONS)

    result = fetch(request_to(httpserver))

    assert result.data == POSITIONS
    assert result.url == httpserver.url_for("/v1/positions")
    assert result.content.lstrip().startswith(b"{")
    received = httpserver.log[0][0]
    assert received.headers["Accept"] == "application/json"
    assert received.headers["User-Agent"] == "ScheduledReports/1.0"


def test_it_sends_the_query_parameters(httpserver):
    httpserver.expect_request(
        "/v1/positions", query_string={"from": "2026-05-01", "to": "2026-05-31", "fund": "A&B"}
    ).respond_with_json([])

    result = fetch(request_to(httpserver, params={"from": "2026-05-01", "to": "2026-05-31", "fund": "A&B"}))

    assert result.data == []
    assert httpserver.log[0][0].args.to_dict() == {"from": "2026-05-01", "to": "2026-05-31", "fund": "A&B"}
    assert result.url.endswith("/v1/positions?from=2026-05-01&to=2026-05-31&fund=A%26B")


def test_it_fetches_the_base_url_itself_without_a_path(httpserver):
    httpserver.expect_request("/v1/all").respond_with_json([1, 2])

    result = fetch(FetchRequest(base_url=httpserver.url_for("/v1/all")))

    assert result.data == [1, 2]


def test_it_selects_rows_at_a_nested_records_path(httpserver):
    httpserver.expect_request("/v1/positions").respond_with_json(POSITIONS)

    rows = select_rows(fetch(request_to(httpserver)).data, "data.positions")

    assert rows == [{"isin": "GB0002634946", "value": 1250.5}, {"isin": "US0378331005", "value": 99}]


def test_it_selects_rows_through_a_list_index(httpserver):
    httpserver.expect_request("/v1/positions").respond_with_json(
        {"results": [{"rows": [{"a": 1}]}, {"rows": [{"a": 2}, {"a": 3}]}]}
    )

    rows = select_rows(fetch(request_to(httpserver)).data, "results.1.rows")

    assert rows == [{"a": 2}, {"a": 3}]


def test_it_takes_a_top_level_list_as_the_rows_when_the_path_is_empty(httpserver):
    httpserver.expect_request("/v1/positions").respond_with_json([{"a": 1}, {"a": 2}])

    rows = select_rows(fetch(request_to(httpserver)).data, "")

    assert rows == [{"a": 1}, {"a": 2}]


# --- authentication -------------------------------------------------------------------


def test_it_sends_a_bearer_token_from_the_environment(httpserver, bearer):
    httpserver.expect_request("/v1/positions").respond_with_json([])

    fetch(request_to(httpserver, auth=bearer))

    assert httpserver.log[0][0].headers["Authorization"] == f"Bearer {SECRET}"


def test_it_sends_the_secret_in_a_custom_header(httpserver, monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_KEY", SECRET)
    httpserver.expect_request("/v1/positions").respond_with_json([])

    fetch(
        request_to(
            httpserver,
            auth=Auth(scheme="header", header_name="X-Api-Key", secret_env_var="REPORTING_SECRET_POSITIONS_API_KEY"),
        )
    )

    received = httpserver.log[0][0].headers
    assert received["X-Api-Key"] == SECRET
    assert "Authorization" not in received


def test_it_sends_http_basic_credentials_split_at_the_first_colon(httpserver, monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_LOGIN", "reporter:pa55:word")
    httpserver.expect_request("/v1/positions").respond_with_json([])

    fetch(request_to(httpserver, auth=Auth(scheme="basic", secret_env_var="REPORTING_SECRET_POSITIONS_API_LOGIN")))

    scheme, encoded = httpserver.log[0][0].headers["Authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "reporter:pa55:word"


def test_it_sends_no_credentials_without_an_auth_scheme(httpserver, bearer):
    httpserver.expect_request("/v1/positions").respond_with_json([])

    fetch(request_to(httpserver))

    assert "Authorization" not in httpserver.log[0][0].headers


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_it_fails_permanently_naming_a_missing_secret_variable(httpserver, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("REPORTING_SECRET_POSITIONS_API_TOKEN", raising=False)
    else:
        monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_TOKEN", value)
    httpserver.expect_request("/v1/positions").respond_with_json([])

    error = fetch_error(
        request_to(httpserver, auth=Auth(scheme="bearer", secret_env_var="REPORTING_SECRET_POSITIONS_API_TOKEN"))
    )

    assert error.permanent is True
    assert "secret is missing" in error.message
    assert "'REPORTING_SECRET_POSITIONS_API_TOKEN' is not set" in error.message
    assert httpserver.log == []  # nothing was sent without credentials


def test_it_does_not_reveal_another_variables_value_when_the_secret_is_missing(httpserver, monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_KEY", SECRET)  # set, but not the one the source names
    monkeypatch.delenv("REPORTING_SECRET_POSITIONS_API_TOKEN", raising=False)

    error = fetch_error(
        request_to(httpserver, auth=Auth(scheme="bearer", secret_env_var="REPORTING_SECRET_POSITIONS_API_TOKEN"))
    )

    assert "REPORTING_SECRET_POSITIONS_API_TOKEN" in error.message
    assert SECRET not in f"{error.message} {error.detail}"


def test_it_drops_the_final_newline_of_a_secret_read_from_a_file(httpserver, monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_TOKEN", SECRET + "\n")
    httpserver.expect_request("/v1/positions", headers={"Authorization": f"Bearer {SECRET}"}).respond_with_json([])

    result = fetch(
        request_to(httpserver, auth=Auth(scheme="bearer", secret_env_var="REPORTING_SECRET_POSITIONS_API_TOKEN"))
    )

    assert result.data == []


def test_it_keeps_a_secret_with_a_line_break_out_of_the_message(httpserver, monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_TOKEN", SECRET + "\nInjected: header")
    httpserver.expect_request("/v1/positions").respond_with_json([])

    error = fetch_error(
        request_to(httpserver, auth=Auth(scheme="bearer", secret_env_var="REPORTING_SECRET_POSITIONS_API_TOKEN"))
    )

    assert SECRET not in f"{error.message} {error.detail}"
    assert error.permanent is True
    assert "REPORTING_SECRET_POSITIONS_API_TOKEN" in error.message


def test_it_does_not_send_a_custom_header_secret_to_another_origin_on_redirect(httpserver, monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_KEY", SECRET)
    other = HTTPServer(host="127.0.0.1", port=0)
    other.start()
    try:
        other.expect_request("/elsewhere").respond_with_json([])
        elsewhere = f"http://localhost:{other.port}/elsewhere"
        httpserver.expect_request("/v1/positions").respond_with_data("", status=302, headers={"Location": elsewhere})

        auth = Auth(scheme="header", header_name="X-Api-Key", secret_env_var="REPORTING_SECRET_POSITIONS_API_KEY")
        with contextlib.suppress(FetchError):  # not following is fine too
            fetch(request_to(httpserver, auth=auth))

        assert all("X-Api-Key" not in request.headers for request, _ in other.log)
    finally:
        other.stop()


# --- transient errors -----------------------------------------------------------------


def test_it_fails_transiently_when_nothing_listens(bearer):
    port = closed_port()

    error = fetch_error(FetchRequest(base_url=f"http://127.0.0.1:{port}/v1/", path="positions", auth=bearer))

    assert error.permanent is False
    assert error.message == f"Could not connect to the data source at http://127.0.0.1:{port}."
    assert SECRET not in f"{error.message} {error.detail}"


def test_it_fails_transiently_when_the_source_does_not_answer_in_time(httpserver, bearer):
    answered = threading.Event()

    def slow(request: Request) -> Response:
        time.sleep(0.6)
        answered.set()
        return Response("[]", content_type="application/json")

    httpserver.expect_request("/v1/positions").respond_with_handler(slow)

    started = time.monotonic()
    error = fetch_error(request_to(httpserver, auth=bearer, read_timeout=0.3))
    waited = time.monotonic() - started
    answered.wait(2)  # the test server answers one request at a time: let it finish

    assert waited < 0.55
    assert error.permanent is False
    assert "did not answer in time" in error.message
    assert "read 0.3s" in error.message
    assert SECRET not in f"{error.message} {error.detail}"


def test_it_fails_transiently_when_the_body_stalls(httpserver):
    finished = threading.Event()

    def stalling(request: Request) -> Response:
        def body():
            try:
                yield b'[{"a": 1},'
                time.sleep(0.6)
                yield b'{"a": 2}]'
            finally:
                finished.set()

        return Response(body(), content_type="application/json")

    httpserver.expect_request("/v1/positions").respond_with_handler(stalling)

    error = fetch_error(request_to(httpserver, read_timeout=0.3))
    finished.wait(2)

    assert error.permanent is False
    assert "stopped sending its answer for more than 0.3s" in error.message


@pytest.mark.parametrize(
    ("status", "reason"), [(500, "Internal Server Error"), (502, "Bad Gateway"), (503, "Service Unavailable")]
)
def test_it_fails_transiently_on_a_server_error(httpserver, bearer, status, reason):
    httpserver.expect_request("/v1/positions").respond_with_data("oops", status=status)

    error = fetch_error(request_to(httpserver, auth=bearer))

    assert error.permanent is False
    assert error.retry_after is None
    assert error.message.startswith(f"The data source is unavailable right now (HTTP {status} ")
    assert reason.lower() in error.message.lower()  # the reason phrase is the server's own


def test_it_fails_transiently_on_too_many_requests_with_retry_after_seconds(httpserver, bearer):
    httpserver.expect_request("/v1/positions").respond_with_data("slow down", status=429, headers={"Retry-After": "7"})

    error = fetch_error(request_to(httpserver, auth=bearer))

    assert error.permanent is False
    assert error.retry_after == 7
    assert error.message.lower() == "the data source is unavailable right now (http 429 too many requests)."


def test_it_reads_retry_after_given_as_an_http_date(httpserver):
    retry_at = datetime.now(UTC) + timedelta(seconds=120)
    httpserver.expect_request("/v1/positions").respond_with_data(
        "slow down", status=503, headers={"Retry-After": format_datetime(retry_at, usegmt=True)}
    )

    error = fetch_error(request_to(httpserver))

    assert error.permanent is False
    assert 110 <= error.retry_after <= 120


def test_it_reads_a_past_retry_after_date_as_no_wait(httpserver):
    httpserver.expect_request("/v1/positions").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
    )

    assert fetch_error(request_to(httpserver)).retry_after == 0


def test_it_ignores_a_retry_after_it_cannot_read(httpserver):
    httpserver.expect_request("/v1/positions").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "soon"}
    )

    error = fetch_error(request_to(httpserver))

    assert error.permanent is False
    assert error.retry_after is None


# --- permanent errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, "The data source refused our credentials (HTTP 401 Unauthorized)."),
        (403, "The data source refused access (HTTP 403 Forbidden)."),
        (404, "The data source has no such resource (HTTP 404 Not Found)."),
        (400, "The data source rejected the request (HTTP 400 Bad Request)."),
    ],
)
def test_it_fails_permanently_on_a_client_error(httpserver, bearer, status, words):
    httpserver.expect_request("/v1/positions").respond_with_data('{"error": "nope"}', status=status)

    error = fetch_error(request_to(httpserver, auth=bearer))

    assert error.permanent is True
    assert error.message.lower() == words.lower()  # the reason phrase is the server's own
    assert error.detail == '{"error": "nope"}'
    assert SECRET not in f"{error.message} {error.detail}"


def test_it_fails_permanently_on_an_html_page_with_status_200(httpserver, bearer):
    httpserver.expect_request("/v1/positions").respond_with_data(
        "<html><body>Please log in</body></html>", content_type="text/html; charset=utf-8"
    )

    error = fetch_error(request_to(httpserver, auth=bearer))

    assert error.permanent is True
    assert "answered with 'text/html', not JSON" in error.message
    assert "error page or a login page" in error.message


def test_it_accepts_a_json_media_type_with_a_suffix(httpserver):
    httpserver.expect_request("/v1/positions").respond_with_data(
        '{"a": 1}', content_type="application/vnd.api+json; charset=utf-8"
    )

    assert fetch(request_to(httpserver)).data == {"a": 1}


def test_it_fails_permanently_on_invalid_json(httpserver, bearer):
    httpserver.expect_request("/v1/positions").respond_with_data('{"a": 1', content_type="application/json")

    error = fetch_error(request_to(httpserver, auth=bearer))

    assert error.permanent is True
    assert error.message.startswith("The data source's answer is not valid JSON")
    assert "line 1, column 8" in error.message
    assert error.detail == '{"a": 1'


def test_it_fails_permanently_on_bytes_that_are_not_utf8(httpserver):
    httpserver.expect_request("/v1/positions").respond_with_data(
        '{"name": "café"}'.encode("latin-1"), content_type="application/json"
    )

    error = fetch_error(request_to(httpserver))

    assert error.permanent is True
    assert error.message == "The data source's answer is not valid UTF-8 text."


def test_it_fails_permanently_on_a_declared_length_over_the_limit(httpserver):
    httpserver.expect_request("/v1/positions").respond_with_data(
        b"[" + b"1," * 3000 + b"1]", content_type="application/json"
    )

    error = fetch_error(request_to(httpserver, max_bytes=2048))

    assert httpserver.log[0][1].headers["Content-Length"] == "6003"
    assert error.permanent is True
    assert "answer is too large" in error.message
    assert "the limit is" in error.message


def test_it_fails_permanently_on_a_streamed_answer_over_the_limit(httpserver):
    def endless_list(request: Request) -> Response:
        def body():
            yield b"["
            for _ in range(200):
                yield b"1," * 500
            yield b"1]"

        return Response(body(), content_type="application/json")

    httpserver.expect_request("/v1/positions").respond_with_handler(endless_list)

    error = fetch_error(request_to(httpserver, max_bytes=2048))

    assert "Content-Length" not in httpserver.log[0][1].headers
    assert error.permanent is True
    assert "answer is too large (more than" in error.message


def test_it_reads_a_streamed_answer_under_the_limit(httpserver):
    def chunks(request: Request) -> Response:
        return Response(iter([b'[{"a": ', b"1}, ", b'{"a": 2}]']), content_type="application/json")

    httpserver.expect_request("/v1/positions").respond_with_handler(chunks)

    assert fetch(request_to(httpserver, max_bytes=2048)).data == [{"a": 1}, {"a": 2}]


def test_it_states_a_small_size_limit_in_words_that_make_sense(httpserver):
    httpserver.expect_request("/v1/positions").respond_with_data(b"[" + b"1," * 3000 + b"1]")

    error = fetch_error(request_to(httpserver, max_bytes=1024))  # REPORTING_MAX_RESPONSE_BYTES' minimum

    assert "0.0 MB" not in error.message


# --- records path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("data.holdings", "'data' has no 'holdings'"),
        ("data.positions.5", "'data.positions' has no '5'"),
        ("result.rows", "the response has no 'result'"),
    ],
)
def test_it_fails_permanently_when_the_records_path_is_not_there(path, where):
    with pytest.raises(FetchError) as caught:
        select_rows(POSITIONS, path)

    error = caught.value
    assert error.permanent is True
    assert error.message == f"The records path '{path}' was not found in the data: {where}."


def test_it_fails_permanently_when_a_list_index_is_out_of_range():
    with pytest.raises(FetchError) as caught:
        select_rows({"results": [[1]]}, "results.3")

    assert "'results.3' was not found" in caught.value.message


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        (POSITIONS, "data", "The records path 'data' points to an object, not to a list of rows."),
        ({"data": None}, "data", "The records path 'data' points to nothing (null), not to a list of rows."),
        (
            {"data": {"count": 3}},
            "data.count",
            "The records path 'data.count' points to a number, not to a list of rows.",
        ),
        (POSITIONS, "", "The records path '(the whole response)' points to an object, not to a list of rows."),
    ],
    ids=["object", "null", "number", "whole response"],
)
def test_it_fails_permanently_when_the_records_path_is_not_a_list(data, path, words):
    with pytest.raises(FetchError) as caught:
        select_rows(data, path)

    assert caught.value.permanent is True
    assert caught.value.message == words


# --- a deadline on the whole fetch, not only on each read -----------------------------------


class TricklingServer:
    """A real HTTP server on loopback that sends its answer one byte every `interval` seconds.

    pytest-httpserver cannot send a body slower than a read timeout notices: each byte here
    arrives well within any read timeout, so only a deadline on the whole fetch stops it.
    """

    def __init__(self, *, interval: float = 0.2, body: bytes = b'{"data": {"positions": []}}' + b" " * 10_000):
        self.interval, self.body = interval, body
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.bytes_sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/v1/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
            connection.sendall(head.encode())
            for byte in self.body:
                if self.stopped.wait(self.interval):
                    return
                connection.sendall(bytes([byte]))
                self.bytes_sent += 1

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.fixture
def trickling_server():
    server = TricklingServer()
    yield server
    server.stop()


def test_it_gives_up_on_a_source_that_trickles_at_the_total_deadline(trickling_server, settings):
    settings.REPORTING = {**settings.REPORTING, "FETCH_TOTAL_SECONDS": 2}
    started = time.monotonic()

    error = fetch_error(FetchRequest(base_url=trickling_server.url(), path="positions", read_timeout=30))

    elapsed = time.monotonic() - started
    assert 1.8 < elapsed < 3.0, elapsed  # each byte came within the 30 s read timeout
    assert error.permanent is False
    assert error.message.startswith("The data source did not send its whole answer within 2 seconds")
    assert "REPORTING_FETCH_TOTAL_SECONDS" in error.message
    assert trickling_server.bytes_sent < 20


def test_a_read_never_waits_longer_than_what_is_left_of_the_deadline(settings):
    # Headers, then silence: the 30 s read timeout must be cut to what is left of the 1 s deadline.
    silent = TricklingServer(interval=60)
    settings.REPORTING = {**settings.REPORTING, "FETCH_TOTAL_SECONDS": 1}
    started = time.monotonic()
    try:
        error = fetch_error(FetchRequest(base_url=silent.url(), path="positions", read_timeout=30))
    finally:
        silent.stop()

    assert time.monotonic() - started < 2.0
    assert "did not send its whole answer within 1 seconds" in error.message


# --- the answer's shape: limits counted before anything is built ------------------------------


def serve_raw(httpserver: HTTPServer, body: bytes | str) -> None:
    httpserver.expect_request("/v1/positions").respond_with_data(body, content_type="application/json")


def test_it_refuses_json_nested_deeper_than_the_limit_in_words(httpserver):
    serve_raw(httpserver, "[" * 100_000 + "]" * 100_000)  # json.loads: RecursionError

    error = fetch_error(request_to(httpserver))

    assert error.permanent is True
    assert error.message.startswith("The data source's answer nests deeper than 64 levels of lists and objects")


def test_it_reads_json_nested_exactly_to_the_limit_and_counts_no_brackets_inside_texts(httpserver):
    deep = "[" * 63 + '{"a": "[[[[{{{{' + "[" * 500 + '\\"}"}' + "]" * 63
    serve_raw(httpserver, deep)

    result = fetch(request_to(httpserver))

    node = result.data
    for _ in range(63):
        node = node[0]
    assert node["a"].startswith("[[[[{{{{")


def test_one_level_more_than_the_limit_is_refused(httpserver, settings):
    settings.REPORTING = {**settings.REPORTING, "MAX_JSON_DEPTH": 5}
    serve_raw(httpserver, "[[[[[[1]]]]]]")

    assert "nests deeper than 5 levels" in fetch_error(request_to(httpserver)).message


def test_it_refuses_45_mb_of_empty_lists_quickly_in_words(httpserver):
    body = b"[" + b"[]," * 15_000_000 + b"[]]"  # json.loads took 1.3 GB for this
    serve_raw(httpserver, body)
    started = time.monotonic()

    error = fetch_error(request_to(httpserver))

    assert time.monotonic() - started < 10
    assert error.permanent is True
    assert error.message == (
        "The data source's answer has more than 5,000,000 values (about 30,000,003); "
        "the limit is REPORTING_MAX_JSON_VALUES."
    )


def test_it_refuses_a_number_too_long_to_read_in_words(httpserver):
    serve_raw(httpserver, '{"data": {"positions": [{"value": ' + "9" * 5000 + "}]}}")

    error = fetch_error(request_to(httpserver))

    assert error.permanent is True
    assert error.message == (
        "The data source's answer has a number longer than 4,300 digits, which cannot be read as a number."
    )


def test_unbalanced_brackets_are_reported_by_the_json_parser_where_they_are(httpserver):
    serve_raw(httpserver, '{"data": [1, 2]]')

    assert (
        "not valid JSON (Expecting ',' delimiter at line 1, column 16)" in fetch_error(request_to(httpserver)).message
    )


# --- what the fetch refuses before sending anything -----------------------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"connect_timeout": 0}, "The connect timeout must be more than 0 and at most 300 seconds, not 0."),
        ({"connect_timeout": -1}, "The connect timeout must be more than 0 and at most 300 seconds, not -1."),
        ({"read_timeout": 3600}, "The read timeout must be more than 0 and at most 300 seconds, not 3600."),
        ({"read_timeout": float("nan")}, "The read timeout must be more than 0 and at most 300 seconds, not nan."),
    ],
    ids=["connect 0", "connect -1", "read an hour", "read NaN"],
)
def test_it_refuses_a_timeout_that_is_not_positive_and_bounded_sending_nothing(httpserver, fields, words):
    httpserver.expect_request("/v1/positions").respond_with_json([])

    error = fetch_error(request_to(httpserver, **fields))

    assert error.permanent is True
    assert error.message == words
    assert httpserver.log == []


def test_it_refuses_a_header_name_with_a_line_break_sending_nothing(httpserver, monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_KEY", SECRET)
    httpserver.expect_request("/v1/positions").respond_with_json([])
    auth = Auth(
        scheme="header", header_name="X-Key\r\nX-Injected: 1", secret_env_var="REPORTING_SECRET_POSITIONS_API_KEY"
    )

    error = fetch_error(request_to(httpserver, auth=auth))

    assert error.message.startswith("The header name 'X-Key\\r\\nX-Injected: 1' is not a valid HTTP header name")
    assert httpserver.log == []


@pytest.mark.parametrize("variable", ["SECRET_KEY", "DATABASE_URL", "REPORTING_SECRET_"])
def test_it_refuses_to_read_a_variable_not_meant_for_data_sources_sending_nothing(httpserver, monkeypatch, variable):
    monkeypatch.setenv(variable, "the-servers-own-secret")
    httpserver.expect_request("/v1/positions").respond_with_json([])

    error = fetch_error(request_to(httpserver, auth=Auth(scheme="bearer", secret_env_var=variable)))

    assert error.permanent is True
    assert error.message == (
        f"The environment variable '{variable}' may not hold a data source's secret: its name must start with "
        "REPORTING_SECRET_ (set by REPORTING_SECRET_ENV_PREFIX), or be listed in REPORTING_SECRET_ENV_VARS. "
        "Nothing was sent to the data source."
    )
    assert httpserver.log == []


def test_a_variable_listed_in_the_setting_may_hold_a_secret(httpserver, monkeypatch, settings):
    settings.REPORTING = {**settings.REPORTING, "SECRET_ENV_VARS": ["PORTFOLIO_API_TOKEN"]}
    monkeypatch.setenv("PORTFOLIO_API_TOKEN", SECRET)
    httpserver.expect_request("/v1/positions", headers={"Authorization": f"Bearer {SECRET}"}).respond_with_json([])

    assert fetch(request_to(httpserver, auth=Auth(scheme="bearer", secret_env_var="PORTFOLIO_API_TOKEN"))).data == []


# --- every form of the secret is redacted -----------------------------------------------------

SLASHED = "tok/9f8e+7d6c=5b4a"  # a secret whose JSON and URL forms differ from it


@pytest.fixture
def slashed_bearer(monkeypatch) -> Auth:
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_TOKEN", SLASHED)
    return Auth(scheme="bearer", secret_env_var="REPORTING_SECRET_POSITIONS_API_TOKEN")


def all_forms(secret: str) -> list[str]:
    escaped = secret.replace("/", "\\/")
    return [secret, escaped, quote(secret, safe=""), quote_plus(secret), base64.b64encode(secret.encode()).decode()]


def test_it_redacts_a_json_escaped_and_url_encoded_echo_from_the_error(httpserver, slashed_bearer):
    echo = '{"error": "bad token tok\\/9f8e+7d6c=5b4a", "see": "/login?t=' + quote(SLASHED, safe="") + '"}'
    httpserver.expect_request("/v1/positions").respond_with_data(echo, status=401, content_type="application/json")

    error = fetch_error(request_to(httpserver, auth=slashed_bearer))

    shown = f"{error.message} {error.detail}"
    assert "bad token [secret]" in shown and "t=[secret]" in shown
    assert not any(form in shown for form in all_forms(SLASHED))


def test_it_redacts_the_basic_auth_password_and_header_from_the_error(httpserver, monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_POSITIONS_API_LOGIN", "reporter:pa55w0rd!")
    header = base64.b64encode(b"reporter:pa55w0rd!").decode()
    echo = f"no such user; password pa55w0rd! rejected; you sent Authorization: Basic {header}"
    httpserver.expect_request("/v1/positions").respond_with_data(echo, status=403, content_type="text/plain")

    error = fetch_error(
        request_to(httpserver, auth=Auth(scheme="basic", secret_env_var="REPORTING_SECRET_POSITIONS_API_LOGIN"))
    )

    shown = f"{error.message} {error.detail}"
    assert "password [secret] rejected" in shown and "Basic [secret]" in shown
    assert "pa55w0rd!" not in shown and header not in shown


def test_a_token_carried_by_a_redirect_is_not_in_the_url_returned(httpserver, slashed_bearer):
    target = httpserver.url_for("/v1/signed") + "?token=" + quote(SLASHED, safe="")
    httpserver.expect_request("/v1/positions").respond_with_data("", status=302, headers={"Location": target})
    httpserver.expect_request("/v1/signed").respond_with_json([])

    result = fetch(request_to(httpserver, auth=slashed_bearer))

    assert result.url == httpserver.url_for("/v1/signed") + "?token=[secret]"


def test_the_secret_in_a_successful_answer_is_redacted_from_the_data_and_the_bytes_kept(httpserver, slashed_bearer):
    answer = {"data": {"positions": [{"isin": "GB0002634946", "note": f"issued for {SLASHED}"}]}, SLASHED: 1}
    httpserver.expect_request("/v1/positions").respond_with_json(answer)
    body = io.BytesIO()

    downloaded = download_for_archive(request_to(httpserver, auth=slashed_bearer), body)

    expected = {"data": {"positions": [{"isin": "GB0002634946", "note": "issued for [secret]"}]}, "[secret]": 1}
    assert downloaded.data == expected
    assert json.loads(body.getvalue()) == expected
    assert downloaded.notes == (
        "The data source's answer contained the data source's own secret: it is archived and rendered as [secret].",
    )


def test_an_answer_without_the_secret_is_kept_byte_for_byte(httpserver, slashed_bearer):
    httpserver.expect_request("/v1/positions").respond_with_data(b'{"a":  [1 ,2]}', content_type="application/json")
    body = io.BytesIO()

    downloaded = download_for_archive(request_to(httpserver, auth=slashed_bearer), body)

    assert body.getvalue() == b'{"a":  [1 ,2]}'
    assert downloaded.notes == ()


# --- fields dropped before archiving and rendering ----------------------------------------------


def test_it_drops_a_key_wherever_it_occurs_and_a_dotted_path_from_the_top(httpserver):
    answer = {
        "meta": {"session": {"token": "abc", "user": "u1"}, "internal_id": 7},
        "data": {"positions": [{"isin": "A", "internal_id": 1}, {"isin": "B", "internal_id": 2}]},
    }
    httpserver.expect_request("/v1/positions").respond_with_json(answer)
    body = io.BytesIO()

    downloaded = download_for_archive(
        request_to(httpserver, drop_fields=("internal_id", "meta.session.token", "not.there")), body
    )

    expected = {"meta": {"session": {"user": "u1"}}, "data": {"positions": [{"isin": "A"}, {"isin": "B"}]}}
    assert downloaded.data == expected
    assert json.loads(body.getvalue()) == expected
    assert downloaded.notes == (
        "Removed from the data before archiving and rendering, as its data source asks: internal_id, "
        "meta.session.token.",
    )


def test_a_dotted_path_goes_through_every_item_of_a_list():
    data = {"rows": [{"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}, 4]}

    assert drop_fields(data, ["rows.a.b"]) == ["rows.a.b"]
    assert data == {"rows": [{"a": {"c": 2}}, {"a": {}}, 4]}


@pytest.mark.django_db
def test_run_report_and_preview_end_at_the_deadline_without_celery(trickling_server, settings):
    settings.REPORTING = {**settings.REPORTING, "FETCH_TOTAL_SECONDS": 1, "FETCH_MAX_RETRIES": 0}
    report = factories.report(factories.data_source(trickling_server.url("/api/")))
    started = time.monotonic()

    with pytest.raises(CommandError, match="did not send its whole answer within 1 seconds"):
        call_command("run_report", report.slug)
    with pytest.raises(preview.PreviewError, match="did not send its whole answer within 1 seconds"):
        preview.preview_report(report_id=report.pk, period_day=None)

    assert time.monotonic() - started < 4
    assert ReportRun.objects.get().status == ReportRun.Status.FAILED
