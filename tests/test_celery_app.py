"""The Celery app: every task runs at the start of a frame stack of its own (project.celery.ReportingTask)."""

import resource
import sys
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest

from project.celery import ReportingTask, call_with_stack_room
from reporting import tasks
from reporting.services import runs
from tests.test_tasks import wait_for, worker  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]
CALLS = 500


def _leaf(total: int) -> int:
    return total + 1


def _hot_loop() -> int:
    """A loop that calls a small function CALLS times, as rendering a table calls a node per cell."""
    total = 0
    for _ in range(CALLS):
        total = _leaf(total)
    return total


def _below(depth: int, function, *args):
    """`function(*args)` called `depth` frames further down."""
    return _below(depth - 1, function, *args) if depth else function(*args)


def _shims() -> list[types.FunctionType]:
    """One more frame at the bottom, in 20 sizes: with the depths, every offset within a chunk is reached."""

    def shim(function, *args):
        return function(*args)

    code = shim.__code__
    return [types.FunctionType(code.replace(co_stacksize=code.co_stacksize + extra), globals()) for extra in range(20)]


def _worst_page_faults(run_hot_loop) -> int:
    worst = 0
    for shim in _shims():
        for depth in range(200):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            _below(depth, shim, run_hot_loop)
            worst = max(worst, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return worst


def test_it_calls_the_function_with_its_arguments():
    assert call_with_stack_room(lambda a, b=0: (a, b), (1,), {"b": 2}) == (1, 2)


def test_a_loop_run_through_it_pays_no_page_fault_per_call_at_any_depth():
    assert _worst_page_faults(lambda: call_with_stack_room(_hot_loop, (), {})) < CALLS / 10


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="recent CPython caches a chunk (python/cpython#142183)")
def test_without_it_some_depth_pays_a_page_fault_per_call():
    """The control: CPython 3.11's frame stack unmaps and maps a chunk on every call across its end."""
    assert _worst_page_faults(_hot_loop) >= CALLS


def test_every_task_of_the_app_is_a_reporting_task():
    assert isinstance(tasks.run_scheduled_reports, ReportingTask)
    assert isinstance(tasks.execute_run, ReportingTask)
    assert isinstance(tasks.enforce_run_deadlines, ReportingTask)


def test_a_worker_runs_a_task_through_it(worker, monkeypatch):  # noqa: F811
    seen = []

    def record(**kwargs):
        frame, names = sys._getframe(), []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        seen.append(names)

    monkeypatch.setattr(runs, "run_scheduled_batch", record)
    tasks.run_scheduled_reports.delay(report_ids=[], fired_at=datetime.now(UTC).isoformat())
    wait_for(lambda: seen)

    assert "call_with_stack_room" in seen[0]


def test_a_worker_loads_the_urlconf_before_its_first_task():
    # A linked file's address is reversed at its first run; the first reverse imports every URL's
    # module (the admin, the API): done once, before the pool forks, not in each pool process's run.
    import subprocess

    started = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
from celery import signals
from project.celery import app
import django
django.setup()
before = "project.urls" in sys.modules
signals.worker_init.send(sender=None)
print(before, "project.urls" in sys.modules, "reporting.api.urls" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", started], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True"]
