"""Reports as code: export_reports and import_reports round-trip the definitions, idempotently, in words."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO

import pytest
import yaml
from auditlog.models import LogEntry
from django.core.management import CommandError, call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from reporting import schedules
from reporting.demo.setup import install_demo
from reporting.models import AuditEvent, DataSource, Destination, Recipient, RecipientList, Report
from reporting.schedules import RUN_TASK
from tests import factories

pytestmark = pytest.mark.django_db
LAYOUT = {
    "columns": [
        {"field": "instrument", "label": "Instrument"},
        {"field": "market_value", "label": "Market value", "format": "currency", "currency": "EUR", "total": True},
    ],
    "headline": [{"label": "NAV", "path": "summary.total_value", "format": "currency", "currency": "EUR"}],
}


@pytest.fixture
def definitions(settings, monkeypatch):
    """The demo, a report with a designed layout and every kind of field set, a destination, a secret."""
    settings.REPORTING = {**settings.REPORTING, "SENDER_DOMAINS": ["example.com"]}
    monkeypatch.setenv("REPORTING_SECRET_LEDGER_TOKEN", "tok-3f9a-very-secret")
    monkeypatch.setenv("REPORTING_SECRET_LEDGER_SIGNING", "sig-77c1-very-secret")
    demo = install_demo(base_url="http://127.0.0.1:8000/demo-api/", password="pw")
    source = factories.data_source(
        "http://127.0.0.1:9000/api/",
        name="Ledger API",
        auth_scheme=DataSource.AuthScheme.HEADER,
        auth_header_name="X-API-Key",
        secret_env_var="REPORTING_SECRET_LEDGER_TOKEN",
        read_timeout=12.5,
        drop_fields="session_token",
    )
    hook = Destination.objects.create(
        name="Ledger hook",
        kind=Destination.Kind.WEBHOOK,
        secret_env_var="REPORTING_SECRET_LEDGER_TOKEN",
        signing_secret_env_var="REPORTING_SECRET_LEDGER_SIGNING",
    )
    designed = factories.report(
        source,
        slug="designed",
        name="Designed positions",
        owner=demo_user(),
        layout=LAYOUT,
        locale="de-DE",
        query_params={"date": "{{ period.end|date:'Y-m-d' }}"},
        charts=[{"kind": "bar", "x": "instrument", "y": "market_value", "title": "Value"}],
        send_only_if=Report.SendOnlyIf.THRESHOLD,
        threshold_figure="summary.total_value",
        threshold_value=Decimal("1000000.5"),
        check_max_age_field="as_of",
        check_max_age_hours=36,
        check_required_fields="instrument, market_value",
        from_name="Finance team",
        from_address="finance@example.com",
        reply_to="desk@example.com",
        attach_pdf=True,
    )
    designed.destinations.add(hook)
    factories.schedule(
        designed,
        minute="0",
        hour="18",
        day_of_month="26-31",
        day_of_week="mon-fri",
    )
    Report.objects.filter(pk=designed.pk).update(schedule_rule=schedules.LAST_BUSINESS_DAY)
    Recipient.objects.filter(email="ann@example.com").update(name="Ann", attributes={"desk": "rates"})
    factories.report(source, slug="by-hand", name="By hand only", addresses=["bob@example.com"], enabled=False)
    return demo


def demo_user():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="demo")


def export(*args: str) -> str:
    out = StringIO()
    call_command("export_reports", *args, stdout=out)
    return out.getvalue()


def import_file(tmp_path, text: str, *args: str, name: str = "reports.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    out = StringIO()
    call_command("import_reports", str(path), *args, stdout=out)
    return out.getvalue()


def empty_the_database() -> None:
    """Every definition gone (the users stay: owners are referred to, not imported)."""
    Report.objects.all().delete()
    PeriodicTask.objects.filter(task=RUN_TASK).delete()
    CrontabSchedule.objects.exclude(periodictask__isnull=False).delete()
    for model in (DataSource, Destination, RecipientList, Recipient):
        model.objects.all().delete()


def counts() -> dict[str, int]:
    models = (Report, DataSource, Destination, Recipient, RecipientList, AuditEvent, PeriodicTask, LogEntry)
    return {model.__name__: model.objects.count() for model in models}


@pytest.mark.parametrize("file_format", ["yaml", "json"])
def test_an_export_imported_into_an_empty_database_exports_as_the_same_text(definitions, tmp_path, file_format):
    first = export("--format", file_format)
    empty_the_database()

    output = import_file(tmp_path, first, name=f"reports.{file_format}")

    assert "24 created, 0 changed, 0 unchanged." in output  # 2 sources, 12 recipients, 3 lists, 1 hook, 6 reports
    assert export("--format", file_format) == first
    designed = Report.objects.get(slug="designed")
    assert designed.layout == LAYOUT and designed.schedule_rule == schedules.LAST_BUSINESS_DAY
    assert designed.threshold_value == Decimal("1000000.5") and designed.owner.username == "demo"
    assert list(designed.destinations.values_list("name", flat=True)) == ["Ledger hook"]
    statement = Report.objects.get(slug="client-statement")
    assert statement.audience == Report.Audience.EACH
    assert Recipient.objects.get(email="harriet.ashdown@example.com").attributes["client_id"] == "C001"


def test_the_export_is_sorted_and_refers_by_natural_keys(definitions):
    document = yaml.safe_load(export())

    assert [report["slug"] for report in document["reports"]] == sorted(r["slug"] for r in document["reports"])
    emails = [recipient["email"] for recipient in document["recipients"]]
    assert emails == sorted(emails)
    designed = next(report for report in document["reports"] if report["slug"] == "designed")
    assert designed["data_source"] == "Ledger API" and designed["owner"] == "demo"
    assert designed["recipients"] == ["ann@example.com", "bob@example.com"]
    assert designed["threshold_value"] == "1000000.5"
    assert designed["schedule"] == {
        "minute": "0",
        "hour": "18",
        "day_of_month": "26-31",
        "month_of_year": "*",
        "day_of_week": "mon-fri",
        "timezone": "Europe/London",
        "rule": "last_business_day",
    }
    assert next(report for report in document["reports"] if report["slug"] == "by-hand")["schedule"] is None
    assert "id" not in designed and "pk" not in json.dumps(document)


def test_the_export_names_secret_variables_and_never_holds_a_secret(definitions):
    for file_format in ("yaml", "json"):
        text = export("--format", file_format)
        assert "REPORTING_SECRET_LEDGER_TOKEN" in text and "REPORTING_SECRET_LEDGER_SIGNING" in text
        assert "very-secret" not in text and "tok-3f9a" not in text and "sig-77c1" not in text


def test_export_of_chosen_reports_holds_only_what_they_refer_to(definitions):
    document = yaml.safe_load(export("--report", "designed"))

    assert [report["slug"] for report in document["reports"]] == ["designed"]
    assert [source["name"] for source in document["data_sources"]] == ["Ledger API"]
    assert [recipient["email"] for recipient in document["recipients"]] == ["ann@example.com", "bob@example.com"]
    assert document["recipient_lists"] == [] and [d["name"] for d in document["destinations"]] == ["Ledger hook"]
    with pytest.raises(CommandError, match="No report with the slug 'nope'"):
        export("--report", "nope")


def test_a_second_import_changes_nothing_and_records_nothing(definitions, tmp_path):
    text = export()
    before = counts()

    output = import_file(tmp_path, text)

    assert output.strip() == "0 created, 0 changed, 24 unchanged."
    assert counts() == before  # no audit event, no audit-log entry, no new task


def test_a_dry_run_prints_what_would_change_and_writes_nothing(definitions, tmp_path):
    text = export()
    empty_the_database()
    before = counts()

    output = import_file(tmp_path, text, "--dry-run")

    assert "report 'designed': created" in output
    assert output.strip().endswith("Dry run, nothing written: 24 created, 0 changed, 0 unchanged.")
    assert counts() == before


def test_a_changed_field_is_shown_before_and_after_then_imported_and_audited(definitions, tmp_path):
    document = yaml.safe_load(export())
    daily = next(report for report in document["reports"] if report["slug"] == "daily-portfolio-summary")
    daily["subject_template"] = "Daily — {{ period.label }}"
    daily["schedule"]["hour"] = "8"
    text = yaml.safe_dump(document)

    dry = import_file(tmp_path, text, "--dry-run")

    assert "report 'daily-portfolio-summary': changed" in dry
    assert '    subject_template: "Portfolio summary — {{ period.label }}" → "Daily — {{ period.label }}"' in dry
    assert '"hour": "7"' in dry and '"hour": "8"' in dry
    assert dry.strip().endswith("0 created, 1 changed, 23 unchanged.")
    assert Report.objects.get(slug="daily-portfolio-summary").subject_template.startswith("Portfolio")

    done = import_file(tmp_path, text)

    daily_report = Report.objects.get(slug="daily-portfolio-summary")
    assert daily_report.subject_template == "Daily — {{ period.label }}"
    assert daily_report.periodic_task.crontab.hour == "8"
    event = AuditEvent.objects.filter(report=daily_report).first()
    assert (event.actor_name, event.action) == ("import_reports", AuditEvent.Action.CHANGED)
    assert event.changes["subject_template"] == ["Portfolio summary — {{ period.label }}", "Daily — {{ period.label }}"]
    assert done.strip().endswith("0 created, 1 changed, 23 unchanged.")
    assert import_file(tmp_path, text).strip() == "0 created, 0 changed, 24 unchanged."


def _break(document: dict, how: str) -> None:
    designed = next(report for report in document["reports"] if report["slug"] == "designed")
    if how == "unknown field":
        designed["colour"] = "blue"
    elif how == "bad cron":
        designed["schedule"]["hour"] = "25"
    elif how == "secret value":
        document["data_sources"][1]["secret_env_var"] = "tok-3f9a-very-secret"
    elif how == "missing data source":
        designed["data_source"] = "Nowhere API"
    elif how == "bad layout":
        designed["layout"] = {"columns": [{"field": "x", "format": "sparkles"}]}
    elif how == "unknown section":
        document["report"] = []


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("unknown field", "report 'designed': unknown field 'colour'."),
        ("bad cron", "report 'designed', field schedule.hour: Hour (0-23): '25' is not valid here"),
        ("secret value", "data source 'Ledger API', field secret_env_var: must be the NAME of an environment variable"),
        ("missing data source", "report 'designed', field data_source: There is no data source 'Nowhere API'"),
        ("bad layout", "report 'designed', field layout:"),
        ("unknown section", "Unknown section 'report' (did you mean 'reports'?)"),
    ],
)
def test_an_invalid_file_is_refused_in_words_with_nothing_written(definitions, tmp_path, how, words):
    document = yaml.safe_load(export())
    document["recipients"].append({"email": "new@example.com", "name": "New"})  # valid, and not written either
    _break(document, how)
    empty_the_database()
    before = counts()

    with pytest.raises(CommandError) as refused:
        import_file(tmp_path, yaml.safe_dump(document))

    assert "was not imported, nothing was written" in str(refused.value)
    assert words in str(refused.value)
    assert "very-secret" not in str(refused.value)
    assert counts() == before


def test_a_report_is_checked_as_its_admin_form_checks_it(definitions, tmp_path):
    document = yaml.safe_load(export())
    designed = next(report for report in document["reports"] if report["slug"] == "designed")
    designed["from_address"] = "boss@elsewhere.test"
    designed["check_max_age_hours"] = None  # its field is still set: the form wants both
    designed["audience"] = "each"  # and destinations are refused for a per-recipient report

    with pytest.raises(CommandError) as refused:
        import_file(tmp_path, yaml.safe_dump(document))

    message = str(refused.value)
    assert "report 'designed', field from_address:" in message
    assert "report 'designed', field check_max_age_hours: Give the maximum age in hours" in message
    assert "report 'designed', field destinations: A report that sends each recipient their own report" in message


def test_every_field_staff_edit_is_in_the_export(definitions):
    exported = yaml.safe_load(export())
    editable = {
        "reports": Report,
        "data_sources": DataSource,
        "recipients": Recipient,
        "destinations": Destination,
        "recipient_lists": RecipientList,
    }
    for section, model in editable.items():
        names = {field.name for field in model._meta.get_fields() if getattr(field, "editable", False)}
        names -= {"id", "created_at", "updated_at"}
        keys = set(exported[section][0])
        assert names - keys <= {"recipients"}, section  # a list's recipients are its "members"


def test_yaml_aliases_and_values_yaml_reads_as_dates_are_refused_in_words(definitions, tmp_path):
    before = counts()
    laughs = "a: &a [x, x]\nb: &b [*a, *a]\nreports: [*b]\n"
    with pytest.raises(CommandError, match=r"not valid YAML: aliases \(\*name\) are not allowed here"):
        import_file(tmp_path, laughs)

    document = yaml.safe_load(export())
    document["reports"][0]["query_params"] = {"date": "2026-11-30"}
    text = yaml.safe_dump(document).replace("'2026-11-30'", "2026-11-30")  # unquoted: YAML reads a date
    with pytest.raises(CommandError, match="field query_params: holds a date, time or other value that is not text"):
        import_file(tmp_path, text)
    assert counts() == before


def test_a_hand_written_file_may_leave_out_what_keeps_its_default(definitions, tmp_path):
    minimal = """
data_sources:
  - name: Minimal API
    base_url: http://127.0.0.1:9000/
reports:
  - slug: minimal
    name: Minimal
    data_source: Minimal API
    template: reports/table.html
    owner: demo
    recipients: [Zoe@Example.com]
    schedule: {minute: 0, hour: 6, day_of_month: "*", month_of_year: "*", day_of_week: "mon-fri"}
"""
    output = import_file(tmp_path, minimal)

    assert output.strip().endswith("2 created, 0 changed, 0 unchanged.")
    report = Report.objects.get(slug="minimal")
    assert (report.timezone, report.check_min_rows, report.attach_csv) == ("UTC", 1, True)
    assert str(report.periodic_task.crontab.timezone) == "UTC" and report.periodic_task.crontab.hour == "6"
    assert list(report.recipients.values_list("email", flat=True)) == ["Zoe@Example.com"]  # new, as on the form
    assert import_file(tmp_path, minimal).strip().endswith("0 created, 0 changed, 2 unchanged.")
