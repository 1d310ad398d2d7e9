"""make chaos: the seeded fault-injection run from the command line, on a database of its own.

    .venv/bin/python -m tests.chaos.run --long --seed 1234      # what `make chaos SEED=1234` runs
    .venv/bin/python -m tests.chaos.run --short                 # a few minutes, a random seed

Creates reporting_chaos_<random> on the PostgreSQL server (CHAOS_DATABASE_URL, DATABASE_URL
or postgres://postgres@127.0.0.1:5432), migrates it, runs, checks, prints the results
table (and writes it: tests/chaos/RESULTS.md for --long), and drops the database. Exits 1
when an invariant is violated or the harness could not finish.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    work_dir = Path(tempfile.mkdtemp(prefix=f"chaos-{options.profile}-{seed}-"))
    from . import database

    database_url = database.create_database()
    print(f"database {database_url.rsplit('/', 1)[-1]}; logs under {work_dir / 'logs'}", flush=True)
    try:
        database.migrate(database_url)
        outcome = _run(options.profile, seed, database_url, work_dir)
    finally:
        _close_django_connections()
        if options.keep_db:
            print(f"kept the database: {database_url}")
        else:
            database.drop_database(database_url)
    from .results import render

    text = render(outcome, command=outcome.rerun[0])
    print("\n" + text)
    results = options.results or (HERE / "RESULTS.md" if options.profile == "long" else None)
    if results:
        Path(results).write_text(text)
        print(f"wrote {results}")
    if outcome.ok and not options.keep_logs:
        shutil.rmtree(work_dir, ignore_errors=True)
    else:
        print(f"logs kept under {work_dir / 'logs'}")
    return 0 if outcome.ok else 1


def _run(profile_name: str, seed: int, database_url: str, work_dir: Path):
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ["DATABASE_URL"] = database_url
    os.environ["REPORTING_VAR_DIR"] = str(work_dir / "var")
    os.environ.setdefault("REPORTING_ALLOWED_SOURCE_HOSTS", "127.0.0.1,localhost")
    import django

    django.setup()
    from .harness import run_chaos
    from .plan import PROFILES

    started = time.monotonic()
    outcome = run_chaos(
        profile=PROFILES[profile_name], seed=seed, database_url=database_url, work_dir=work_dir, say=_say
    )
    _say(f"done in {time.monotonic() - started:.0f}s")
    return outcome


def _say(line: str) -> None:
    print(line, flush=True)


def _close_django_connections() -> None:
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", dest="profile", action="store_const", const="short", help="a few minutes (default)")
    size.add_argument("--long", dest="profile", action="store_const", const="long", help="200+ faults, ~25 minutes")
    parser.set_defaults(profile="short")
    parser.add_argument("--seed", type=int, help="the seed of the fault schedule (default: random, printed)")
    parser.add_argument("--results", help="write the results table here (default for --long: tests/chaos/RESULTS.md)")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs also when the run passes")
    return parser


if __name__ == "__main__":
    sys.exit(main())
