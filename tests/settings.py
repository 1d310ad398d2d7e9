"""Test settings: the project's own, with an in-process Celery broker for worker tests.

Tests of the production stack (tests/e2e/) start real processes with project.settings
and real brokers; everything else talks to the broker only through a worker thread.
"""

from project.settings import *  # noqa: F403

CELERY_BROKER_URL = "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}

# Serve static files from the apps, as in development: tests do not run collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

# On SQLite, test against a file (WAL, busy timeout) rather than Django's shared-cache
# in-memory database, whose table locks fail a worker thread and the test writing at once.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    import os
    import tempfile

    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"reporting-tests-{os.getpid()}.sqlite3")
    }

# Data sources in tests are real servers on loopback (pytest-httpserver, the demo API).
REPORTING = {**REPORTING, "ALLOWED_SOURCE_HOSTS": ["localhost", "127.0.0.1", "::1"]}  # noqa: F405
