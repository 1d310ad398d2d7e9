"""Retention: the archive pruned by age, a run on legal hold never.

Runs older than RUN_RETENTION_DAYS go, with their deliveries, attachments, recipient reports
and files. Runs older than FILE_RETENTION_DAYS keep their row, their email (subject, HTML,
text) and their deliveries, but lose the data snapshot, the attachment files and the data
kept with each recipient's report, with a note saying so.
Work goes in batches; files are deleted through the storage API (local disk or S3 alike)
only once the rows' transaction has committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from reporting import conf
from reporting.models import ReportRun, RunAttachment, RunPart

log = logging.getLogger(__name__)
BATCH = 500


@dataclass(frozen=True)
class PruneResult:
    runs_deleted: int
    runs_stripped: int  # runs whose snapshot and attachment files were removed
    files_deleted: int


def prune_archive(*, now: datetime | None = None) -> PruneResult:
    """Apply the retention settings once; safe to run again at any time."""
    now = now or timezone.now()
    run_cutoff = now - timedelta(days=conf.REPORTING["RUN_RETENTION_DAYS"])
    file_cutoff = now - timedelta(days=conf.REPORTING["FILE_RETENTION_DAYS"])
    deleted, deleted_files = _in_batches(_delete_runs, _prunable(run_cutoff))
    with_files = _prunable(file_cutoff).filter(
        # something left to remove: the snapshot, files, or the data kept with each recipient's report
        ~Q(data_snapshot="") | Q(attachments__file__gt="") | Q(parts__data__isnull=False)
    )
    stripped, stripped_files = _in_batches(lambda ids: _strip_runs(ids, now), with_files)
    result = PruneResult(runs_deleted=deleted, runs_stripped=stripped, files_deleted=deleted_files + stripped_files)
    log.info("retention: %s", result)
    return result


def _prunable(cutoff: datetime):
    """Runs created before `cutoff`, finished (a run still working is left alone), not on legal hold."""
    return ReportRun.objects.filter(created_at__lt=cutoff, legal_hold=False).exclude(status__in=ReportRun.WORKING)


def _in_batches(prune, queryset) -> tuple[int, int]:
    runs = files = 0
    while ids := list(queryset.values_list("pk", flat=True).distinct().order_by("pk")[:BATCH]):
        count, names = prune(ids)
        runs, files = runs + count, files + len(names)
        if count < len(ids):  # the rest changed meanwhile (e.g. put on hold): next time
            break
    return runs, files


def _delete_runs(ids: list[int]) -> tuple[int, list[str]]:
    with transaction.atomic():
        batch = ReportRun.objects.filter(pk__in=ids, legal_hold=False)  # a hold set meanwhile wins
        names = _file_names(batch)
        count = len(batch.values_list("pk", flat=True))
        batch.delete()  # deliveries and attachments go with it (CASCADE)
        transaction.on_commit(lambda: _delete_files(names))
    return count, names


def _strip_runs(ids: list[int], now: datetime) -> tuple[int, list[str]]:
    days = conf.REPORTING["FILE_RETENTION_DAYS"]
    note = f"Data snapshot and attachments removed on {now:%d %b %Y} by the {days}-day retention."
    with transaction.atomic():
        batch = ReportRun.objects.filter(pk__in=ids, legal_hold=False)
        names = _file_names(batch)
        runs = list(batch.only("pk", "notes"))
        for run in runs:
            run.notes = f"{run.notes}\n{note}".strip()
            run.data_snapshot = ""
        ReportRun.objects.bulk_update(runs, ["notes", "data_snapshot"])
        RunAttachment.objects.filter(run__in=batch).update(file="")
        RunPart.objects.filter(run__in=batch).update(data=None)
        transaction.on_commit(lambda: _delete_files(names))
    return len(runs), names


def _file_names(runs) -> list[str]:
    snapshots = runs.exclude(data_snapshot="").values_list("data_snapshot", flat=True)
    attachments = RunAttachment.objects.filter(run__in=runs).exclude(file="").values_list("file", flat=True)
    return [*snapshots, *attachments]


def _delete_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError as exc:  # a file already gone, or a storage hiccup: the rows are what count
            log.warning("retention: could not delete %s: %r", name, exc)
