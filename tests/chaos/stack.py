"""The production stack as real processes: gunicorn, two Celery workers, two beats and a broker.

Each process runs in its own process group (tests/e2e/conftest.py's Processes) and is
named by its role and incarnation ("worker-a.3": the third start of worker A), each with
its own log. `stop()` stops every one of them, also after a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import time
from pathlib import Path

from tests.e2e.conftest import BIN, Processes, free_port, wait_for

from .plan import WORKERS

BEATS = ("beat-a", "beat-b")
LEADING, STANDING_BY = "now leading", "standing by"
READY = {"worker": "ready.", "beat": "beat: Starting", "broker": "Ready to accept connections"}


def stack_environment(*, database_url: str, broker_url: str, smtp_port: int, work_dir: Path) -> dict[str, str]:
    """Production settings with short timers, so that the stack settles in minutes."""
    own = ("DJANGO_", "CELERY_", "PYTEST", "DATABASE_URL", "EMAIL_", "REPORTING_")
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(own)}
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_TASK_DEFAULT_QUEUE": f"chaos-{secrets.token_hex(4)}",
        "CELERY_VISIBILITY_TIMEOUT": "15",
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "EMAIL_TIMEOUT": "4",
        "MEDIA_ROOT": str(work_dir / "media"),
        "REPORTING_VAR_DIR": str(work_dir / "var"),
        "STATIC_ROOT": str(work_dir / "static"),
        "REPORTING_RUN_LEASE_SECONDS": "8",
        "REPORTING_FETCH_RETRY_BASE_SECONDS": "1",
        "REPORTING_FETCH_RETRY_MAX_SECONDS": "3",
        "REPORTING_FETCH_MAX_RETRIES": "2",
        "REPORTING_RUN_QUEUE_DEADLINE_SECONDS": "30",
        "REPORTING_CATCH_UP_GRACE_SECONDS": "40",
        "REPORTING_ALERT_INTERVAL_MINUTES": "1",
        "REPORTING_ALLOWED_SOURCE_HOSTS": "127.0.0.1,localhost",
        "REPORTING_SITE_URL": "http://127.0.0.1:8000",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        "PYTHONUNBUFFERED": "1",
    }


class Stack:
    """Starts, kills and restarts the stack's processes; the fault runner drives it."""

    def __init__(self, *, work_dir: Path, database_url: str, smtp_port: int):
        self.redis_server = shutil.which("redis-server")
        if self.redis_server is None:
            raise RuntimeError("redis-server is not installed: the chaos broker is a redis-server of its own")
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.broker_port = free_port()
        self.web_port = free_port()
        env = stack_environment(
            database_url=database_url,
            broker_url=f"redis://127.0.0.1:{self.broker_port}/0",
            smtp_port=smtp_port,
            work_dir=work_dir,
        )
        self.processes = Processes(self.log_dir, env)
        self.live: dict[str, str] = {}  # role → name of its running incarnation
        self.incarnations: dict[str, int] = {}
        self.exited_by_themselves: list[str] = []

    # --- starting -------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything and wait until each process says it is ready."""
        self.start_broker()
        self.processes.web(self.web_port)
        for role in WORKERS:
            self.start_worker(role)
        for role in BEATS:
            self.start_beat(role)
        for role, name in self.live.items():
            kind = role.split("-")[0]
            if kind in READY:
                self.wait_ready(name, READY[kind], timeout=90)

    def start_broker(self) -> None:
        name = self._next_name("broker")
        argv = [self.redis_server, "--port", str(self.broker_port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.work_dir)]
        self.processes.start(name, argv, ready=READY["broker"])

    def start_worker(self, role: str) -> None:
        name = self._next_name(role)
        argv = [str(BIN / "celery"), "-A", "project", "worker", "-n", f"{name}@%h", "--loglevel", "INFO"]
        argv += ["--concurrency", "2", "--without-gossip", "--without-mingle"]
        self.processes.start(name, argv)

    def start_beat(self, role: str) -> None:
        name = self._next_name(role)
        argv = [str(BIN / "celery"), "-A", "project", "beat", "--loglevel", "INFO", "--max-interval", "1"]
        argv += ["--pidfile", ""]
        self.processes.start(name, argv)

    def wait_ready(self, name: str, marker: str, *, timeout: float) -> None:
        process = self.processes.running[name]
        wait_for(
            lambda: marker in self.processes.log(name) or process.poll() is not None,
            timeout=timeout,
            what=f"{name} to start",
        )
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited at start:\n{self.processes.log(name)[-3000:]}")

    def _next_name(self, role: str) -> str:
        self.incarnations[role] = self.incarnations.get(role, 0) + 1
        name = f"{role}.{self.incarnations[role]}"
        self.live[role] = name
        return name

    # --- faults ---------------------------------------------------------------------------

    def kill(self, role: str) -> str:
        """SIGKILL the role's process group; returns the name of the incarnation killed."""
        name = self.live.pop(role)
        with contextlib.suppress(ProcessLookupError):
            self.processes.kill(name, signal.SIGKILL)
        return name

    def leading_beat(self) -> str | None:
        """The beat whose log last said it leads, or None when no beat says (no leader election)."""
        for role in BEATS:
            name = self.live.get(role)
            if name and _last_status(self.processes.log(name)) == LEADING:
                return role
        return None

    def restart_missing(self) -> list[str]:
        """Start whatever is not running (killed, or exited by itself); returns the roles started."""
        started = []
        for role, name in list(self.live.items()):
            process = self.processes.running.get(name)
            if process is not None and process.poll() is not None:
                self.exited_by_themselves.append(f"{name} (exit code {process.returncode})")
                self.processes.running.pop(name)
                del self.live[role]
        for role in ("broker", *WORKERS, *BEATS):
            if role not in self.live:
                self.start_role(role)
                started.append(role)
        return started

    def start_role(self, role: str) -> None:
        if role == "broker":
            self.start_broker()
        elif role in WORKERS:
            self.start_worker(role)
        else:
            self.start_beat(role)

    def wait_all_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for role, name in self.live.items():
            kind = role.split("-")[0]
            if kind in READY:
                self.wait_ready(name, READY[kind], timeout=max(1.0, deadline - time.monotonic()))

    # --- the end --------------------------------------------------------------------------

    def stop(self) -> None:
        self.processes.stop_all()
        self.live.clear()

    def logs(self) -> str:
        return self.processes.dump_logs()


def _last_status(log: str) -> str | None:
    """The last of "now leading" / "standing by" in a beat's log."""
    found = re.findall(rf"({LEADING}|{STANDING_BY})", log)
    return found[-1] if found else None
