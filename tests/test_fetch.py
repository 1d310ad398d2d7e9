import base64
import contextlib
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from reporting.pipeline.fetch import Auth, FetchError, FetchRequest, fetch, select_rows

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
