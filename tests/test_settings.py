"""Configuration from the environment: strict readers, and a deployable production setup."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from project.env import env_bool, env_int, env_list

ROOT = Path(__file__).resolve().parents[1]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_", "DEBUG"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_reports_nothing_with_production_settings(tmp_path):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="reports.example.com",
        REPORTING_VAR_DIR=str(tmp_path),
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off(tmp_path):
    result = manage("check", DEBUG="false", SECRET_KEY="", REPORTING_VAR_DIR=str(tmp_path))

    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off." in result.stderr


def test_it_explains_a_database_url_it_cannot_read(tmp_path):
    result = manage("check", DATABASE_URL="mysqlx://nowhere", REPORTING_VAR_DIR=str(tmp_path))

    assert result.returncode != 0
    assert "DATABASE_URL is not a database URL Django understands" in result.stderr


@pytest.mark.parametrize(("setting", "expected"), [(None, "True"), ("false", "False")])
def test_postgresql_binds_parameters_on_the_server_unless_told_not_to(tmp_path, setting, expected):
    # So that psycopg prepares the statements a worker repeats for every run; off behind a pooler.
    env = {"DATABASE_SERVER_SIDE_BINDING": setting} if setting else {}
    shown = "from django.db import connection; print(connection.features.uses_server_side_binding)"
    database = "postgres://reports@db.invalid:5432/reports"
    result = manage("shell", "-c", shown, DATABASE_URL=database, REPORTING_VAR_DIR=str(tmp_path), **env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize(
    ("reader", "raw", "words"),
    [
        (lambda: env_bool("FLAG", False), "maybe", "FLAG must be one of"),
        (lambda: env_int("COUNT", 1), "ten", "COUNT must be a whole number, not 'ten'."),
        (lambda: env_int("COUNT", 1, minimum=5), "3", "COUNT must be at least 5, not 3."),
    ],
)
def test_the_readers_fail_loudly_on_bad_values(monkeypatch, reader, raw, words):
    monkeypatch.setenv("FLAG", raw)
    monkeypatch.setenv("COUNT", raw)

    with pytest.raises(ImproperlyConfigured, match=words):
        reader()


def test_the_readers_fall_back_to_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("FLAG", raising=False)
    monkeypatch.setenv("HOSTS", " a.example.com, ,b.example.com ")

    assert env_bool("FLAG", True) is True
    assert env_list("HOSTS", []) == ["a.example.com", "b.example.com"]
