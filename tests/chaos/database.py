"""A PostgreSQL database of the chaos run's own: created, migrated, dropped."""

from __future__ import annotations

import os
import secrets
import subprocess
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tests.e2e.conftest import BIN, ROOT

DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    """The PostgreSQL server to use: CHAOS_DATABASE_URL, DATABASE_URL or TEST_DATABASE_URL, else the local one."""
    for name in ("CHAOS_DATABASE_URL", "DATABASE_URL", "TEST_DATABASE_URL"):
        url = os.environ.get(name, "")
        if url.startswith(("postgres://", "postgresql://")):
            return url
    return DEFAULT_SERVER_URL


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _maintenance(url: str) -> psycopg.Connection:
    return psycopg.connect(with_database(url, "postgres").replace("postgres://", "postgresql://", 1), autocommit=True)


def create_database(url: str | None = None) -> str:
    """Create reporting_chaos_<random> on the server; returns its URL."""
    url = url or server_url()
    name = f"reporting_chaos_{secrets.token_hex(4)}"
    with _maintenance(url) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(url, name)


def migrate(database_url: str) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": database_url}
    subprocess.run(
        [str(BIN / "python"), "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=300
    )


def drop_database(database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    if not name.startswith("reporting_chaos_"):
        raise ValueError(f"refusing to drop {name!r}: not a chaos database")
    with _maintenance(database_url) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
