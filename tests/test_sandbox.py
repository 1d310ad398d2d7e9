"""Staff templates run in a sandbox: they see plain data only, use a fixed set of tags and
filters, include only the shipped layouts, and are bounded in output and time.

The leak tests run the real pipeline (a real HTTP server on loopback for the data source,
the real database, Django's email outbox): each trick is typed where staff can type it —
the path, a query parameter, the subject — or put in a body layout, and nothing a run
stores, sends or asks the data source for may hold a password hash, another report's data
or archived email, a setting or an environment variable.
"""

from __future__ import annotations

import copy
import re
import time
from datetime import UTC, date, datetime
from urllib.parse import quote

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core import mail

from reporting import runs
from reporting.models import Report, ReportRun
from reporting.periods import DAILY, Period
from reporting.pipeline.render import RenderError, RenderRequest, render, render_string
from tests import factories

DAY = Period(DAILY, date(2026, 11, 20), date(2026, 11, 20))
SECRET_KEY = "sandbox-test-secret-key-4f1c9e"
ENV_SECRET = "sandbox-env-secret-83b2d7"
OTHER_NAME = "Other-report-name-5d0e"
OTHER_ARCHIVED = "Other-archived-email-b71a"

TRICKS = [
    "{{ report.owner.password }}",
    "{{ report.owner }}",
    "{{ report.data_source.reports.all }}",
    "{{ report.runs.all.0.body_html }}",
    "{% for r in report.data_source.reports.all %}{% for x in r.runs.all %}{{ x.body_html }}{% endfor %}{% endfor %}",
    "{% debug %}",
    "{% load log %}{% get_admin_log 10 as log %}{% for e in log %}{{ e.user.password }}{% endfor %}",
    "{% get_admin_log 10 as log %}",
    '{% include "../project/settings.py" %}',
    '{% include "reports/../../project/settings.py" %}',
    '{% include "/proc/self/environ" %}',
    '{% include "project/settings.py" %}',
    '{% include "admin/base.html" %}',
    '{% extends "admin/base.html" %}',
    "{{ settings.SECRET_KEY }}",
    "{{ settings.DATABASES }}",
    '{% now "Y" %}',
    "{% url 'admin:index' %}",
    "{{ period.__class__ }}",
    "{{ data.__class__.__mro__ }}",
    "{{ period.start.__class__.__init__.__globals__ }}",
    "{{ report.name.format }}",
    "{{ report.items }}",
]
PLACES = ["path", "query", "subject", "body"]


@pytest.fixture
def world(settings, monkeypatch, tmp_path, httpserver):
    """A report owned by a user who is in the admin log, beside another report with an archived run."""
    settings.SECRET_KEY = SECRET_KEY
    monkeypatch.setenv("REPORTING_SANDBOX_TEST_TOKEN", ENV_SECRET)
    folder = tmp_path / "templates"
    (folder / "reports").mkdir(parents=True)
    settings.TEMPLATES = [{**engine, "DIRS": [folder, *engine["DIRS"]]} for engine in settings.TEMPLATES]
    httpserver.expect_request(re.compile("/api/.*")).respond_with_json(factories.POSITIONS)
    source = factories.data_source(httpserver.url_for("/api/"))
    owner = _owner_in_the_admin_log()
    other = factories.report(source, name=OTHER_NAME, slug="other")
    ReportRun.objects.filter(pk=_manual_run(other).pk).update(body_html=OTHER_ARCHIVED, subject=OTHER_ARCHIVED)
    report = factories.report(source, owner=owner)
    return {"report": report, "folder": folder, "httpserver": httpserver, "owner": owner}


def _owner_in_the_admin_log():
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.create_user("owner", "owner@example.com", "owner-password", is_staff=True)
    LogEntry.objects.create(
        user=owner, content_type=ContentType.objects.get_for_model(Report), object_repr="x", action_flag=ADDITION
    )
    return owner


def _manual_run(report: Report) -> ReportRun:
    return runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)


def _place(world: dict, place: str, trick: str) -> None:
    report = world["report"]
    if place == "path":
        report.path = f"positions/{trick}"
    elif place == "query":
        report.query_params = {"q": trick}
    elif place == "subject":
        report.subject_template = f"Portfolio {trick}"
    else:
        (world["folder"] / "reports" / "trick.html").write_text(f"<p>{trick}</p>", encoding="utf-8")
        report.template = "reports/trick.html"
    Report.objects.filter(pk=report.pk).update(
        path=report.path,
        query_params=report.query_params,
        subject_template=report.subject_template,
        template=report.template,
    )


def _secrets(world: dict) -> list[str]:
    from django.conf import settings

    password = world["owner"].password
    salt = password.split("$")[-2]
    values = [password, quote(password, safe=""), salt, SECRET_KEY, ENV_SECRET, OTHER_NAME, OTHER_ARCHIVED]
    return [*values, str(settings.DATABASES["default"]["NAME"])]


def _everything_the_run_left(run: ReportRun, httpserver) -> str:
    """What the run stored, what it sent and what it asked the data source for, as one text."""
    run.refresh_from_db()
    stored = [run.request_url, run.subject, run.body_html, run.body_text, run.error, run.error_detail]
    sent = [part for message in mail.outbox for part in (message.subject, message.body, *message.alternatives)]
    asked = [request.full_path for request, _response in httpserver.log]
    return "\n".join(str(each) for each in (*stored, *sent, *asked))


@pytest.mark.django_db
@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("trick", TRICKS)
def test_no_staff_template_reaches_a_password_another_report_a_setting_or_the_environment(world, place, trick):
    _place(world, place, trick)
    mail.outbox = []

    run = runs.execute_run(run_id=_manual_run(world["report"]).pk)

    left = _everything_the_run_left(run, world["httpserver"])
    for secret in _secrets(world):
        assert secret not in left, f"{secret!r} reached the run through {place}: {trick}"
    assert run.status in (ReportRun.Status.SENT, ReportRun.Status.FAILED)
    assert "Traceback" not in run.error


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("trick", "words"),
    [
        ("{{ report.owner.password }}", "The path refers to 'report.owner.password', not found in the data or the"),
        ("{% debug %}", "'debug' is not a tag report templates may use"),
        ("{% load log %}", "{% load log %}: report templates cannot load tag libraries"),
        ('{% include "project/settings.py" %}', "which is not one of the layouts under reporting/email/ or reports/"),
        ('{% include "../project/settings.py" %}', "takes a layout's full name under reporting/email/ or reports/"),
        ("{{ period.__class__ }}", "Variables and attributes may not begin with underscores"),
        ('{% now "Y" %}', "'now' is not a tag report templates may use"),
    ],
)
def test_a_path_reaching_past_its_data_fails_the_run_in_words(world, trick, words):
    _place(world, "path", trick)

    run = runs.execute_run(run_id=_manual_run(world["report"]).pk)

    assert run.status == ReportRun.Status.FAILED
    assert words in run.error
    assert not [request for request, _ in world["httpserver"].log if "positions" in request.path]  # nothing asked


# --- plain data: what templates see, and that they cannot change it ------------------------------


def _request(**fields) -> RenderRequest:
    rows = fields.pop("rows", [{"name": "Alpha", "value": 1}, {"name": "Beta", "value": 2}])
    return RenderRequest(
        template_name=fields.pop("template_name", "reports/table.html"),
        subject_template=fields.pop("subject_template", "{{ report.name }}"),
        report={"name": "Positions", "slug": "positions", "description": ""},
        period=DAY,
        data={"rows": rows, "meta": {"as_of": "2026-11-20"}},
        rows=rows,
        generated_at=datetime(2026, 11, 21, 7, 0, tzinfo=UTC),
        **fields,
    )


def test_templates_see_the_period_as_plain_values():
    email = render(
        _request(
            subject_template="{{ period.kind }} {{ period.label }} {{ period.start|date:'Y-m-d' }} "
            "{{ period.end.year }} {{ period.key }}"
        )
    )

    assert email.subject == "daily 20 November 2026 2026-11-20 2026 2026-11-20..2026-11-20"


@pytest.mark.parametrize(
    "subject",
    ["{{ rows.clear }}", "{{ rows.pop }}", "{{ rows.reverse }}", "{{ data.clear }}", "{{ data.popitem }}"],
)
def test_a_template_cannot_change_the_data_it_is_given(subject):
    request = _request(subject_template=subject)
    data_before = copy.deepcopy(request.data)

    with pytest.raises(RenderError) as caught:
        render(request)

    assert "not found in the data or the report" in caught.value.message
    assert request.data == data_before and request.rows == data_before["rows"]


def test_a_template_may_read_a_dicts_items_keys_and_values():
    subject = "{% for key, value in data.meta.items %}{{ key }}={{ value }}{% endfor %} {{ data.meta.keys|join:',' }}"

    assert render(_request(subject_template=subject)).subject == "as_of=2026-11-20 as_of"


def test_regroup_still_works_on_plain_data():
    subject = (
        "{% regroup rows|dictsort:'name' by name as groups %}"
        "{% for g in groups %}{{ g.grouper }}:{{ g.list|length }} {% endfor %}"
    )

    assert render(_request(subject_template=subject)).subject == "Alpha:1 Beta:1"


# --- bounds: output size and time, with words ----------------------------------------------------

TEN = '"0123456789"'


@pytest.mark.parametrize(
    ("subject", "words"),
    [
        ("{% lorem 100000 w %}", "{% lorem %} may write at most 1,000 words or paragraphs, not 100,000."),
        ('{{ "x"|ljust:"1000000000" }}', "The filter 'ljust' may pad to at most 10,000 characters"),
        ('{{ "x"|center:"1000000000" }}', "The filter 'center' may pad to at most 10,000 characters"),
        ('{{ 1|stringformat:"01000000000d" }}', "The filter 'stringformat' may pad to at most 10,000 characters"),
        ('{{ 1|floatformat:"-1000000" }}', "The filter 'floatformat' may show at most 50 decimal places"),
        (
            "{% with a='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' %}"
            + "{% with a=a|add:a %}" * 24
            + "{{ a|length }}"
            + "{% endwith %}" * 25,
            "The subject template's output is larger than 5 MB",
        ),
        (
            f"{{% with l={TEN}|make_list %}}{{% with a=l|join:{TEN} %}}"
            + "".join(f"{{% with {after}=l|join:{before} %}}" for before, after in zip("abcde", "bcdef", strict=True))
            + "{{ f|length }}"
            + "{% endwith %}" * 7,
            "The subject template's output is larger than 5 MB",
        ),
    ],
    ids=["lorem", "ljust", "center", "stringformat", "floatformat", "doubling with add", "join"],
)
def test_a_template_that_would_explode_its_output_fails_in_words(subject, words):
    started = time.monotonic()

    with pytest.raises(RenderError) as caught:
        render(_request(subject_template=subject))

    assert words in caught.value.message
    assert time.monotonic() - started < 2


def test_a_loop_that_writes_too_much_fails_in_words_before_it_is_written(tmp_path, settings):
    folder = tmp_path / "templates"
    (folder / "reports").mkdir(parents=True)
    loops = "".join(f"{{% for x{level} in {TEN} %}}" for level in range(4))
    (folder / "reports" / "big.html").write_text(loops + "{% lorem 1000 w %}" + "{% endfor %}" * 4)
    settings.TEMPLATES = [{**engine, "DIRS": [folder, *engine["DIRS"]]} for engine in settings.TEMPLATES]

    with pytest.raises(RenderError) as caught:
        render(_request(template_name="reports/big.html"))

    assert caught.value.message.startswith("The body template's output is larger than 5 MB")


def test_a_loop_that_runs_too_long_fails_in_words_after_two_seconds():
    loops = "".join(f"{{% for x{level} in {TEN} %}}" for level in range(9))
    started = time.monotonic()

    with pytest.raises(RenderError) as caught:
        render_string(loops + "{% if x8 == '1' %}{% endif %}" + "{% endfor %}" * 9, {}, what="path")

    assert caught.value.message.startswith("The path took longer than 2 s to render")
    assert 2 <= time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{% csrf_token %}", "'csrf_token' is not a tag report templates may use"),
        ("{% querystring %}", "'querystring' is not a tag report templates may use"),
        ("{{ rows|pprint }}", "Invalid filter: 'pprint' is not a filter report templates may use."),
        ("{{ report.name|safe }}", "Invalid filter: 'safe' is not a filter report templates may use."),
        ("{{ rows|random }}", "Invalid filter: 'random' is not a filter report templates may use."),
    ],
)
def test_tags_and_filters_outside_the_fixed_set_are_refused_in_words(template, words):
    with pytest.raises(RenderError) as caught:
        render_string(template, {"rows": [1], "report": {"name": "x"}}, what="path")

    assert words in caught.value.message


def test_the_shipped_layouts_can_still_be_included_and_extended():
    rendered = render_string(
        '{% include "reporting/email/_figure.html" with label="Total" amount=12.5 %}', {}, what="subject template"
    )

    assert "Total" in rendered and "12.50" in rendered
