"""Retention: old runs pruned with their files, files pruned sooner, legal holds kept."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from reporting import retention, runs
from reporting.models import AuditEvent, Delivery, ReportRun
from reporting.services import archive as services_archive

pytestmark = pytest.mark.django_db


def sent_run(report, *, days_ago: int) -> ReportRun:
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    ReportRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    run.refresh_from_db()
    return run


@pytest.fixture
def prune(django_capture_on_commit_callbacks):
    """prune_archive(), with the files it deletes after commit deleted (tests run inside a transaction)."""

    def run_once():
        with django_capture_on_commit_callbacks(execute=True):
            return retention.prune_archive()

    return run_once


def files_of(run: ReportRun) -> list[Path]:
    media = Path(django_settings.MEDIA_ROOT)
    return [media / run.data_snapshot.name, *(media / a.file.name for a in run.attachments.all())]


def test_a_run_older_than_the_retention_goes_with_its_deliveries_and_files(report, prune):
    old, recent = sent_run(report, days_ago=401), sent_run(report, days_ago=10)
    old_files = files_of(old)
    assert all(path.exists() for path in old_files)

    result = prune()

    assert result.runs_deleted == 1 and result.files_deleted == 2
    assert list(ReportRun.objects.all()) == [recent]
    assert not Delivery.objects.filter(run_id=old.pk).exists()
    assert not any(path.exists() for path in old_files)
    assert all(path.exists() for path in files_of(recent))


def test_after_the_file_retention_the_run_keeps_its_email_but_not_its_files(report, settings, prune):
    run = sent_run(report, days_ago=91)
    paths = files_of(run)

    result = prune()

    run.refresh_from_db()
    assert result.runs_stripped == 1 and result.runs_deleted == 0
    assert not run.data_snapshot and not any(path.exists() for path in paths)
    assert "Acme Corp" in run.body_html and run.deliveries.count() == 2
    assert "removed on" in run.notes and "90-day retention" in run.notes
    with pytest.raises(ValidationError, match="removed by the retention"):
        services_archive.plan_resend(run_ids=[run.pk], addresses=None)
    assert prune().runs_stripped == 0  # nothing left to strip


def test_a_run_on_legal_hold_is_never_pruned(report, prune):
    held = sent_run(report, days_ago=1000)
    ReportRun.objects.filter(pk=held.pk).update(legal_hold=True)

    assert prune() == retention.PruneResult(runs_deleted=0, runs_stripped=0, files_deleted=0)
    assert all(path.exists() for path in files_of(held))


def test_a_pruned_file_says_so_instead_of_failing(staff_client, report, prune):
    run = sent_run(report, days_ago=100)
    attachment = run.attachments.get()
    prune()

    response = staff_client.get(reverse("admin:reporting_reportrun_attachment", args=[run.pk, attachment.pk]))
    page = staff_client.get(reverse("admin:reporting_reportrun_change", args=[run.pk]))

    assert response.status_code == 404
    assert page.status_code == 200 and "90-day retention" in page.content.decode()


def test_legal_hold_is_set_by_whoever_has_the_permission_and_audited(staff_client, report):
    run = sent_run(report, days_ago=1)

    staff_client.post(
        reverse("admin:reporting_reportrun_changelist"), {"action": "set_legal_hold", "_selected_action": [run.pk]}
    )

    run.refresh_from_db()
    assert run.legal_hold is True
    event = AuditEvent.objects.get(action=AuditEvent.Action.LEGAL_HOLD)
    assert event.summary.startswith(f"Put run #{run.pk}") and event.report_id == report.pk


def test_legal_hold_needs_its_permission(client, report):
    from tests import factories

    run = sent_run(report, days_ago=1)
    client.force_login(factories.staff_user("vic", "view_reportrun"))

    client.post(
        reverse("admin:reporting_reportrun_changelist"), {"action": "set_legal_hold", "_selected_action": [run.pk]}
    )

    assert ReportRun.objects.get(pk=run.pk).legal_hold is False


def test_file_retention_longer_than_run_retention_is_refused(tmp_path):
    from tests.test_settings import manage

    result = manage(
        "check",
        REPORTING_FILE_RETENTION_DAYS="500",
        REPORTING_RUN_RETENTION_DAYS="400",
        REPORTING_VAR_DIR=str(tmp_path),
    )

    assert result.returncode != 0
    assert "REPORTING_FILE_RETENTION_DAYS must not be longer than REPORTING_RUN_RETENTION_DAYS" in result.stderr
