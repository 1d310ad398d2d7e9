"""Health: heartbeats of beat and the workers, and the checks behind /healthz.

Beat writes its heartbeat from its tick (at most every HEARTBEAT_SECONDS); each worker from
a timer of its own (the `WorkerHeartbeat` bootstep of project/celery.py). /healthz
answers JSON with the database, the broker, the age of each heartbeat and the runs past
their deadline, and 503 when the database or the broker is down, beat has been silent too
long, or a run has been past its deadline longer than the deadline sweep takes to act.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from celery import current_app
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from reporting import conf
from reporting.models import Heartbeat, ReportRun

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 15
BEAT = "beat"
WORKER_SILENCE_SECONDS = 120  # a worker not heard from for this long is listed as silent
DEADLINE_SWEEP_SLACK_SECONDS = 300  # the deadline sweep runs every minute: a run overdue this long is stuck


def record_heartbeat(name: str, **detail: Any) -> None:
    """Write `name`'s last sign of life; never raises (a heartbeat must not stop its process)."""
    try:
        close_old_connections()
        Heartbeat.objects.update_or_create(name=name, defaults={"seen_at": timezone.now(), "detail": detail})
    except DatabaseError as exc:
        log.warning("could not record the heartbeat of %s: %r", name, exc)


class BeatHeartbeat:
    """Beat's heartbeat, rate-limited: called from every tick, writes every HEARTBEAT_SECONDS."""

    def __init__(self) -> None:
        self._next = 0.0

    def __call__(self, **detail: Any) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + HEARTBEAT_SECONDS
            record_heartbeat(BEAT, **detail)


# --- /healthz ------------------------------------------------------------------------------


def health(*, now: datetime | None = None) -> tuple[bool, dict[str, Any]]:
    """(healthy, the report): the database, the broker, beat's heartbeat and the workers'."""
    now = now or timezone.now()
    database = _database()
    checks: dict[str, Any] = {"database": database, "broker": _broker()}
    heartbeats = _heartbeats() if database["ok"] else {}
    checks["beat"] = _beat(heartbeats.pop(BEAT, None), now)
    checks["workers"] = [_worker(name, seen, now) for name, seen in sorted(heartbeats.items())]
    checks["runs_past_deadline"] = _overdue_runs(now) if database["ok"] else {"ok": False}
    healthy = all(checks[name]["ok"] for name in ("database", "broker", "beat", "runs_past_deadline"))
    return healthy, {"status": "ok" if healthy else "fail", "checked_at": now.isoformat(), "checks": checks}


def _database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except DatabaseError as exc:
        return {"ok": False, "error": f"The database is unreachable: {type(exc).__name__}."}


def _broker() -> dict[str, Any]:
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True, "transport": conn.transport_cls}
    except Exception as exc:  # kombu raises its transports' own errors
        return {"ok": False, "error": f"The message broker is unreachable: {type(exc).__name__}."}


def _overdue_runs(now: datetime) -> dict[str, Any]:
    """Runs not at an end and past their deadline: normal for up to a sweep's interval, a fault beyond."""
    overdue = ReportRun.objects.filter(status__in=ReportRun.WORKING, deadline_at__lt=now)
    oldest = overdue.order_by("deadline_at").values_list("deadline_at", flat=True).first()
    late_by = _age(oldest, now) if oldest else 0.0
    answer: dict[str, Any] = {
        "ok": late_by <= DEADLINE_SWEEP_SLACK_SECONDS,
        "count": overdue.count(),
        "oldest_seconds": late_by,
    }
    if not answer["ok"]:
        answer["error"] = (
            f"{answer['count']} runs are past their deadline, one by {late_by:.0f} seconds: "
            "is the deadline sweep (a beat task) running?"
        )
    return answer


def _heartbeats() -> dict[str, datetime]:
    return dict(Heartbeat.objects.values_list("name", "seen_at"))


def _beat(seen: datetime | None, now: datetime) -> dict[str, Any]:
    limit = conf.REPORTING["BEAT_MAX_SILENCE_SECONDS"]
    if seen is None:
        return {"ok": False, "last_tick": None, "error": "Beat has never recorded a heartbeat: is it running?"}
    age = _age(seen, now)
    answer = {"ok": age <= limit, "last_tick": seen.isoformat(), "age_seconds": age}
    if age > limit:
        answer["error"] = f"Beat has been silent for {age:.0f} seconds (the limit is {limit})."
    return answer


def _worker(name: str, seen: datetime, now: datetime) -> dict[str, Any]:
    age = _age(seen, now)
    return {"name": name, "last_seen": seen.isoformat(), "age_seconds": age, "ok": age <= WORKER_SILENCE_SECONDS}


def _age(seen: datetime, now: datetime) -> float:
    return round(max(0.0, (now - seen).total_seconds()), 1)
