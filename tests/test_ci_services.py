"""`.ci/services`, which `make test` runs first: a missing service is named before any test runs.

Each test points the script at ports nothing listens on and at a PATH of its own, so the machine's
real PostgreSQL, Redis and RabbitMQ are neither seen nor touched.
"""

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "services"
BASH = shutil.which("bash") or "/bin/bash"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(bin_dir: Path, tmp_path: Path, **ports: int) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": str(bin_dir),
        "CHECK_POSTGRES_PORT": str(ports.get("postgres") or _closed_port()),
        "CHECK_REDIS_PORT": str(ports.get("redis") or _closed_port()),
        "CHECK_RABBITMQ_PORT": str(ports.get("rabbitmq") or _closed_port()),
        "CHECK_POSTGRES_CONF_DIR": str(tmp_path / "no-postgresql"),
    }
    return subprocess.run([BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=90)


def test_it_names_each_missing_service_and_how_to_get_it_and_exits_1(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()

    result = _run(empty_bin, tmp_path)

    assert result.returncode == 1
    assert "3 cannot be started here" in result.stderr
    assert "PostgreSQL is not installed" in result.stderr and "apt-get install postgresql" in result.stderr
    assert "Redis is not installed" in result.stderr and "apt-get install redis-server" in result.stderr
    assert "RabbitMQ is not installed" in result.stderr and "apt-get install rabbitmq-server" in result.stderr
    assert "make test-sqlite" in result.stderr
    assert "starting" not in result.stdout, "nothing is started when one service cannot be"


def test_it_names_only_the_missing_one_when_the_others_are_up(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    with socket.socket() as postgres, socket.socket() as redis:
        for listener in (postgres, redis):
            listener.bind(("127.0.0.1", 0))
            listener.listen()
        result = _run(empty_bin, tmp_path, postgres=postgres.getsockname()[1], redis=redis.getsockname()[1])

    assert result.returncode == 1
    assert "1 cannot be started here" in result.stderr
    assert "RabbitMQ is not installed" in result.stderr
    assert "PostgreSQL" not in result.stderr.split(":", 1)[1] and "Redis is not" not in result.stderr


def test_it_starts_an_installed_service_that_is_stopped_and_waits_for_it(tmp_path):
    """A stand-in `redis-server` on PATH listens on the port it is given, as the real one would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The script waits with `sleep`: without it on PATH its 60 tries take milliseconds, fewer than a
    # loaded machine needs to start the stand-in (seen failing under a parallel test run).
    (bin_dir / "sleep").symlink_to(shutil.which("sleep") or "/bin/sleep")
    fake = bin_dir / "redis-server"
    pid_file = tmp_path / "fake-redis.pid"
    listener = (
        "import os, socket, sys; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen();"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); s.accept()"
    )
    fake.write_text(
        "#!/bin/bash\n"
        'while [ "$1" != --port ]; do shift; done\n'
        f'"{sys.executable}" -c "{listener}" "$2" </dev/null >/dev/null 2>&1 &\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with socket.socket() as postgres, socket.socket() as rabbitmq:
        for up in (postgres, rabbitmq):
            up.bind(("127.0.0.1", 0))
            up.listen()
        try:
            result = _run(bin_dir, tmp_path, postgres=postgres.getsockname()[1], rabbitmq=rabbitmq.getsockname()[1])
        finally:
            if pid_file.exists():  # it exits after the script's first connection; if not, it is ended here
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)

    assert result.returncode == 0, result.stderr
    assert "starting Redis" in result.stdout
    assert "Redis is up on port" in result.stdout and "RabbitMQ is up on port" in result.stdout
