"""Celery tasks: thin wrappers, each one call into reporting.runs."""

import logging
import random
from datetime import datetime

from celery import shared_task
from django.conf import settings

from reporting import alerts, retention, runs, sweeps

log = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_scheduled_report(report_id: int, fired_at: str | None = None) -> None:
    """The task of each report's PeriodicTask: create the period's run and work on it.

    The run is worked on right here rather than through a second message: one broker
    round trip per report instead of two. Retries and hand-overs go to `execute_run`.
    `fired_at` (ISO 8601) is when beat fired it; without it, now.
    """
    _run_from_schedule(report_id, fired_at=datetime.fromisoformat(fired_at) if fired_at else None)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_scheduled_reports(report_ids: list[int], fired_at: str) -> None:
    """Several reports fired by beat at the same moment (reporting.beat batches a burst).

    One report's unexpected error is logged and does not keep the others from running;
    a redelivered message after a crash finds the finished runs and skips them.
    """
    moment = datetime.fromisoformat(fired_at)
    for report_id in report_ids:
        try:
            _run_from_schedule(report_id, fired_at=moment)
        except Exception:
            log.exception("report %s: the scheduled run could not be started", report_id)


def _run_from_schedule(report_id: int, *, fired_at: datetime | None) -> None:
    run = runs.start_scheduled_run(report_id=report_id, started_at=fired_at)
    if run is None:
        return
    try:
        runs.execute_run(run_id=run.pk, final_attempt=settings.REPORTING["FETCH_MAX_RETRIES"] == 0)
    except runs.RunNotClaimed as exc:
        execute_run.apply_async(kwargs={"run_id": run.pk}, countdown=exc.retry_in)
    except runs.RunRetryLater as exc:
        execute_run.apply_async(kwargs={"run_id": run.pk}, countdown=retry_delay(0, exc.retry_after), retries=1)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def execute_run(self, run_id: int) -> None:
    limit = settings.REPORTING["FETCH_MAX_RETRIES"]
    try:
        runs.execute_run(run_id=run_id, final_attempt=self.request.retries >= limit)
    except runs.RunNotClaimed as exc:
        raise self.retry(countdown=exc.retry_in, max_retries=None) from exc
    except runs.RunRetryLater as exc:
        raise self.retry(countdown=retry_delay(self.request.retries, exc.retry_after), max_retries=None) from exc


@shared_task(acks_late=True, reject_on_worker_lost=True)
def send_resend(run_id: int, delivery_ids: list[int]) -> None:
    runs.send_resend(run_id=run_id, delivery_ids=delivery_ids)


def retry_delay(retries: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, at least the server's Retry-After, capped."""
    base = settings.REPORTING["FETCH_RETRY_BASE_SECONDS"]
    cap = settings.REPORTING["FETCH_RETRY_MAX_SECONDS"]
    backoff = random.uniform(base, min(cap, base * 2**retries))
    return min(cap, max(backoff, retry_after or 0))


@shared_task
def catch_up_missed_runs() -> None:
    """Every few minutes: run late, or record as missed, what beat did not start (reporting.sweeps)."""
    sweeps.catch_up_missed_runs()


@shared_task
def recover_stuck_runs() -> None:
    """Every minute: retry once, then fail, the runs whose worker went silent (reporting.sweeps)."""
    sweeps.recover_stuck_runs()


@shared_task
def send_failure_alerts() -> None:
    """Every minute: one digest per owner of the runs that failed, were held or missed (reporting.alerts)."""
    alerts.send_failure_alerts()


@shared_task
def prune_archive() -> None:
    """Nightly: the archive pruned by the retention settings, legal holds kept (reporting.retention)."""
    retention.prune_archive()
