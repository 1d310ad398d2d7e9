"""Settings for Scheduled Reports: environment variables only, the embedded default when unset.

The embedded default needs no services: SQLite and a filesystem Celery broker under
`var/`, emails written as `.eml` files under `var/mail/`. Production sets DATABASE_URL,
CELERY_BROKER_URL, an email backend and the security variables; see .env.example.
"""

import json
import os
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.env import env_bool, env_choice, env_domains, env_int, env_list, env_names, env_secret_prefix, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("REPORTING_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-only-for-the-embedded-demo"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # First: its templates override the admin's history page and django-celery-beat's task form.
    "reporting",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "anymail",
    "csp",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "auditlog",
    # Not "import_export": recipients_io.py uses its formats as a library, which needs no app,
    # and as an app its admin module (tablib, openpyxl, numpy, PIL: ~25 MB) would load in
    # every process, beat included, through the admin's autodiscovery (tests/test_beat_imports.py).
    "ninja",  # the REST API's docs page from its own static files (its CDN page's inline script breaks the CSP)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified()
    "reporting.admin.login.RequireTwoFactorMiddleware",  # only with REPORTING_REQUIRE_2FA
    "auditlog.middleware.AuditlogMiddleware",  # the audit log's actor: the logged-in user
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: turns a lockout into its page
]

# --- admin hardening: CSP, login throttling, two-factor, audit log ------------------------
# Content Security Policy (django-csp 4): scripts only from our own static files, never
# inline, so an injected <script> or onclick= does not run. Styles may be inline: the admin
# and our pages use style attributes, and a style cannot run code. The archived email's
# page sends its own stricter policy (reporting/admin/archive.py), which this leaves alone.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],  # the preview's charts are data: images
        "frame-src": ["'self'"],  # the archived email's frame
        "frame-ancestors": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
    }
}

# Login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username
# from one address, that pair is refused for AXES_COOLOFF_MINUTES, even with the right one.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_MINUTES = env_int("AXES_COOLOFF_MINUTES", 15, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=AXES_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "reporting.admin.login.lockout_response"  # the page says how long, in words

# Two-factor (django-otp, TOTP): with REPORTING_REQUIRE_2FA on, superusers and members of
# the groups below must enrol an authenticator (manage.py enrol_totp USER) and give its
# code after logging in before the admin lets them in (reporting/admin/login.py).
REPORTING_REQUIRE_2FA = env_bool("REPORTING_REQUIRE_2FA", False)
REPORTING_2FA_GROUPS = ["Report editors", "Report senders"]
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "Scheduled Reports")

# Audit log (django-auditlog): before and after values of every model staff can change, with
# who changed it. A user's password hash is never recorded (nor the last login, which is noise).
AUDITLOG_INCLUDE_TRACKING_MODELS = (
    "reporting.datasource",
    "reporting.recipient",
    {"model": "reporting.recipientlist", "m2m_fields": {"recipients"}},
    {"model": "reporting.report", "m2m_fields": {"recipients", "recipient_lists", "destinations"}},
    "reporting.destination",
    {"model": "reporting.apitoken", "exclude_fields": ["key_hash", "last_used_at"]},  # made and revoked; never its hash
    {"model": "auth.user", "exclude_fields": ["password", "last_login"], "m2m_fields": {"groups", "user_permissions"}},
    {"model": "auth.group", "m2m_fields": {"permissions"}},
    "django_celery_beat.periodictask",
    "django_celery_beat.crontabschedule",
)

# Recipients' import and export (django-import-export's formats; reporting/recipients_io.py).
# Its own formula escaping only drops a leading "=" (lossy, and "+", "-", "@" pass): our
# exports quote such cells themselves (CSV) or type them as text (XLSX), which round-trips.
# On, still, for any other export through its formats; imports are all-or-nothing.
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = True
IMPORT_EXPORT_USE_TRANSACTIONS = True

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

MISSING_VARIABLE_MARK = "\u2063missing:%s\u2063"  # see the "reports" engine
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
    {
        # Where the report sandbox (reporting/pipeline/sandbox.py) finds report templates and layouts:
        # the project's folder, then the app's (reporting/templates/). Without a "reports" engine it
        # reads the first one's. A variable missing from the data leaves a mark that
        # reporting.pipeline.render turns into an error in words (never a blank figure).
        "NAME": "reports",
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {"string_if_invalid": MISSING_VARIABLE_MARK},
    },
]

# --- security (production: DEBUG off) -----------------------------------------------------
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    if env_bool("SECURE_PROXY_SSL_HEADER", False):  # behind a proxy that sets X-Forwarded-Proto
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- database -------------------------------------------------------------------------
SQLITE_PATH = VAR_DIR / "reporting.sqlite3"
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES: dict[str, Any] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": SQLITE_PATH,
        "OPTIONS": {
            # WAL lets the web process read while the worker writes; IMMEDIATE makes a
            # writing transaction take the lock up front, so concurrent writers wait
            # for `timeout` seconds instead of failing with "database is locked".
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
        "TEST": {"NAME": env_str("REPORTING_TEST_SQLITE", "") or None},
    }
}
if os.environ.get("DATABASE_URL"):
    try:
        DATABASES["default"] = dj_database_url.parse(
            os.environ["DATABASE_URL"], conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60), conn_health_checks=True
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL Django understands: {exc}") from exc
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Parameters sent apart from the statement, so that psycopg prepares a statement a connection
        # runs again and again (a run's bookkeeping): PostgreSQL parses and plans it once. Off behind
        # a pooler that does not keep prepared statements (PgBouncer in transaction mode before 1.21).
        DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = env_bool(
            "DATABASE_SERVER_SIDE_BINDING", True
        )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- i18n / time ----------------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- static and archived files ----------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"
# Archived snapshots and attachments: local files by default; any Django storage, e.g.
# STORAGE_BACKEND=storages.backends.s3.S3Storage with STORAGE_OPTIONS='{"bucket_name": "…"}'.
STORAGES = {
    "default": {
        "BACKEND": env_str("STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage"),
        "OPTIONS": json.loads(env_str("STORAGE_OPTIONS", "{}")),
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- email ----------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "reporting.mail.EmlFileBackend")
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Scheduled Reports <reports@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# The domains a report's own From address may be at ("example.com"; ".example.com": it and its
# subdomains); unset: the domain of DEFAULT_FROM_EMAIL. The company's own domains, written the same
# way, get no List-Unsubscribe header (it is for recipients outside); unset: the sender domains.
_DEFAULT_FROM_DOMAIN = parseaddr(DEFAULT_FROM_EMAIL)[1].rpartition("@")[2].lower()
_SENDER_DOMAINS = env_domains("REPORTING_SENDER_DOMAINS", [_DEFAULT_FROM_DOMAIN] if _DEFAULT_FROM_DOMAIN else [])
_INTERNAL_DOMAINS = env_domains("REPORTING_INTERNAL_DOMAINS", _SENDER_DOMAINS)
# django-anymail: every ANYMAIL_* variable becomes a key of ANYMAIL, e.g.
# ANYMAIL_POSTMARK_SERVER_TOKEN, ANYMAIL_MAILGUN_API_KEY, ANYMAIL_WEBHOOK_SECRET (user:password).
ANYMAIL = {name.removeprefix("ANYMAIL_"): value for name, value in os.environ.items() if name.startswith("ANYMAIL_")}

# --- Celery ---------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    for _folder in ("queue", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)  # the transport needs them to exist
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
    }
    # The filesystem transport has no fanout exchange worth relying on.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis gives an unacknowledged message to another worker after this many seconds.
    # It must be longer than the longest task (CELERY_TASK_TIME_LIMIT) and the longest
    # retry countdown (REPORTING_FETCH_RETRY_MAX_SECONDS), or a healthy run would be
    # delivered twice (harmless, but wasteful: the second finds the run claimed).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 7200, minimum=1)}
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A run is acknowledged only when it finishes; a worker that dies mid-run gives its
# message back to the broker, and the run's own bookkeeping makes the second attempt
# skip what the first already did (see reporting/runs.py).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Report runs are long and uneven: a worker takes one message at a time, so a slow run
# does not hold others back in its prefetch buffer.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection before and after each task unless
# told to reuse them: a new PostgreSQL connection per run. Reuse them for this many tasks;
# Django's CONN_MAX_AGE and health checks still retire old or broken ones.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 100)
# A run that hangs is stopped: soft limit first (the run records why), then the hard one.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 600, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 660, minimum=1)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TIMEZONE = TIME_ZONE
# django-celery-beat's DatabaseScheduler, made to follow edits without reloading every
# row and to tick in O(log n), for thousands of reports (reporting/beat.py).
CELERY_BEAT_SCHEDULER = "reporting.beat:ReportScheduler"
# After beat was down, it fires a missed slot once on start only when the slot is less
# than an hour old: a stale report is worse than a late one, and the period logic
# (reporting/runs.py) still files a late run under the slot it belongs to.
CELERY_BEAT_CRON_STARTING_DEADLINE = env_int("CELERY_BEAT_CRON_STARTING_DEADLINE", 3600, minimum=1)

# --- reporting ------------------------------------------------------------------------
REPORTING: dict[str, Any] = {
    # Largest data-source response read, in bytes; a larger one fails the run clearly.
    "MAX_RESPONSE_BYTES": env_int("REPORTING_MAX_RESPONSE_BYTES", 1024 * 1024 * 1024, minimum=1024),
    # A response larger than this is not parsed whole: its rows are read from the archived file
    # as they are needed, so that a run's memory does not grow with them (reporting.pipeline.stream).
    "STREAM_ABOVE_BYTES": env_int("REPORTING_STREAM_ABOVE_BYTES", 8 * 1024 * 1024, minimum=0),
    # How many times a transient fetch error is retried, and the first delay (seconds).
    "FETCH_MAX_RETRIES": env_int("REPORTING_FETCH_MAX_RETRIES", 5),
    "FETCH_RETRY_BASE_SECONDS": env_int("REPORTING_FETCH_RETRY_BASE_SECONDS", 30, minimum=1),
    "FETCH_RETRY_MAX_SECONDS": env_int("REPORTING_FETCH_RETRY_MAX_SECONDS", 1800, minimum=1),
    # The most one fetch may take, every redirect and read included: a data source that
    # trickles its answer is cut off here even where Celery's time limits do not fire (the
    # embedded broker, Preview, manage.py run_report).
    "FETCH_TOTAL_SECONDS": env_int("REPORTING_FETCH_TOTAL_SECONDS", 300, minimum=1),
    # Limits on the JSON of an answer, checked before it is built into Python objects.
    "MAX_JSON_DEPTH": env_int("REPORTING_MAX_JSON_DEPTH", 64, minimum=2),
    "MAX_JSON_VALUES": env_int("REPORTING_MAX_JSON_VALUES", 5_000_000, minimum=1000),
    # The environment variables a data source may name as its secret: those starting with the
    # prefix, and those listed. Any other (SECRET_KEY, DATABASE_URL, …) is refused, so an editor
    # cannot make the worker send the server's own secrets to a data source.
    "SECRET_ENV_PREFIX": env_secret_prefix("REPORTING_SECRET_ENV_PREFIX", "REPORTING_SECRET_"),
    "SECRET_ENV_VARS": env_names("REPORTING_SECRET_ENV_VARS", []),
    # A run not touched for this long is taken to be abandoned by a dead worker.
    "RUN_LEASE_SECONDS": env_int("REPORTING_RUN_LEASE_SECONDS", 120, minimum=5),
    # A per-recipient run's reports go to the workers in batches of this many (one message each).
    "PARTS_PER_TASK": env_int("REPORTING_PARTS_PER_TASK", 25, minimum=1),
    # A run waiting for a worker (queued, or its retry time come) this long is taken by the
    # deadline sweep: published once more, then failed with an alert (reporting.services.deadlines).
    # Set it above the longest a burst of due reports may wait in the queue for a worker.
    "RUN_QUEUE_DEADLINE_SECONDS": env_int("REPORTING_RUN_QUEUE_DEADLINE_SECONDS", 600, minimum=5),
    # The catch-up sweep looks only at schedule slots at least this old, so that it never
    # races beat firing on time (reporting.services.catch_up.catch_up_missed_runs).
    "CATCH_UP_GRACE_SECONDS": env_int("REPORTING_CATCH_UP_GRACE_SECONDS", 120),
    # Largest total size of a run's attachments, as encoded in the message (base64: about 4/3 of
    # the file); a file that would go over is archived and linked from the email instead.
    "MAX_ATTACHMENT_BYTES": env_int("REPORTING_MAX_ATTACHMENT_BYTES", 10 * 1024 * 1024, minimum=1),
    # Base URL of the admin, for links in emails and printed by commands.
    "SITE_URL": env_str("REPORTING_SITE_URL", "http://127.0.0.1:8000"),
    # Hosts data sources may be fetched from: host names, ".example.com" (the domain and its
    # subdomains), IP addresses and CIDR networks. Unset: loopback only with DEBUG on (the
    # embedded demo's API), nothing at all otherwise. See reporting.pipeline.fetch.HostAllowlist.
    "ALLOWED_SOURCE_HOSTS": env_list("REPORTING_ALLOWED_SOURCE_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else []),
    # Destinations besides email (reporting/pipeline/outgoing.py). Slack's Web API, which tests point
    # at a server on loopback; it is the operator's, so it is not checked against an allowlist.
    "SLACK_API_URL": env_str("REPORTING_SLACK_API_URL", "https://slack.com/api/"),
    # Hosts Teams and webhook destinations may post to, written as ALLOWED_SOURCE_HOSTS (host
    # names, ".example.com", IP addresses, networks) and checked the same way, on the open socket
    # too. Unset: loopback only with DEBUG on, nothing at all otherwise.
    "ALLOWED_DESTINATION_HOSTS": env_list(
        "REPORTING_ALLOWED_DESTINATION_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else []
    ),
    # A destination's send is tried at most this many times when it answers 429 or 5xx (or cannot be
    # reached), waiting between tries with exponential backoff and jitter from the base delay, at least
    # its Retry-After and at most the longest delay; one that asks for longer fails in words. The worker
    # waits in its task (its lease renewed), at most (attempts - 1) x the longest delay per delivery in
    # all (Slack makes several requests): keep that well under CELERY_TASK_SOFT_TIME_LIMIT.
    "DESTINATION_MAX_ATTEMPTS": env_int("REPORTING_DESTINATION_MAX_ATTEMPTS", 4, minimum=1),
    "DESTINATION_RETRY_BASE_SECONDS": env_int("REPORTING_DESTINATION_RETRY_BASE_SECONDS", 2, minimum=1),
    "DESTINATION_RETRY_MAX_SECONDS": env_int("REPORTING_DESTINATION_RETRY_MAX_SECONDS", 30, minimum=1),
    # Seconds to wait for a destination's connection and for its answer.
    "DESTINATION_TIMEOUT_SECONDS": env_int("REPORTING_DESTINATION_TIMEOUT_SECONDS", 30, minimum=1),
    # Failure alerts: at most one email per address in this many minutes (a digest of every
    # run that failed, was held or was missed meanwhile).
    "ALERT_INTERVAL_MINUTES": env_int("REPORTING_ALERT_INTERVAL_MINUTES", 15, minimum=1),
    # /healthz fails when beat's last tick is older than this.
    "BEAT_MAX_SILENCE_SECONDS": env_int("REPORTING_BEAT_MAX_SILENCE_SECONDS", 180, minimum=10),
    # Retention: runs are kept this long; their data snapshots and attachments a shorter time.
    # A run on legal hold is never pruned.
    "RUN_RETENTION_DAYS": env_int("REPORTING_RUN_RETENTION_DAYS", 400, minimum=1),
    "FILE_RETENTION_DAYS": env_int("REPORTING_FILE_RETENTION_DAYS", 90, minimum=1),
    # A report's own sender: the domains its From address may be at; recipients at the company's
    # own domains get no List-Unsubscribe header (see the email section above).
    "SENDER_DOMAINS": _SENDER_DOMAINS,
    "INTERNAL_DOMAINS": _INTERNAL_DOMAINS,
}
if REPORTING["FILE_RETENTION_DAYS"] > REPORTING["RUN_RETENTION_DAYS"]:
    raise ImproperlyConfigured(
        "REPORTING_FILE_RETENTION_DAYS must not be longer than REPORTING_RUN_RETENTION_DAYS: "
        "a run's files go with the run."
    )

# Failure alerts go to a report's owner, or to these addresses when it has none:
# ADMINS="Ops <ops@example.com>, cfo@example.com".
ADMINS = [parseaddr(entry) for entry in env_list("ADMINS", [])]

# --- observability (README "Observability") ----------------------------------------------
# Log lines as JSON objects (python-json-logger) for a log pipeline, or plain text; either way each line
# written while a run is worked on carries run_id and report_id (part_id for a recipient's part).
LOG_FORMAT = env_choice("REPORTING_LOG_FORMAT", "plain", ["plain", "json"])
# /metrics (Prometheus) answers a request with "Authorization: Bearer <this>", or a staff user with
# "view report run"; with no token set it answers 404 to anyone else.
METRICS_TOKEN = env_str("REPORTING_METRICS_TOKEN", "")
# Errors and a cron check-in per scheduled run to Sentry, when set (reporting/observability.py).
SENTRY_DSN = env_str("SENTRY_DSN", "")
SENTRY_ENVIRONMENT = env_str("SENTRY_ENVIRONMENT", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "reporting.logs.JsonFormatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    # Every form of every data-source secret is redacted from what is logged (a library's
    # message or a traceback may quote a URL or a header).
    "filters": {
        "secrets": {"()": "reporting.pipeline.fetch.SecretLogFilter"},
        "run_ids": {"()": "reporting.logs.RunContextFilter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["secrets", "run_ids"]}
    },
    "loggers": {
        "reporting": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
        # WeasyPrint warns of every Outlook-only style in the email's HTML, and logs each URL it was
        # refused (API data, by design never fetched): a PDF that cannot be made fails its run in words.
        "weasyprint": {"level": "CRITICAL"},
    },
}
