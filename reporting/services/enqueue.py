"""The one way the services publish work: by task name, after the transaction commits."""

from __future__ import annotations

import logging

from celery import current_app
from django.db import transaction

log = logging.getLogger(__name__)

EXECUTE_RUN = "reporting.tasks.execute_run"
SEND_RESEND = "reporting.tasks.send_resend"
SEND_TO_DESTINATIONS = "reporting.tasks.send_to_destinations"
WORK_ON_PARTS = "reporting.tasks.work_on_parts"


def enqueue(task_name: str, *, countdown: float | None = None, **kwargs: object) -> None:
    """Publish `task_name` with `kwargs` once the current transaction commits (at once outside one).

    A publish that fails (the broker is down) is logged, not raised: what it was for is
    already committed with a deadline, and the deadline sweep publishes it again.
    """
    transaction.on_commit(lambda: _publish(task_name, kwargs, countdown))


def _publish(task_name: str, kwargs: dict[str, object], countdown: float | None) -> None:
    try:
        current_app.tasks[task_name].apply_async(kwargs=kwargs, countdown=countdown)  # type: ignore[arg-type]
    except Exception:  # the caller's work is committed; the deadline sweep will publish it again
        log.exception("could not publish %s %s; the deadline sweep will publish it again", task_name, kwargs)
