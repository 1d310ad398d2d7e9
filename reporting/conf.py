"""The app's settings, each with a default: a project may define none of them.

`settings.REPORTING` (a dict) is read over DEFAULTS key by key, so a project sets only what it
changes; project/settings.py fills it from REPORTING_* environment variables. The few settings
outside that dict (REPORTING_REQUIRE_2FA, METRICS_TOKEN, SENTRY_DSN, …) are read with `setting()`.
"""

from __future__ import annotations

import tempfile
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from django.conf import settings
from django.template.utils import get_app_template_dirs

DEFAULTS: dict[str, Any] = {
    "MAX_RESPONSE_BYTES": 1024 * 1024 * 1024,
    "STREAM_ABOVE_BYTES": 8 * 1024 * 1024,
    "FETCH_MAX_RETRIES": 5,
    "FETCH_RETRY_BASE_SECONDS": 30,
    "FETCH_RETRY_MAX_SECONDS": 1800,
    "FETCH_TOTAL_SECONDS": 300,
    "MAX_JSON_DEPTH": 64,
    "MAX_JSON_VALUES": 5_000_000,
    "SECRET_ENV_PREFIX": "REPORTING_SECRET_",
    "SECRET_ENV_VARS": [],
    "RUN_LEASE_SECONDS": 120,
    "PARTS_PER_TASK": 25,
    "RUN_QUEUE_DEADLINE_SECONDS": 600,
    "CATCH_UP_GRACE_SECONDS": 120,
    "MAX_ATTACHMENT_BYTES": 10 * 1024 * 1024,
    "SITE_URL": "http://127.0.0.1:8000",
    "ALLOWED_SOURCE_HOSTS": None,  # None: loopback with DEBUG on, nothing otherwise
    "SLACK_API_URL": "https://slack.com/api/",
    "ALLOWED_DESTINATION_HOSTS": None,  # as ALLOWED_SOURCE_HOSTS
    "DESTINATION_MAX_ATTEMPTS": 4,
    "DESTINATION_RETRY_BASE_SECONDS": 2,
    "DESTINATION_RETRY_MAX_SECONDS": 30,
    "DESTINATION_TIMEOUT_SECONDS": 30,
    "ALERT_INTERVAL_MINUTES": 15,
    "BEAT_MAX_SILENCE_SECONDS": 180,
    "RUN_RETENTION_DAYS": 400,
    "FILE_RETENTION_DAYS": 90,
    "SENDER_DOMAINS": None,  # None: the domain of DEFAULT_FROM_EMAIL
    "INTERNAL_DOMAINS": None,  # None: the sender domains
}

# Settings of their own name (not in the REPORTING dict), with their defaults.
OTHER_DEFAULTS: dict[str, Any] = {
    "REPORTING_REQUIRE_2FA": False,
    "REPORTING_2FA_GROUPS": ["Report editors", "Report senders"],
    # Said on the lockout page (admin.login.lockout_response), when a project uses it with django-axes.
    "AXES_FAILURE_LIMIT": 3,
    "AXES_COOLOFF_MINUTES": 15,
    "METRICS_TOKEN": "",
    "SENTRY_DSN": "",
    "SENTRY_ENVIRONMENT": "",
    "MISSING_VARIABLE_MARK": "\u2063missing:%s\u2063",
    "CELERY_TASK_SOFT_TIME_LIMIT": None,
}

_LOOPBACK = ["127.0.0.1", "localhost"]


class _ReportingSettings:
    """settings.REPORTING over DEFAULTS: `REPORTING["SITE_URL"]`, `.get(key, default)`."""

    def __getitem__(self, key: str) -> Any:
        configured = getattr(settings, "REPORTING", None) or {}
        if key in configured:
            return configured[key]
        if key not in DEFAULTS:
            raise KeyError(key)
        value = DEFAULTS[key]
        return _derived(key) if value is None else value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


def _derived(key: str) -> Any:
    """The defaults that depend on other settings."""
    if key in ("ALLOWED_SOURCE_HOSTS", "ALLOWED_DESTINATION_HOSTS"):
        return list(_LOOPBACK) if settings.DEBUG else []
    if key == "SENDER_DOMAINS":
        domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2].lower()
        return [domain] if domain else []
    if key == "INTERNAL_DOMAINS":
        return REPORTING["SENDER_DOMAINS"]
    return None


REPORTING = _ReportingSettings()


def setting(name: str) -> Any:
    """A setting outside the REPORTING dict, or its default."""
    return getattr(settings, name, OTHER_DEFAULTS.get(name))


def var_dir() -> Path:
    """Where the app keeps local files of its own (beat's lock file): settings.VAR_DIR, or the temp folder."""
    return Path(getattr(settings, "VAR_DIR", None) or tempfile.gettempdir())


def template_dirs() -> list[Path]:
    """The folders report templates and layouts are found in, in order.

    Those of the project's "reports" engine if it has one, else of its first Django engine: its DIRS,
    then each installed app's templates/ folder when it has APP_DIRS (this app's layouts among them).
    A test's settings.TEMPLATES applies here too.
    """
    engines: list[dict[str, Any]] = [
        engine for engine in settings.TEMPLATES if str(engine["BACKEND"]).endswith("DjangoTemplates")
    ]
    named = {engine.get("NAME"): engine for engine in engines}
    engine: dict[str, Any] = named.get("reports") or (engines[0] if engines else {})
    folders = [Path(folder) for folder in engine.get("DIRS") or []]
    if engine.get("APP_DIRS"):
        folders += [Path(folder) for folder in get_app_template_dirs("templates")]
    return folders
