"""Which beat leads: one lock per database, which dies with the process holding it.

Any number of beats may run. The one holding the lock leads (reporting.beat publishes only
then); the others stand by and try to take it every few seconds. Nobody has to clean up
after a leader that died, however it died (SIGKILL included): its lock went with it.

- PostgreSQL (production): a session-level advisory lock, on a connection of the lock's
  own. Django's connection would not do: close_old_connections() closes it between ticks,
  and the session's locks with it. Advisory locks are scoped to their database, so
  installations (or parallel test databases) on one server never block each other.
- SQLite (the embedded default): flock() on `beat.lock` under REPORTING_VAR_DIR, beside
  the database. The kernel drops it when the process's descriptor closes, i.e. when the
  process dies. It excludes beats on the same machine only, which is where the beats of
  an SQLite database run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections

from reporting import conf

log = logging.getLogger(__name__)

# Any fixed bigint will do (advisory locks are per database); this one is beat's alone:
# the first 8 bytes of sha256(b"reporting.beat leader"), signed.
ADVISORY_LOCK_KEY = 7_517_044_274_819_210_843
LOCK_FILE_NAME = "beat.lock"
APPLICATION_NAME = "reporting beat lock"  # how the lock's session shows in pg_stat_activity
CONNECT_TIMEOUT_SECONDS = 5
# A leader whose machine vanishes (power, network) sends no FIN; the server only learns of
# it by TCP keepalive, after two hours by the OS's defaults. These make it ~25 s.
SERVER_KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
DJANGO_ONLY_PARAMS = ("cursor_factory", "context")  # Django's own objects, not connection settings


class Leadership(Protocol):
    """A lock that at most one process holds at a time, released when its holder dies."""

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it, without waiting; True if this holder has it."""
        ...

    def still_held(self) -> bool:
        """Whether this holder still has the lock (False once lost, e.g. with its connection)."""
        ...

    def release(self) -> None:
        """Let go of the lock, if held; another holder may take it at once."""
        ...


def for_database(using: str = DEFAULT_DB_ALIAS) -> Leadership:
    """The beat lock of database `using`: an advisory lock on PostgreSQL, a lock file otherwise."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        return AdvisoryLock(postgresql_params(connection.get_connection_params()))
    if connection.vendor != "sqlite":
        log.warning("beat: no lock across machines on %s; a lock file keeps one beat per machine", connection.vendor)
    return FileLock(conf.var_dir() / LOCK_FILE_NAME)


def postgresql_params(django_params: dict[str, Any]) -> dict[str, Any]:
    """psycopg.connect() arguments from Django's (DatabaseWrapper.get_connection_params())."""
    return {name: value for name, value in django_params.items() if name not in DJANGO_ONLY_PARAMS}


class FileLock:
    """An exclusive flock() on `path`, held while this object keeps the file open."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None and self.still_held():
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Each open() is a file description of its own, so two holders conflict even in one
        # process. A child would share it (and keep the lock) only if forked: beat forks none,
        # and Python's descriptors are closed on exec.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who leads, for a person looking
        return True

    def still_held(self) -> bool:
        """Held while the file is open, unless it was removed or replaced: another beat would lock the new one."""
        if self._fd is None:
            return False
        try:
            same_file = os.path.samestat(os.fstat(self._fd), os.stat(self.path))
        except FileNotFoundError:
            same_file = False
        if not same_file:
            self.release()
        return same_file

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # the only descriptor of this open file: the lock goes with it

    def __repr__(self) -> str:
        return f"FileLock({str(self.path)!r})"


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock, on an autocommit connection of its own.

    The lock lasts as long as the session: when the holder dies, its socket closes and the
    server ends the session and drops the lock. A standby keeps its connection between tries.
    """

    def __init__(self, params: dict[str, Any], *, key: int = ADVISORY_LOCK_KEY) -> None:
        self.params = params
        self.key = key
        self._connection: psycopg.Connection | None = None
        self._held = False

    def try_acquire(self) -> bool:
        if self._held and self.still_held():
            return True
        try:
            connection = self._connection or self._connect()
            [self._held] = connection.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()  # type: ignore[misc]
        except psycopg.Error as exc:
            log.warning("beat: could not ask PostgreSQL for the beat lock, trying again later: %s", exc)
            self._disconnect()
            return False
        return self._held

    def still_held(self) -> bool:
        """The session's lock cannot be taken from it: held while the connection still answers."""
        if not self._held or self._connection is None:
            return False
        try:
            self._connection.execute("SELECT 1")
        except psycopg.Error as exc:
            log.warning("beat: the beat lock's connection is gone: %s", exc)
            self._disconnect()
            return False
        return True

    def release(self) -> None:
        if self._held and self._connection is not None:
            # Closing ends the session and its locks, except behind a pooler that keeps sessions.
            with contextlib.suppress(psycopg.Error):
                self._connection.execute("SELECT pg_advisory_unlock(%s)", [self.key])
        self._disconnect()

    def _connect(self) -> psycopg.Connection:
        defaults = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": APPLICATION_NAME}
        connection = psycopg.connect(**{**defaults, **self.params}, autocommit=True)
        for name, value in SERVER_KEEPALIVES.items():
            connection.execute("SELECT set_config(%s, %s, false)", [name, value])
        self._connection = connection
        return connection

    def _disconnect(self) -> None:
        self._held = False
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                connection.close()

    def __repr__(self) -> str:
        return f"AdvisoryLock(database={self.params.get('dbname')!r}, key={self.key})"
