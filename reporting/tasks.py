"""Celery tasks: thin wrappers, each one call into reporting.runs."""

import random

from celery import shared_task
from django.conf import settings

from reporting import runs


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_scheduled_report(report_id: int) -> None:
    """Fired by beat from the report's PeriodicTask: create the period's run and work on it.

    The run is worked on right here rather than through a second message: one broker
    round trip per report instead of two. Retries and hand-overs go to `execute_run`.
    """
    run = runs.start_scheduled_run(report_id=report_id)
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
