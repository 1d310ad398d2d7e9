"""The short chaos run, in the normal test command: a few minutes of seeded faults, then the invariants.

The seed is random unless CHAOS_SEED is set; it is printed, and on failure the message says
how to run the same schedule again. tests/chaos/README.md explains the run and its table.
"""

from __future__ import annotations

import os
import random

import pytest
from django.db import connection

from tests.chaos.harness import run_chaos
from tests.chaos.plan import SHORT

pytestmark = pytest.mark.e2e


@pytest.fixture
def postgresql(transactional_db):
    """The test database, committed as the processes see it; PostgreSQL only, as the e2e tests."""
    if connection.vendor != "postgresql":
        pytest.skip("the chaos run needs PostgreSQL: make test-postgres")


def database_url() -> str:
    database = connection.settings_dict
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    return f"postgres://{database['USER']}{password}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


def test_no_email_is_lost_silently_or_sent_twice_under_a_seeded_schedule_of_faults(postgresql, tmp_path):
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 1_000_000))

    outcome = run_chaos(profile=SHORT, seed=seed, database_url=database_url(), work_dir=tmp_path, say=print)

    assert outcome.ok, outcome.failure_message()
