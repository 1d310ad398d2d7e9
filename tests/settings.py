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
