"""Data sources are fetched only from allowed hosts, and never reach internal addresses by the back door.

Real servers on loopback stand in for data sources; `localhost` resolves to 127.0.0.1 here,
so a name listed only through a domain entry (".localhost") shows what happens when an
allowed name resolves to an internal address.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse
from pytest_httpserver import HTTPServer

from reporting import runs
from reporting.models import DataSource, ReportRun
from reporting.pipeline.fetch import FetchError, FetchRequest, HostAllowlist, fetch
from tests import factories

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"account": "A-1", "value": 10}]


@pytest.fixture
def other_server():
    """A second data-source server, on 127.0.0.1 (the first, `httpserver`, is on localhost)."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()


def fetch_from(url: str, *allowed: str):
    return fetch(FetchRequest(base_url=url, allowed_hosts=allowed))


def refusal(url: str, *allowed: str) -> FetchError:
    with pytest.raises(FetchError) as caught:
        fetch_from(url, *allowed)
    assert caught.value.permanent is True
    return caught.value


# --- the host's name ---------------------------------------------------------------------


def test_it_fetches_from_a_listed_host(httpserver):
    httpserver.expect_request("/rows").respond_with_json(ROWS)

    assert fetch_from(httpserver.url_for("/rows"), "localhost").data == ROWS


def test_it_refuses_an_unlisted_host_without_connecting(other_server):
    other_server.expect_request("/rows").respond_with_json(ROWS)

    error = refusal(other_server.url_for("/rows"), "api.example.com", "localhost")

    assert error.message == "The data source's host 127.0.0.1 is not in REPORTING_ALLOWED_SOURCE_HOSTS."
    assert other_server.log == []


def test_it_refuses_an_unlisted_ip_address_in_words():
    error = refusal("http://10.0.0.5/v1/rows", "api.example.com", "192.168.0.0/16")

    assert error.message == "The data source's host 10.0.0.5 is not in REPORTING_ALLOWED_SOURCE_HOSTS."


def test_it_refuses_everything_with_an_empty_list_and_names_the_setting(httpserver):
    httpserver.expect_request("/rows").respond_with_json(ROWS)

    error = refusal(httpserver.url_for("/rows"))

    assert error.message == (
        "No data source host is allowed: set REPORTING_ALLOWED_SOURCE_HOSTS to the hosts reports may fetch "
        "from (for example api.example.com)."
    )
    assert httpserver.log == []


def test_it_reads_the_setting_when_the_request_names_no_hosts(httpserver, settings):
    httpserver.expect_request("/rows").respond_with_json(ROWS)
    settings.REPORTING = {**settings.REPORTING, "ALLOWED_SOURCE_HOSTS": ["api.example.com"]}

    with pytest.raises(FetchError) as caught:
        fetch(FetchRequest(base_url=httpserver.url_for("/rows")))

    assert caught.value.message == "The data source's host localhost is not in REPORTING_ALLOWED_SOURCE_HOSTS."


def test_it_names_a_malformed_entry_of_the_setting():
    error = refusal("http://api.example.com/", "api.example.com", "10.0.0.0/33")

    assert "'10.0.0.0/33'" in error.message
    assert "REPORTING_ALLOWED_SOURCE_HOSTS" in error.message


def test_a_domain_entry_matches_the_domain_and_its_subdomains_only():
    allowlist = HostAllowlist.from_entries([".example.com"])

    assert allowlist.allows_host("example.com")
    assert allowlist.allows_host("api.example.com")
    assert allowlist.allows_host("API.Example.COM.")
    assert not allowlist.allows_host("badexample.com")
    assert not allowlist.allows_host("example.com.evil.net")


# --- the address actually connected to ----------------------------------------------------


def test_it_refuses_a_name_allowed_by_a_domain_entry_that_resolves_to_loopback(httpserver):
    httpserver.expect_request("/rows").respond_with_json(ROWS)

    error = refusal(httpserver.url_for("/rows"), ".localhost")

    assert error.message == (
        "localhost resolved to 127.0.0.1, a loopback address, which is refused. "
        "List the exact host name or the address in REPORTING_ALLOWED_SOURCE_HOSTS to allow it."
    )
    assert httpserver.log == []  # refused on the open socket, before a byte of HTTP


def test_it_lets_a_domain_entry_reach_an_internal_address_covered_by_a_network_entry(httpserver):
    httpserver.expect_request("/rows").respond_with_json(ROWS)

    assert fetch_from(httpserver.url_for("/rows"), ".localhost", "127.0.0.0/8").data == ROWS


def test_it_fetches_from_a_listed_ip_address(other_server):
    other_server.expect_request("/rows").respond_with_json(ROWS)

    assert fetch_from(other_server.url_for("/rows"), "127.0.0.1").data == ROWS


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("169.254.169.254", "a link-local (cloud metadata) address"),
        ("fd00:ec2::254", "a private (cloud metadata) address"),
        ("100.100.100.200", "a non-public (cloud metadata) address"),
    ],
)
def test_it_refuses_cloud_metadata_addresses_even_for_an_exactly_listed_name(address, words):
    allowlist = HostAllowlist.from_entries(["api.example.com"])

    with pytest.raises(FetchError) as caught:
        allowlist.check_peer(host="api.example.com", address=address)

    assert caught.value.message == f"api.example.com resolved to {address}, {words}, which is refused."


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.5", "a private"),
        ("192.168.1.20", "a private"),
        ("::1", "a loopback"),
        ("0.0.0.0", "an unspecified"),
        ("224.0.0.1", "a multicast"),
        ("fe80::1", "a link-local"),
        ("240.0.0.1", "a reserved"),
        ("::ffff:10.0.0.5", "a private"),
    ],
)
def test_it_refuses_internal_addresses_reached_through_a_domain_entry(address, kind):
    allowlist = HostAllowlist.from_entries([".example.com"])

    with pytest.raises(FetchError) as caught:
        allowlist.check_peer(host="api.example.com", address=address)

    assert caught.value.message.startswith("api.example.com resolved to ")
    assert f", {kind} address, which is refused." in caught.value.message


def test_an_exactly_listed_name_or_a_network_may_reach_an_internal_address():
    HostAllowlist.from_entries(["reports-api.internal"]).check_peer(host="reports-api.internal", address="10.0.0.5")
    HostAllowlist.from_entries([".internal", "10.0.0.0/8"]).check_peer(host="api.internal", address="10.0.0.5")
    HostAllowlist.from_entries([".example.com"]).check_peer(host="api.example.com", address="93.184.216.34")


# --- redirects ------------------------------------------------------------------------------


def test_it_refuses_a_redirect_to_an_unlisted_host(httpserver, other_server):
    other_server.expect_request("/elsewhere").respond_with_json(ROWS)
    httpserver.expect_request("/rows").respond_with_data(
        "", status=302, headers={"Location": other_server.url_for("/elsewhere")}
    )

    error = refusal(httpserver.url_for("/rows"), "localhost")

    assert error.message == (
        f"The data source redirected to http://127.0.0.1:{other_server.port}, "
        "whose host 127.0.0.1 is not in REPORTING_ALLOWED_SOURCE_HOSTS."
    )
    assert other_server.log == []


def test_it_follows_a_redirect_to_a_listed_host(httpserver, other_server):
    other_server.expect_request("/elsewhere").respond_with_json(ROWS)
    httpserver.expect_request("/rows").respond_with_data(
        "", status=301, headers={"Location": other_server.url_for("/elsewhere")}
    )

    result = fetch_from(httpserver.url_for("/rows"), "localhost", "127.0.0.1")

    assert result.data == ROWS
    assert result.url == other_server.url_for("/elsewhere")


def test_it_stops_after_five_redirects(httpserver):
    httpserver.expect_request("/loop").respond_with_data("", status=302, headers={"Location": "/loop"})

    error = refusal(httpserver.url_for("/loop"), "localhost")

    assert error.message == "The data source redirected more than 5 times."
    assert len(httpserver.log) == 6


# --- where staff meet it: the run and the data source form -----------------------------------


@pytest.mark.django_db
def test_a_run_of_an_unlisted_source_fails_in_words_and_sends_nothing(other_server, settings, mailoutbox):
    settings.REPORTING = {**settings.REPORTING, "ALLOWED_SOURCE_HOSTS": ["localhost"]}
    other_server.expect_request("/api/positions").respond_with_json(factories.POSITIONS)
    report = factories.report(factories.data_source(other_server.url_for("/api/")))
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)

    run = runs.execute_run(run_id=run.pk)

    assert run.status == ReportRun.Status.FAILED
    assert run.error == "The data source's host 127.0.0.1 is not in REPORTING_ALLOWED_SOURCE_HOSTS."
    assert other_server.log == []
    assert mailoutbox == []
    assert run.deliveries.count() == 0


@pytest.mark.django_db
def test_the_data_source_form_refuses_a_host_that_is_not_listed(admin_client, settings):
    settings.REPORTING = {**settings.REPORTING, "ALLOWED_SOURCE_HOSTS": [".example.com"]}
    form = {"name": "Metadata", "auth_scheme": "none", "connect_timeout": "5", "read_timeout": "30"}

    refused = admin_client.post(
        reverse("admin:reporting_datasource_add"), {**form, "base_url": "http://169.254.169.254/latest/"}
    )
    accepted = admin_client.post(
        reverse("admin:reporting_datasource_add"), {**form, "base_url": "https://api.example.com/v1/"}
    )

    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["base_url"] == [
        "The data source's host 169.254.169.254 is not in REPORTING_ALLOWED_SOURCE_HOSTS."
    ]
    assert accepted.status_code == 302
    assert list(DataSource.objects.values_list("base_url", flat=True)) == ["https://api.example.com/v1/"]


# --- the default ------------------------------------------------------------------------------


def allowed_by_default(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DEBUG", "REPORTING_ALLOWED"))}
    code = "import project.settings as s; print(','.join(s.REPORTING['ALLOWED_SOURCE_HOSTS']))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_by_default_only_loopback_is_allowed_with_debug_on_and_nothing_with_it_off(tmp_path):
    production = {"DEBUG": "false", "SECRET_KEY": "x" * 50, "REPORTING_VAR_DIR": str(tmp_path)}

    assert allowed_by_default(DEBUG="true", REPORTING_VAR_DIR=str(tmp_path)) == "127.0.0.1,localhost"
    assert allowed_by_default(**production) == ""
    assert allowed_by_default(
        **production, REPORTING_ALLOWED_SOURCE_HOSTS="api.example.com, .corp.example, 10.1.0.0/16"
    ) == ("api.example.com,.corp.example,10.1.0.0/16")


# --- the URL's shape: http(s) only, no user:password, a host named ------------------------------


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (
            "ftp://localhost/rows",
            "The data source's URL must start with http:// or https://, not ftp://.",
        ),
        (
            "http://reporter:pa55w0rd@localhost/rows",
            "The data source's URL must not carry a user name or password (user:password@host): choose HTTP "
            "basic authentication and name the environment variable that holds them.",
        ),
        ("http:///rows", "The data source's URL has no host name."),
    ],
    ids=["ftp", "user and password", "no host"],
)
def test_it_refuses_a_url_that_is_not_plain_http_to_a_named_host_without_connecting(httpserver, url, words):
    httpserver.expect_request("/rows").respond_with_json(ROWS)

    error = refusal(url, "localhost")

    assert error.message == words
    assert "host  " not in error.message  # never an empty host in the words
    assert httpserver.log == []


def test_it_refuses_a_redirect_to_a_url_with_a_password(httpserver):
    target = httpserver.url_for("/elsewhere").replace("http://", "http://who:pw@")
    httpserver.expect_request("/rows").respond_with_data("", status=302, headers={"Location": target})
    httpserver.expect_request("/elsewhere").respond_with_json(ROWS)

    error = refusal(httpserver.url_for("/rows"), "localhost")

    assert error.message.startswith(
        "The data source redirected to a URL that is refused: the data source's URL must not carry a user name"
    )
    assert [request.path for request, _ in httpserver.log] == ["/rows"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"base_url": "http://reporter:pa55w0rd@localhost/v1/"}, "base_url", "must not carry a user name or password"),
        ({"base_url": "ftp://localhost/v1/"}, "base_url", "must start with http:// or https://, not ftp://."),
        ({"connect_timeout": "0"}, "connect_timeout", "The connect timeout must be more than 0 and at most 300"),
        ({"connect_timeout": "-1"}, "connect_timeout", "The connect timeout must be more than 0 and at most 300"),
        ({"read_timeout": "301"}, "read_timeout", "The read timeout must be more than 0 and at most 300 seconds"),
        ({"auth_header_name": "X-Key\r\nX-Evil: 1"}, "auth_header_name", "is not a valid HTTP header name"),
        ({"auth_header_name": "X Key"}, "auth_header_name", "is not a valid HTTP header name"),
    ],
    ids=["user and password", "ftp", "connect 0", "connect -1", "read over 300", "header CRLF", "header space"],
)
def test_the_data_source_form_refuses_a_bad_url_timeout_or_header_name(admin_client, fields, field, words):
    form = {
        "name": "Positions",
        "base_url": "http://localhost/v1/",
        "auth_scheme": "none",
        "connect_timeout": "5",
        "read_timeout": "30",
    }

    response = admin_client.post(reverse("admin:reporting_datasource_add"), {**form, **fields})

    assert response.status_code == 200
    assert any(words in error for error in response.context["adminform"].form.errors[field])
    assert not DataSource.objects.exists()
