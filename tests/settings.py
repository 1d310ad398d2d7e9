"""Test settings: the project's own, with an in-process Celery broker for worker tests.

Tests of the production stack (tests/e2e/) start real processes with project.settings
and real brokers; everything else talks to the broker only through a worker thread.
"""

from project.settings import *  # noqa: F403

CELERY_BROKER_URL = "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
