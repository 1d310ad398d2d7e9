"""A data source's secret lives only in the environment: never in the database, a file, a log or a page."""

import base64
import io
import json
import logging
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from django.core.management import call_command
from django.urls import reverse

from reporting import alerts, runs
from reporting.models import DataSource, ReportRun
from tests import factories

pytestmark = pytest.mark.django_db
TOKEN = "tok_live_9f8e7d6c5b4a39281706"


def run_now(report):
    return runs.execute_run(
        run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk
    )


def test_the_secret_appears_nowhere_after_runs_that_succeed_and_fail(
    httpserver, monkeypatch, settings, caplog, admin_client
):
    monkeypatch.setenv("REPORTING_SECRET_PORTFOLIO_API", TOKEN)
    caplog.set_level(logging.DEBUG)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    httpserver.expect_request("/api/positions", headers=auth).respond_with_json(factories.POSITIONS)
    httpserver.expect_request("/api/broken", headers=auth).respond_with_data("<html>Login</html>", status=200)
    httpserver.expect_request("/api/denied").respond_with_data(f"bad token {TOKEN}", status=401)
    source = factories.data_source(
        httpserver.url_for("/api/"),
        auth_scheme=DataSource.AuthScheme.BEARER,
        secret_env_var="REPORTING_SECRET_PORTFOLIO_API",
    )
    good = run_now(factories.report(source, slug="good"))
    broken = run_now(factories.report(source, slug="broken", path="broken"))
    denied = run_now(factories.report(source, slug="denied", path="denied"))

    assert [good.status, broken.status, denied.status] == ["sent", "failed", "failed"]
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert TOKEN not in dump.getvalue()
    for path in Path(settings.MEDIA_ROOT).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in caplog.text
    pages = [reverse("admin:reporting_datasource_change", args=[source.pk])]
    pages += [reverse("admin:reporting_reportrun_change", args=[run.pk]) for run in ReportRun.objects.all()]
    pages += [reverse("admin:reporting_reportrun_changelist"), reverse("admin:reporting_report_changelist")]
    for page in pages:
        assert TOKEN not in admin_client.get(page).content.decode(), page
    assert "REPORTING_SECRET_PORTFOLIO_API" in admin_client.get(pages[0]).content.decode()


# --- only variables meant for data sources may be read as a secret ---------------------------


def source_form(**fields) -> dict:
    form = {"name": "Positions", "base_url": "http://localhost/v1/", "auth_scheme": "bearer"}
    return {**form, "connect_timeout": "5", "read_timeout": "30", **fields}


def test_the_data_source_form_refuses_a_variable_not_meant_for_data_sources(admin_client):
    response = admin_client.post(reverse("admin:reporting_datasource_add"), source_form(secret_env_var="SECRET_KEY"))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["secret_env_var"] == [
        "The environment variable 'SECRET_KEY' may not hold a data source's secret: its name must start with "
        "REPORTING_SECRET_ (set by REPORTING_SECRET_ENV_PREFIX), or be listed in REPORTING_SECRET_ENV_VARS."
    ]
    assert not DataSource.objects.exists()


def test_the_data_source_form_accepts_the_prefix_and_the_listed_variables(admin_client, settings):
    settings.REPORTING = {**settings.REPORTING, "SECRET_ENV_VARS": ["PORTFOLIO_API_TOKEN"]}
    add = reverse("admin:reporting_datasource_add")

    assert admin_client.post(add, source_form(secret_env_var="REPORTING_SECRET_PORTFOLIO")).status_code == 302
    assert admin_client.post(add, source_form(name="B", secret_env_var="PORTFOLIO_API_TOKEN")).status_code == 302
    assert sorted(DataSource.objects.values_list("secret_env_var", flat=True)) == [
        "PORTFOLIO_API_TOKEN",
        "REPORTING_SECRET_PORTFOLIO",
    ]


def test_a_source_saved_around_the_form_with_the_django_secret_key_fails_its_run_sending_nothing(
    httpserver, settings, mailoutbox
):
    httpserver.expect_request("/api/positions").respond_with_json(factories.POSITIONS)
    source = factories.data_source(
        httpserver.url_for("/api/"), auth_scheme=DataSource.AuthScheme.BEARER, secret_env_var="SECRET_KEY"
    )
    settings.REPORTING = {**settings.REPORTING, "FETCH_MAX_RETRIES": 0}

    run = run_now(factories.report(source))

    assert run.status == "failed"
    assert run.error.startswith("The environment variable 'SECRET_KEY' may not hold a data source's secret")
    assert run.error.endswith("Nothing was sent to the data source.")
    assert httpserver.log == []
    assert mailoutbox == []


# --- every form of the secret, wherever it comes back -----------------------------------------

SLASHED = "tok/live+9f8e=7d6c5b4a"
ESCAPED = SLASHED.replace("/", "\\/")  # as some JSON encoders write it: tok\/live…


def forms_of(secret: str) -> list[str]:
    return [
        secret,
        secret.replace("/", "\\/"),
        quote(secret, safe=""),
        quote_plus(secret),
        base64.b64encode(secret.encode()).decode(),
    ]


def assert_nowhere(secret_forms: list[str], *texts: str) -> None:
    for text in texts:
        leaked = [form for form in secret_forms if form in text]
        assert not leaked, (leaked, text[:300])


def archived_texts(settings) -> list[str]:
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    files = [p.read_bytes().decode("utf-8", "replace") for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file()]
    return [dump.getvalue(), *files]


def test_a_token_in_a_redirect_and_in_the_answer_reaches_no_archive_page_or_email(
    httpserver, monkeypatch, settings, use_smtp, admin_client
):
    monkeypatch.setenv("REPORTING_SECRET_PORTFOLIO_API", SLASHED)
    signed = httpserver.url_for("/api/signed") + "?token=" + quote(SLASHED, safe="")
    httpserver.expect_request("/api/positions").respond_with_data("", status=302, headers={"Location": signed})
    leaky = {"data": {"positions": [{"account": f"issued to {SLASHED}", "value": 1}]}}
    httpserver.expect_request("/api/signed").respond_with_json(leaky)
    source = factories.data_source(
        httpserver.url_for("/api/"),
        auth_scheme=DataSource.AuthScheme.BEARER,
        secret_env_var="REPORTING_SECRET_PORTFOLIO_API",
    )

    run = run_now(factories.report(source, template="reports/table.html"))

    assert run.status == "sent", run.error
    assert run.request_url == httpserver.url_for("/api/signed") + "?token=[secret]"
    assert "The data source's answer contained the data source's own secret" in run.notes
    assert "issued to [secret]" in run.data_snapshot.open("rb").read().decode()
    page = admin_client.get(reverse("admin:reporting_reportrun_change", args=[run.pk])).content.decode()
    assert_nowhere(forms_of(SLASHED), *archived_texts(settings), page)
    assert_nowhere(forms_of(SLASHED), *(message.as_string() for message in use_smtp.messages))


def test_an_echo_in_any_form_is_kept_out_of_the_run_and_the_failure_alert(
    httpserver, monkeypatch, settings, django_user_model, mailoutbox
):
    monkeypatch.setenv("REPORTING_SECRET_PORTFOLIO_LOGIN", "reporter:" + SLASHED)
    basic = base64.b64encode(f"reporter:{SLASHED}".encode()).decode()
    echo = (
        json.dumps({"header": f"Basic {basic}", "q": quote_plus(SLASHED)})[:-1]
        + f', "error": "bad password {ESCAPED}"}}'
    )
    httpserver.expect_request("/api/positions").respond_with_data(echo, status=401, content_type="application/json")
    source = factories.data_source(
        httpserver.url_for("/api/"),
        auth_scheme=DataSource.AuthScheme.BASIC,
        secret_env_var="REPORTING_SECRET_PORTFOLIO_LOGIN",
    )
    owner = django_user_model.objects.create_user("olga", "olga@example.com", "pw", is_staff=True)

    run = run_now(factories.report(source, owner=owner))
    alerts.send_failure_alerts()

    assert run.status == "failed"
    assert "bad password [secret]" in run.error_detail and "Basic [secret]" in run.error_detail
    [alert] = [message for message in mailoutbox if message.to == ["olga@example.com"]]
    secret_forms = forms_of(SLASHED) + forms_of(f"reporter:{SLASHED}")
    assert_nowhere(
        secret_forms, run.error, run.error_detail, alert.body, alert.alternatives[0][0], *archived_texts(settings)
    )


def test_the_log_redacts_every_form_of_a_data_source_secret(monkeypatch):
    monkeypatch.setenv("REPORTING_SECRET_PORTFOLIO_API", SLASHED)
    handler = logging.getLogger("reporting").handlers[0]  # the console handler settings.LOGGING configures
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        logging.getLogger("reporting.runs").warning("redirected to %s?t=%s", SLASHED, quote(SLASHED, safe=""))
        try:
            raise ValueError(f"echoed {ESCAPED}")
        except ValueError:
            logging.getLogger("reporting.fetch").exception("unexpected")
    finally:
        handler.setStream(previous)

    assert "redirected to [secret]?t=[secret]" in stream.getvalue()
    assert "ValueError: echoed [secret]" in stream.getvalue()
    assert_nowhere(forms_of(SLASHED), stream.getvalue())


# --- fields removed from the archived data --------------------------------------------------------


def test_fields_named_on_the_source_are_neither_archived_nor_rendered(httpserver, settings, use_smtp):
    rows = [{"account": "A-1", "value": 10, "customer_ssn": "078-05-1120"}]
    httpserver.expect_request("/api/positions").respond_with_json({"data": {"positions": rows}, "session": "s-1"})
    source = factories.data_source(httpserver.url_for("/api/"), drop_fields="customer_ssn\nsession")

    run = run_now(factories.report(source))

    assert run.status == "sent", run.error
    assert json.loads(run.data_snapshot.open("rb").read()) == {"data": {"positions": [{"account": "A-1", "value": 10}]}}
    assert "Removed from the data before archiving and rendering, as its data source asks: customer_ssn, session." in (
        run.notes
    )
    assert_nowhere(["078-05-1120", "customer_ssn"], run.body_html, run.body_text, *archived_texts(settings)[1:])
    assert_nowhere(["078-05-1120"], *(message.as_string() for message in use_smtp.messages))


def test_the_data_source_list_never_shows_a_password_saved_in_an_old_url(admin_client):
    factories.data_source("http://reporter:pa55w0rd@localhost/v1/", name="Old source")

    page = admin_client.get(reverse("admin:reporting_datasource_changelist")).content.decode()

    assert "http://localhost/v1/" in page
    assert "pa55w0rd" not in page


def test_fields_named_on_the_source_are_not_shown_in_preview_either(httpserver, admin_client):
    rows = [{"account": "A-1", "value": 10, "customer_ssn": "078-05-1120"}]
    httpserver.expect_request("/api/positions").respond_with_json({"data": {"positions": rows}})
    source = factories.data_source(httpserver.url_for("/api/"), drop_fields="customer_ssn")
    report = factories.report(source, records_path="data.positions")

    page = admin_client.get(reverse("admin:reporting_report_preview", args=[report.pk])).content.decode()

    assert "A-1" in page
    assert "078-05-1120" not in page and "customer_ssn" not in page
