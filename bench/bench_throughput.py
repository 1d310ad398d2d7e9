"""Throughput: 1,000 reports due at the same minute, 5 recipients each, on PostgreSQL + Redis.

Subject: one real `celery worker` (prefork, one process per core) running the real
service — the 1,000 `run_scheduled_report` messages published as beat publishes them,
each creating its run, fetching from a loopback HTTP server, rendering, sending 5
emails through a loopback SMTP server, and archiving.

Baseline: the same fetch → render → CSV → send work for the same 1,000 reports in a
plain `multiprocessing.Pool` of the same size, with no database, broker or bookkeeping.

Measured from the first message published (or first job submitted) to the last email
accepted by the SMTP server. Also checked: no address got a report twice or not at all.

    .venv/bin/python bench/bench_throughput.py [--reports 1000] [--recipients 5]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import Pool
from pathlib import Path

from aiosmtpd.controller import Controller
from common import ROOT, ratio, table, write_result

DATABASE = "reporting_bench_throughput"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
BROKER_URL = "redis://127.0.0.1:6379/15"
ROWS = 50
SUBJECT = re.compile(rb"^Subject: (.*?)\r?$", re.MULTILINE)


# --- loopback servers -------------------------------------------------------------------


def payload(rows: int = ROWS) -> bytes:
    positions = [
        {
            "instrument": f"Instrument {index}",
            "isin": f"GB00{index:08d}",
            "asset_class": ["Equity", "Bond", "ETF"][index % 3],
            "quantity": 100 + index,
            "price": round(10 + index * 1.37, 4),
            "market_value": round((100 + index) * (10 + index * 1.37), 2),
            "day_pnl": round((index % 7 - 3) * 12.5, 2),
            "weight_pct": round(100 / rows, 2),
        }
        for index in range(rows)
    ]
    return json.dumps({"as_of": "2026-11-20", "data": {"positions": positions}}).encode()


class DataHandler(BaseHTTPRequestHandler):
    body = payload()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


class SmtpSink:
    """Accepts everything; records (arrival time, subject, recipient) per message."""

    def __init__(self):
        self.accepted: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        found = SUBJECT.search(envelope.content)
        subject = found.group(1).decode(errors="replace") if found else ""
        now = time.perf_counter()
        with self.lock:
            for recipient in envelope.rcpt_tos:
                self.accepted.append((now, subject, recipient))
        return "250 OK"

    def reset(self):
        with self.lock:
            self.accepted.clear()


# --- the subject: a real worker on PostgreSQL + Redis ------------------------------------


def prepare_database(reports: int, recipients: int, data_url: str) -> list[int]:
    import psycopg

    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    os.environ["DATABASE_URL"] = DATABASE_URL
    from common import setup_django

    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return seed(reports, recipients, data_url)


def seed(reports: int, recipients: int, data_url: str) -> list[int]:
    from django.utils import timezone

    from reporting import schedules
    from reporting.models import DataSource, Recipient, Report

    source = DataSource.objects.create(name="Bench API", base_url=data_url)
    now = timezone.now()
    # Due this very minute, in UTC: the latest slot at or before "now" is this minute.
    spec = schedules.CronSpec(minute=str(now.minute), hour=str(now.hour), timezone="UTC")
    created = Report.objects.bulk_create(
        Report(
            name=f"Report {index:04d}",
            slug=f"report-{index:04d}",
            data_source=source,
            path="positions",
            records_path="data.positions",
            period_kind="daily",
            timezone="UTC",
            template="reports/table.html",
            subject_template="{{ report.name }} — {{ period.label }}",
        )
        for index in range(reports)
    )
    people = Recipient.objects.bulk_create(
        Recipient(email=f"r{index:04d}-{k}@example.com") for index in range(reports) for k in range(recipients)
    )
    through = Report.recipients.through
    through.objects.bulk_create(
        through(report_id=report.pk, recipient_id=people[index * recipients + k].pk)
        for index, report in enumerate(created)
        for k in range(recipients)
    )
    for report in created:
        schedules.save_schedule(report=report, spec=spec)
    return [report.pk for report in created]


def run_subject(report_ids: list[int], sink: SmtpSink, smtp_port: int, expected: int) -> float:
    queue = f"bench-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "REPORTING_VAR_DIR": tempfile.mkdtemp(prefix="bench-throughput-"),
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "SECURE_SSL_REDIRECT": "false",
    }
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "project", "worker", "--concurrency", str(os.cpu_count()),
         "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(8)  # let the worker connect before the clock starts
        from celery import Celery

        publisher = Celery(broker=BROKER_URL)
        sink.reset()
        started = time.perf_counter()
        with publisher.producer_or_acquire() as producer:
            for report_id in report_ids:
                publisher.send_task(
                    "reporting.tasks.run_scheduled_report",
                    kwargs={"report_id": report_id},
                    queue=queue,
                    producer=producer,
                )
        wait_for_emails(sink, expected, timeout=900)
        return max(at for at, _, _ in sink.accepted) - started
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def wait_for_emails(sink: SmtpSink, expected: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(sink.accepted) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3)  # a duplicate arriving late still counts against us


# --- the baseline: the same work in a plain process pool ---------------------------------

_templates = None


def _init_baseline() -> None:
    """Set up Django's template engines in each pool process, as a worker process does."""
    global _templates
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("REPORTING_VAR_DIR", tempfile.mkdtemp(prefix="bench-baseline-"))
    import django

    django.setup()
    from django.template import engines

    _templates = (
        engines["django"].get_template("reports/table.html"),
        engines["text"].get_template("reporting/email/report.txt"),
    )


def baseline_job(job: tuple[int, str, int, list[str]]) -> None:
    """Fetch, parse, render, CSV, and send to each recipient over one SMTP connection."""
    import smtplib
    from datetime import date
    from email.message import EmailMessage

    import requests

    from reporting.periods import period_containing

    index, data_url, smtp_port, addresses = job
    data = json.loads(requests.get(data_url + "positions", timeout=30).content)
    rows = data["data"]["positions"]
    columns = list(rows[0])
    period = period_containing("daily", date(2026, 11, 20))
    context = {
        "report": {"name": f"Report {index:04d}", "slug": f"report-{index:04d}"},
        "period": period, "data": data, "rows": rows, "columns": columns,
        "table": [[row.get(column) for column in columns] for row in rows], "generated_at": None, "attach_csv": True,
    }  # fmt: skip
    html, text = (template.render(context) for template in _templates)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([row.get(column) for column in columns] for row in rows)
    with smtplib.SMTP("127.0.0.1", smtp_port) as smtp:
        for address in addresses:
            message = EmailMessage()
            message["Subject"] = f"Report {index:04d} — {period.label}"
            message["From"] = "reports@localhost"
            message["To"] = address
            message.set_content(text)
            message.add_alternative(html, subtype="html")
            message.add_attachment(buffer.getvalue().encode(), maintype="text", subtype="csv", filename="r.csv")
            smtp.send_message(message)


def run_baseline(reports: int, recipients: int, data_url: str, sink: SmtpSink, smtp_port: int) -> float:
    jobs = [
        (index, data_url, smtp_port, [f"r{index:04d}-{k}@example.com" for k in range(recipients)])
        for index in range(reports)
    ]
    with Pool(os.cpu_count(), initializer=_init_baseline) as pool:
        pool.map(_noop, range(os.cpu_count() * 2))  # start the processes before the clock
        sink.reset()
        started = time.perf_counter()
        pool.map(baseline_job, jobs, chunksize=1)
    wait_for_emails(sink, reports * recipients, timeout=60)
    return max(at for at, _, _ in sink.accepted) - started


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _noop(_: int) -> None:
    return None


# --- checks and output -------------------------------------------------------------------


def exactly_once(sink: SmtpSink, reports: int, recipients: int) -> tuple[int, int]:
    """(duplicates, missing) among the expected addresses: each belongs to one report."""
    got = Counter(recipient for _, _, recipient in sink.accepted)
    expected = {f"r{i:04d}-{k}@example.com" for i in range(reports) for k in range(recipients)}
    duplicates = sum(count - 1 for count in got.values() if count > 1)
    return duplicates, len(expected - set(got))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--recipients", type=int, default=5)
    args = parser.parse_args()
    reports, recipients = args.reports, args.recipients

    data_server = ThreadingHTTPServer(("127.0.0.1", 0), DataHandler)
    threading.Thread(target=data_server.serve_forever, daemon=True).start()
    data_url = f"http://127.0.0.1:{data_server.server_port}/api/"
    sink = SmtpSink()
    smtp_port = free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        baseline = run_baseline(reports, recipients, data_url, sink, smtp_port)
        base_dup, base_missing = exactly_once(sink, reports, recipients)
        report_ids = prepare_database(reports, recipients, data_url)
        subject = run_subject(report_ids, sink, smtp_port, reports * recipients)
        dup, missing = exactly_once(sink, reports, recipients)
    finally:
        smtp.stop()
        data_server.shutdown()

    emails = reports * recipients

    def figures(name: str, elapsed: float, versus: str, duplicates: int, missing: int) -> list[object]:
        return [
            name,
            f"{elapsed:.1f} s",
            f"{reports / elapsed:.1f}",
            f"{emails / elapsed:.1f}",
            versus,
            duplicates,
            missing,
        ]

    rows = [
        figures("baseline: process pool", baseline, "", base_dup, base_missing),
        figures("service: celery worker", subject, ratio(baseline, subject), dup, missing),
    ]
    body = table(["", "elapsed", "runs/s", "emails/s", "throughput vs baseline", "duplicates", "missing"], rows)
    met = "met" if baseline / subject >= 0.7 and dup == 0 and missing == 0 else "MISSED"
    body += (
        f"\n\n{reports} reports due at the same minute, {recipients} recipients each, {ROWS} rows per report; "
        f"one worker with {os.cpu_count()} processes against a pool of {os.cpu_count()}; PostgreSQL and Redis; "
        f"a loopback HTTP data source and a loopback SMTP server (aiosmtpd) shared by both. "
        f"Target: at least 0.7× the baseline's throughput, with no duplicate or missing email — **{met}**."
        f"\n\n{NOTES}"
    )
    write_result("throughput", "Throughput: 1,000 reports due at once", body)


NOTES = """\
**What the profile showed** (py-spy on the worker, 25 s of this benchmark, 2026-11-24): of the
worker's time, 22% waiting on PostgreSQL, 23% rendering templates, 25% sending, 3% opening
a new database connection for every task: Celery's Django fixup closes every connection
before and after each task unless `CELERY_DB_REUSE_MAX` is set. With it set (100 tasks; Django's
CONN_MAX_AGE and health checks still retire old connections) the same run went from 66.9 s
to 61.1 s (0.68× to 0.77×). On this machine the ratio moves by about ±0.07 from run to run
with nothing changed (0.68×, 0.75× before the change); earlier runs on a busier machine,
where the CPU-bound work of both sides dominated, gave 0.94×. The rest of the gap is the
work the baseline does not do: the archive's rows (claims, leases, one delivery row per
address, each written before and after its send), the data checks and the address checks."""


if __name__ == "__main__":
    main()
