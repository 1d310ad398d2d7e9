"""Failure alerts: the owner (or ADMINS) is told once, in a digest, throttled."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from reporting import alerts, runs
from reporting.models import Alert, Report, ReportRun
from tests import factories

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 24, 7, 30, tzinfo=UTC)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("olga", "olga@example.com", "pw", is_staff=True)


def failed_run(report: Report, *, error: str = "The data source is unavailable right now (HTTP 503).", **fields):
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    values = {"status": ReportRun.Status.FAILED, "error": error, "created_at": NOW - timedelta(minutes=5), **fields}
    ReportRun.objects.filter(pk=run.pk).update(**values)
    return ReportRun.objects.get(pk=run.pk)


def reports_of(owner, count: int, source) -> list[Report]:
    return [factories.report(source, slug=f"report-{n}", name=f"Report {n}", owner=owner) for n in range(count)]


def test_an_api_outage_across_fifty_reports_sends_their_owner_one_email(owner, source):
    failed = [failed_run(report) for report in reports_of(owner, 50, source)]

    sent = alerts.send_failure_alerts(now=NOW)

    assert sent == 1
    [email] = mail.outbox
    assert email.to == ["olga@example.com"]
    assert email.subject == "[Scheduled Reports] 50 report runs need attention (50 reports)"
    assert email.body.count("The data source is unavailable right now (HTTP 503).") == 50
    for run in failed:
        assert f"http://127.0.0.1:8000/admin/reporting/reportrun/{run.pk}/change/" in email.body
    assert "<strong>Report 49</strong> failed:" in email.alternatives[0][0]
    assert ReportRun.objects.filter(alerted_at=NOW).count() == 50
    assert list(Alert.objects.get().runs.order_by("pk")) == sorted(failed, key=lambda run: run.pk)


def test_a_run_is_alerted_once(owner, source):
    [report] = reports_of(owner, 1, source)
    failed_run(report)

    alerts.send_failure_alerts(now=NOW)
    alerts.send_failure_alerts(now=NOW + timedelta(hours=1))

    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject.startswith("[Scheduled Reports] Report 0 failed: ")


def test_more_failures_within_the_interval_wait_for_the_next_digest(owner, source):
    first, second, third = reports_of(owner, 3, source)
    failed_run(first)
    alerts.send_failure_alerts(now=NOW)
    failed_run(second)
    failed_run(third)

    assert alerts.send_failure_alerts(now=NOW + timedelta(minutes=10)) == 0  # throttled: 15 minutes
    assert alerts.send_failure_alerts(now=NOW + timedelta(minutes=16)) == 1

    assert len(mail.outbox) == 2
    assert "2 report runs need attention" in mail.outbox[1].subject
    assert "Report 1 failed" in mail.outbox[1].body and "Report 2 failed" in mail.outbox[1].body


def test_held_and_missed_runs_are_alerted_in_words_and_test_sends_are_not(owner, source):
    held, missed, test_send = reports_of(owner, 3, source)
    failed_run(held, status=ReportRun.Status.HELD, error="The data has 0 rows; this report needs at least 1.")
    failed_run(missed, status=ReportRun.Status.MISSED, error="Missed: the run for 23 Nov 07:00 did not happen.")
    failed_run(test_send, trigger=ReportRun.Trigger.TEST)

    alerts.send_failure_alerts(now=NOW)

    [email] = mail.outbox
    assert "Report 0 was held back" in email.body and "The data has 0 rows" in email.body
    assert "Report 1 was missed" in email.body
    assert "Report 2" not in email.body


def test_a_report_without_an_owner_alerts_the_admins_in_one_email(settings, source):
    settings.ADMINS = [("Ops", "ops@example.com"), ("", "cfo@example.com")]
    report = factories.report(source)
    failed_run(report)

    alerts.send_failure_alerts(now=NOW)

    [email] = mail.outbox
    assert sorted(email.to) == ["cfo@example.com", "ops@example.com"]
    assert sorted(Alert.objects.values_list("address", flat=True)) == ["cfo@example.com", "ops@example.com"]


def test_nobody_to_tell_is_logged_once_and_not_retried(settings, source, caplog):
    settings.ADMINS = []
    run = failed_run(factories.report(source))

    alerts.send_failure_alerts(now=NOW)
    alerts.send_failure_alerts(now=NOW + timedelta(minutes=1))

    assert mail.outbox == []
    assert caplog.text.count("ADMINS is empty") == 1
    assert ReportRun.objects.get(pk=run.pk).alerted_at == NOW


def test_a_failed_send_keeps_the_runs_for_the_next_sweep(owner, source, settings, use_smtp):
    [report] = reports_of(owner, 1, source)
    run = failed_run(report)
    use_smtp.stop()

    with pytest.raises(OSError):
        alerts.send_failure_alerts(now=NOW)
    assert ReportRun.objects.get(pk=run.pk).alerted_at is None
    assert not Alert.objects.exists()


def test_old_failures_are_history_not_news(owner, source):
    [report] = reports_of(owner, 1, source)
    failed_run(report, created_at=timezone.now() - timedelta(days=30))

    assert alerts.send_failure_alerts() == 0
