"""Celery tasks: thin wrappers, each one call into the service layer (or a sweep).

The services publish these by name (reporting.services.enqueue), so nothing below the
entry points imports this module.
"""

from datetime import datetime

from celery import shared_task

from reporting import alerts, retention
from reporting.services import archive, catch_up, deadlines, destinations, runs


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_scheduled_report(report_id: int, fired_at: str | None = None) -> None:
    """The task of each report's PeriodicTask: create the period's run and work on it.

    The run is worked on right here rather than through a second message: one broker
    round trip per report instead of two. `fired_at` (ISO 8601) is when beat fired it.
    """
    runs.run_scheduled(report_id=report_id, fired_at=datetime.fromisoformat(fired_at) if fired_at else None)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_scheduled_reports(report_ids: list[int], fired_at: str) -> None:
    """Several reports fired by beat at the same moment (reporting.beat batches a burst)."""
    runs.run_scheduled_batch(report_ids=report_ids, fired_at=datetime.fromisoformat(fired_at))


@shared_task(acks_late=True, reject_on_worker_lost=True)
def execute_run(run_id: int) -> None:
    runs.work_on_run(run_id=run_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def work_on_parts(run_id: int, part_ids: list[int]) -> None:
    """A batch of a per-recipient run's reports, each made and sent once."""
    runs.work_on_parts(run_id=run_id, part_ids=part_ids)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def send_resend(run_id: int, delivery_ids: list[int]) -> None:
    archive.send_resend(run_id=run_id, delivery_ids=delivery_ids)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def send_to_destinations(run_id: int, delivery_ids: list[int]) -> None:
    """A resend to Slack, Teams or a webhook: each delivery sent once (one left "sending" is not sent again)."""
    destinations.send_to_destinations(run_id=run_id, delivery_ids=delivery_ids)


@shared_task
def catch_up_missed_runs() -> None:
    """Every few minutes: run late, or record as missed, what beat did not start."""
    catch_up.catch_up_missed_runs()


@shared_task
def enforce_run_deadlines() -> None:
    """Every minute: publish again once, then fail, every run past its deadline."""
    deadlines.enforce_run_deadlines()


@shared_task
def recover_stuck_runs() -> None:
    """The deadline sweep's old name, for a beat or a queue that still holds it."""
    deadlines.enforce_run_deadlines()


@shared_task
def send_failure_alerts() -> None:
    """Every minute: one digest per owner of the runs that failed, were held or were missed."""
    alerts.send_failure_alerts()


@shared_task
def prune_archive() -> None:
    """Nightly: the archive pruned by the retention settings, legal holds kept."""
    retention.prune_archive()
