"""The report form's layout designer and live preview: a sample of the live answer, the email as the
form has it (saved or not), who may ask, and that nothing is saved, sent or archived on the way."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from reporting.models import Recipient, RecipientList, Report, ReportRun
from tests import factories
from tests.test_admin import report_form

pytestmark = pytest.mark.django_db
ANSWER = {
    "meta": {"nav": 1500.5, "as_of": "2026-11-30"},
    "result": {
        "holdings": [
            {"ticker": "ACME", "mv": "1000.50", "ccy": "EUR", "weight": 0.667},
            {"ticker": "<b>BOLD</b>", "mv": 500, "ccy": "EUR", "weight": 0.333},
        ]
    },
}
LAYOUT = {
    "columns": [
        {"field": "ticker", "label": "Instrument"},
        {"field": "mv", "label": "Market value", "format": "currency", "currency_field": "ccy", "total": True},
    ],
    "headline": [{"label": "NAV", "path": "meta.nav", "format": "currency", "currency": "EUR"}],
}
SAMPLE = reverse("admin:reporting_report_design_sample")
PREVIEW = reverse("admin:reporting_report_design_preview")


@pytest.fixture
def source(httpserver):
    httpserver.expect_request("/api/holdings").respond_with_json(ANSWER)
    return factories.data_source(httpserver.url_for("/api/"))


def draft(source, **overrides) -> dict:
    return report_form(source, **{"path": "holdings", "records_path": "result.holdings", **overrides})


def test_a_sample_offers_the_lists_of_rows_fields_numbers_and_a_suggested_layout(admin_client, source):
    answer = admin_client.post(SAMPLE, draft(source, records_path="")).json()
    assert answer["lists"] == [{"path": "result.holdings", "rows": 2}]
    assert answer["row_count"] is None  # the whole answer is no list of rows

    answer = admin_client.post(SAMPLE, draft(source)).json()
    assert answer["row_count"] == 2
    assert [entry["field"] for entry in answer["fields"]] == ["ticker", "mv", "ccy", "weight"]
    assert {"path": "meta.nav", "value": "1500.5"} in answer["numbers"]
    assert answer["rows"][1]["ticker"] == "<b>BOLD</b>"  # as text: the page shows it with textContent
    mv = next(column for column in answer["suggested"]["columns"] if column["field"] == "mv")
    assert mv == {"field": "mv", "label": "Mv", "format": "currency", "currency_field": "ccy", "total": True}


def test_the_live_preview_renders_the_unsaved_form_and_saves_sends_and_archives_nothing(
    admin_client, source, mailoutbox
):
    before = Report.objects.count()
    answer = admin_client.post(
        PREVIEW, draft(source, layout=json.dumps(LAYOUT), locale="de-DE", subject_template="Bestand {{ period.label }}")
    ).json()
    assert answer["subject"].startswith("Bestand ")
    html = answer["html"].replace("\xa0", " ")
    assert ">Instrument</th>" in html and ">Market value</th>" in html
    assert "1.000,50 €" in html and "1.500,50 €" in html  # a row; the total and the NAV headline, in German
    assert "&lt;b&gt;BOLD&lt;/b&gt;" in html and "<b>BOLD" not in html
    assert 'http-equiv="Content-Security-Policy"' in html  # the frame's own policy
    assert Report.objects.count() == before and not ReportRun.objects.exists() and not mailoutbox


def test_the_preview_of_a_saved_report_uses_the_form_not_what_is_stored(admin_client, source):
    report = factories.report(source, template="reports/table.html", path="holdings", records_path="result.holdings")
    form = draft(source, layout=json.dumps(LAYOUT), _design_report=str(report.pk), slug=report.slug)
    answer = admin_client.post(PREVIEW, form).json()
    assert ">Market value</th>" in answer["html"]
    report.refresh_from_db()
    assert report.layout == {}  # not saved


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"layout": json.dumps({"columns": [{"field": "mv", "format": "money"}]})}, "'money' is not one of"),
        ({"layout": "{not json"}, "Layout"),
        ({"data_source": ""}, "Data source"),
        ({"path": "{% bad %}"}, "Path"),
        ({"records_path": "nowhere"}, "The records path 'nowhere' was not found"),
        ({"_design_day": "2026-13-45"}, "is not a day"),
        ({"subject_template": "{{ nope }}"}, "'nope'"),
    ],
)
def test_what_stops_a_preview_is_said_in_words(admin_client, source, overrides, words):
    response = admin_client.post(PREVIEW, draft(source, **overrides))
    assert response.status_code == 400
    assert words in " ".join(response.json()["errors"])


def test_a_data_source_that_fails_says_so_and_what_was_asked(admin_client, httpserver):
    httpserver.expect_request("/api/holdings").respond_with_data("down", status=503)
    source = factories.data_source(httpserver.url_for("/api/"))
    response = admin_client.post(SAMPLE, draft(source))
    assert response.status_code == 400
    assert "unavailable right now (HTTP 503" in response.json()["errors"][0]
    assert response.json()["request_url"].endswith("/api/holdings")


def test_a_per_recipient_draft_is_previewed_as_the_first_recipient_of_its_lists(admin_client, httpserver):
    rows = [{"client_id": "C1", "mv": 10, "ccy": "EUR"}, {"client_id": "C2", "mv": 99, "ccy": "EUR"}]
    httpserver.expect_request("/api/holdings").respond_with_json({"result": {"holdings": rows}})
    source = factories.data_source(httpserver.url_for("/api/"))
    clients = RecipientList.objects.create(name="Clients")
    clients.recipients.add(
        Recipient.objects.create(email="zed@example.com", attributes={"client_id": "C2"}),
        Recipient.objects.create(email="amy@example.com", attributes={"client_id": "C1"}),
    )
    form = draft(
        source,
        audience="each",
        split_field="client_id",
        split_attribute="client_id",
        recipient_lists=[str(clients.pk)],
        recipient_addresses="",
        layout=json.dumps({"columns": [{"field": "mv", "format": "currency", "currency_field": "ccy", "total": True}]}),
    )
    answer = admin_client.post(PREVIEW, form).json()
    assert answer["recipient"].endswith("amy@example.com>") or "amy@example.com" in answer["recipient"]
    assert "€10.00" in answer["html"] and "€99.00" not in answer["html"]  # only Amy's rows


def test_who_may_use_the_designer(client, django_user_model, source):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_report"))
    client.force_login(viewer)
    assert client.post(SAMPLE, draft(source)).status_code == 403
    assert client.post(PREVIEW, draft(source)).status_code == 403
    editor = django_user_model.objects.create_user("editor", password="pw", is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(codename__in=["view_report", "add_report", "change_report"]))
    client.force_login(editor)
    assert client.post(SAMPLE, draft(source)).status_code == 200
    assert client.get(SAMPLE).status_code == 405  # only a posted form


def test_the_form_saves_the_layout_and_locale_and_refuses_a_bad_layout_in_words(admin_client, source):
    response = admin_client.post(
        reverse("admin:reporting_report_add"), draft(source, layout=json.dumps(LAYOUT), locale="fr-FR")
    )
    assert response.status_code == 302, response.content[:2000]
    report = Report.objects.get(slug="collections")
    assert report.layout == LAYOUT and report.locale == "fr-FR"

    bad = {"columns": [{"field": "mv", "format": "currency"}]}
    response = admin_client.post(
        reverse("admin:reporting_report_change", args=[report.pk]), draft(source, layout=json.dumps(bad))
    )
    assert response.status_code == 200
    assert "say which currency: a code (e.g. EUR) or the field that holds it" in response.content.decode()
    report.refresh_from_db()
    assert report.layout == LAYOUT  # nothing lost


def test_a_form_without_the_new_fields_keeps_the_reports_locale_and_layout(admin_client, source):
    report = factories.report(source, slug="collections", layout=LAYOUT, locale="de-DE")
    form = {key: value for key, value in draft(source).items() if key not in ("layout", "locale")}
    response = admin_client.post(reverse("admin:reporting_report_change", args=[report.pk]), form)
    assert response.status_code == 302
    report.refresh_from_db()
    assert report.locale == "de-DE" and report.layout == LAYOUT
