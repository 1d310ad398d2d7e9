"""The report's query parameters are rows of name and value on the form, not JSON typed into a box."""

from __future__ import annotations

import pytest
from django.urls import reverse

from reporting.models import Report
from tests import factories
from tests.test_admin import report_form
from tests.test_chart_fields import change_page, field_value

pytestmark = pytest.mark.django_db


def param_rows(*pairs: tuple[str, str], count: int | None = None) -> dict[str, str]:
    data = {"query_params-count": str(len(pairs) if count is None else count)}
    for index, (name, value) in enumerate(pairs):
        data[f"query_params-{index}-name"], data[f"query_params-{index}-value"] = name, value
    return data


@pytest.fixture
def source():
    return factories.data_source("http://127.0.0.1:1/api/")


def test_the_rows_sent_are_saved_as_the_parameters_in_their_order(staff_client, source):
    rows = param_rows(("from", "{{ period.start|date:'Y-m-d' }}"), ("", "ignored"), (" currency ", "EUR & GBP"))
    response = staff_client.post(reverse("admin:reporting_report_add"), report_form(source, **rows))
    assert response.status_code == 302, response.context["adminform"].form.errors
    params = Report.objects.get(slug="collections").query_params
    assert params == {"from": "{{ period.start|date:'Y-m-d' }}", "currency": "EUR & GBP"}
    assert list(params) == ["from", "currency"]


def test_the_page_shows_each_parameter_as_a_row_with_room_for_more(staff_client, source):
    report = factories.report(source, query_params={"from": "{{ period.start|date:'Y-m-d' }}", "limit": 500})
    html = change_page(staff_client, report)
    assert field_value(html, "id_query_params-0-name") == "from"
    assert field_value(html, "id_query_params-0-value") == "{{ period.start|date:&#x27;Y-m-d&#x27; }}"
    assert field_value(html, "id_query_params-1-value") == "500"  # a number, as the text it is sent as
    assert field_value(html, "id_query_params-3-name") == ""  # empty rows to fill
    assert 'name="query_params-count" value="4"' in html


def test_json_text_is_still_understood_and_a_bad_value_is_refused_in_words(staff_client, source):
    response = staff_client.post(reverse("admin:reporting_report_add"), report_form(source, query_params='{"a": "1"}'))
    assert response.status_code == 302
    assert Report.objects.get(slug="collections").query_params == {"a": "1"}

    rows = param_rows(("to", "{% now %}"))
    response = staff_client.post(
        reverse("admin:reporting_report_change", args=[Report.objects.get().pk]), report_form(source, **rows)
    )
    assert response.status_code == 200
    assert "query parameter" in str(response.context["adminform"].form.errors["query_params"]).lower()
    assert Report.objects.get().query_params == {"a": "1"}  # nothing lost


def test_clearing_every_row_leaves_no_parameters(staff_client, source):
    report = factories.report(source, query_params={"a": "1"})
    data = report_form(source, slug=report.slug, **param_rows(("", ""), count=1))
    response = staff_client.post(reverse("admin:reporting_report_change", args=[report.pk]), data)
    assert response.status_code == 302
    report.refresh_from_db()
    assert report.query_params == {}
