"""Harness for end-to-end tests: real gunicorn, Celery workers and beat as subprocesses.

They share the test's PostgreSQL test database (pytest-django's `transactional_db`, so
what the test writes is committed and what the processes write is visible), a broker
of their own (a Redis database number and a queue name no developer uses), a real
HTTP data source and a real SMTP server on loopback. Every process is stopped at the
end of its test, also when the test fails; their logs are printed on failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/13")
RABBITMQ_URL = os.environ.get("E2E_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _postgresql_only(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("end-to-end tests run against PostgreSQL: make test-postgres")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Processes:
    """Starts subprocesses in their own process groups and always stops them."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.log_dir = log_dir
        self.env = env
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, ready: str | None = None):
        log_path = self.log_dir / f"{name}.log"
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running[name] = process
        if ready:
            wait_for(lambda: ready in self.log(name) or process.poll() is not None, timeout=60, what=f"{name} to start")
            if process.poll() is not None:
                raise AssertionError(f"{name} exited at start:\n{self.log(name)[-3000:]}")
        return process

    def worker(self, name: str, *, env: dict[str, str] | None = None, concurrency: int = 1):
        argv = [str(BIN / "celery"), "-A", "project", "worker", "-n", f"{name}@%h", "--loglevel", "INFO"]
        argv += ["--concurrency", str(concurrency), "--without-gossip", "--without-mingle"]
        return self.start(name, argv, env=env, ready="ready.")

    def beat(self, name: str = "beat", *, env: dict[str, str] | None = None):
        argv = [str(BIN / "celery"), "-A", "project", "beat", "--loglevel", "DEBUG", "--max-interval", "1"]
        argv += ["--pidfile", ""]  # the scheduler comes from settings: reporting.beat:ReportScheduler
        return self.start(name, argv, env=env, ready="beat: Starting")

    def web(self, port: int):
        collect = [str(BIN / "python"), "manage.py", "collectstatic", "--noinput", "-v0"]
        subprocess.run(collect, cwd=ROOT, env=self.env, check=True, timeout=120)
        argv = [str(BIN / "gunicorn"), "project.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
        process = self.start("web", argv)
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/admin/login/"), timeout=30, what="gunicorn")
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.running.pop(name)
        os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for process in self.running.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.running.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        self.running.clear()

    def dump_logs(self) -> str:
        return "\n".join(
            f"----- {path.name} -----\n{path.read_text(errors='replace')[-6000:]}"
            for path in sorted(self.log_dir.glob("*.log"))
        )


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


@pytest.fixture
def stack_env(settings, tmp_path, use_smtp) -> dict[str, str]:
    """The environment every process of the stack gets: production settings, test services."""
    database = connection.settings_dict
    queue = f"e2e-{uuid.uuid4().hex[:12]}"
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CELERY_", "PYTEST"))},
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": use_smtp.host,
        "EMAIL_PORT": str(use_smtp.port),
        "EMAIL_TIMEOUT": "30",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "REPORTING_VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "REPORTING_RUN_LEASE_SECONDS": "8",
        # The data sources are test servers on loopback; with DEBUG off nothing is allowed by default.
        "REPORTING_ALLOWED_SOURCE_HOSTS": "127.0.0.1,localhost,::1",
        "REPORTING_FETCH_RETRY_BASE_SECONDS": "1",
        "REPORTING_FETCH_RETRY_MAX_SECONDS": "2",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def stack(request, stack_env, tmp_path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = Processes(logs, stack_env)
    try:
        yield processes
    finally:
        processes.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(processes.dump_logs())
        _delete_queue(stack_env["CELERY_BROKER_URL"], stack_env["CELERY_TASK_DEFAULT_QUEUE"])


def _delete_queue(broker_url: str, queue: str) -> None:
    from kombu import Connection

    try:
        with Connection(broker_url, connect_timeout=3) as conn:
            conn.default_channel.queue_delete(queue)
    except Exception:  # a broker that is down at teardown has nothing left to clean
        pass


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def next_slot(*, lead: float = 15.0) -> datetime:
    """The first whole minute at least `lead` seconds from now."""
    moment = timezone.now() + timedelta(seconds=lead)
    return (moment + timedelta(minutes=1)).replace(second=0, microsecond=0)
