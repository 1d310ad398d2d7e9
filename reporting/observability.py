"""Sentry (optional): errors with every secret redacted, and a cron check-in per scheduled run.

Our batching beat (reporting.beat) bypasses Celery beat's own monitoring, so the runs check
in themselves, from the orchestration (reporting.runs). Log lines' run ids: reporting.logs.
"""

from __future__ import annotations

import uuid
from typing import Any

import sentry_sdk
from sentry_sdk.crons import capture_checkin
from sentry_sdk.types import Event, Hint, MonitorConfig

from reporting import schedules
from reporting.logs import bind
from reporting.models import ReportRun
from reporting.pipeline.fetch import redact, secret_forms_in_environment

# --- Sentry ---------------------------------------------------------------------------------


def init_sentry(dsn: str, *, environment: str | None = None, transport: Any = None) -> None:
    """Errors (Django and Celery) to Sentry, without personal data, every form of every secret redacted."""
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        # No personal data: what send_default_pii=False meant, in the form sentry-sdk 2.75 asks for
        # (send_default_pii is deprecated); no request bodies or stack frames' variables either,
        # which could hold a report's data.
        data_collection={
            "user_info": False,
            "http_bodies": [],
            "stack_frame_variables": False,
            "database_query_data": False,
        },
        before_send=redact_event,
        before_send_transaction=redact_event,
        transport=transport,
    )


def redact_event(event: Event, hint: Hint | None = None) -> Event:
    """The event with every form of every secret the workers may hold replaced by [secret], wherever it is."""
    forms = secret_forms_in_environment()
    return _redacted(event, forms) if forms else event


def _redacted(value: Any, forms: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, forms)
    if isinstance(value, dict):
        return {_redacted(key, forms): _redacted(item, forms) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redacted(item, forms) for item in value)
    return value


_CHECK_IN_NAMESPACE = uuid.UUID("0b6f6b5e-6a43-4d4e-9a59-3c1e2f7d9a10")
OK_STATUSES = (ReportRun.Status.SENT, ReportRun.Status.SKIPPED)


def check_in_id(run_id: int) -> str:
    """The same id for every attempt on a run, in any worker: Sentry pairs its start and its end."""
    return uuid.uuid5(_CHECK_IN_NAMESPACE, f"run-{run_id}").hex


def run_started(run: ReportRun) -> None:
    """Log lines from here on name the report too; a scheduled run checks in as in progress."""
    bind(report_id=run.report_id)
    _check_in(run, "in_progress")


def run_ended(run: ReportRun, status: str) -> None:
    """A scheduled run checks in ok (sent, or skipped by its condition) or error (failed, held, partially sent)."""
    _check_in(run, "ok" if status in OK_STATUSES else "error")


def _check_in(run: ReportRun, status: str) -> None:
    if run.trigger not in ReportRun.SCHEDULED_TRIGGERS or not sentry_sdk.get_client().is_active():
        return
    capture_checkin(
        monitor_slug=f"report-{run.report.slug}",
        check_in_id=check_in_id(run.pk),
        status=status,
        monitor_config=monitor_config(run.report),
    )


def monitor_config(report: Any) -> MonitorConfig | None:
    """The report's crontab and timezone, so that Sentry knows when to expect a check-in."""
    spec = schedules.spec_for(report)
    if spec is None:
        return None
    crontab = f"{spec.minute} {spec.hour} {spec.day_of_month} {spec.month_of_year} {spec.day_of_week}"
    return {
        "schedule": {"type": "crontab", "value": crontab},
        "timezone": spec.timezone,
        "checkin_margin": 5,  # minutes
        "max_runtime": 60,  # minutes; the deadline sweep ends any run well before
    }
