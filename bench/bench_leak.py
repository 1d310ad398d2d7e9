"""No leak: a worker's memory after 10,000 runs against its memory after 1,000, on PostgreSQL + Redis.

Subject: one real `celery worker` (prefork, one pool process, so every run goes through the
same process) running the real service: `--runs` "Run now" runs of 100 reports (one
recipient each, 50 rows of 8 columns: fetched from a loopback HTTP server, rendered with
the shipped table template and a CSV, sent through a loopback SMTP server, archived).
The first `--first` runs are published and waited for; the pool process's memory (RSS) is
read once it is idle; then the rest are published and waited for, and it is read again.

Baseline: the same fetch → render → CSV → send work in a plain `multiprocessing.Pool(1)`
(the service's own render call, `render.render` on `stage_inputs.render_request_for`, for
an unsaved report like the subject's; one SMTP connection per email), read at the same two
points: what the interpreter and the libraries do by themselves, without the service's
database, broker or bookkeeping.

Target (issue 16): the worker's memory after 10,000 runs within 10% of its memory after 1,000.

    .venv/bin/python bench/bench_leak.py [--runs 10000] [--first 1000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import date, timedelta
from http.server import ThreadingHTTPServer
from multiprocessing import Pool
from pathlib import Path

from aiosmtpd.controller import Controller
from bench_throughput import DataHandler, SmtpSink, free_port
from common import ROOT, ratio, table, write_result

DATABASE = "reporting_bench_leak"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
BROKER_URL = "redis://127.0.0.1:6379/14"
REPORTS = 100
TARGET = 1.10


def rss(pid: int) -> int:
    """Resident memory of one process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pool_process(worker_pid: int) -> int:
    """The worker's one pool process (its child)."""
    for _ in range(100):
        found = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
        if found:
            return int(found[0])
        time.sleep(0.1)
    raise RuntimeError("the worker started no pool process")


def prepare(data_url: str) -> list[int]:
    import psycopg

    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    os.environ["DATABASE_URL"] = DATABASE_URL
    from common import setup_django

    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from bench_throughput import seed

    return seed(REPORTS, 1, data_url)


def create_runs(report_ids: list[int], start: int, count: int) -> list[int]:
    """`count` manual runs, run `start` onwards: report by report, a day further back each round."""
    from reporting import runs

    made = []
    for index in range(start, start + count):
        day = date(2026, 11, 20) - timedelta(days=index // len(report_ids))
        report_id = report_ids[index % len(report_ids)]
        made.append(runs.create_manual_run(report_id=report_id, period_day=day, requested_by_id=None).pk)
    return made


def publish_and_wait(run_ids: list[int], queue: str, sink: SmtpSink, expected: int) -> None:
    from celery import Celery

    from reporting.models import ReportRun

    publisher = Celery(broker=BROKER_URL)
    with publisher.producer_or_acquire() as producer:
        for run_id in run_ids:
            kwargs = {"run_id": run_id}
            publisher.send_task("reporting.tasks.execute_run", kwargs=kwargs, queue=queue, producer=producer)
    deadline = time.monotonic() + 60 + len(run_ids) * 0.5
    while time.monotonic() < deadline:
        open_runs = ReportRun.objects.filter(status__in=ReportRun.WORKING).count()
        if not open_runs and len(sink.accepted) >= expected:
            break
        time.sleep(1)
    time.sleep(3)  # idle: the pool process has let go of what the last run held


def run_subject(report_ids: list[int], sink: SmtpSink, smtp_port: int, runs: int, first: int) -> dict:
    queue = f"bench-leak-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_port),
        "REPORTING_VAR_DIR": tempfile.mkdtemp(prefix="bench-leak-"),
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "SECURE_SSL_REDIRECT": "false",
    }
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "project", "worker", "--pool", "prefork",
         "--concurrency", "1", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        sink.reset()
        figures = {}
        for name, start, end in (("started", 0, 1), ("first", 1, first), ("all", first, runs)):
            publish_and_wait(create_runs(report_ids, start, end - start), queue, sink, end)
            child = figures.get("child") or pool_process(worker.pid)  # the one that made the first run
            figures.update({"child": child, name: (rss(child), rss(worker.pid))})
        figures["same pool process"] = figures["child"] == pool_process(worker.pid)
        return figures
    finally:
        worker.terminate()
        worker.wait(timeout=60)


_report = None


def _init_baseline() -> None:
    """Set up Django in the pool process, as a worker process does; the report as an unsaved model."""
    global _report
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("REPORTING_VAR_DIR", tempfile.mkdtemp(prefix="bench-leak-baseline-"))
    import django

    django.setup()
    from reporting.models import Report

    _report = Report(
        name="Report", slug="report", path="positions", records_path="data.positions", period_kind="daily",
        timezone="UTC", template="reports/table.html", subject_template="{{ report.name }} — {{ period.label }}",
        attach_csv=True,
    )  # fmt: skip


def baseline_job(job: tuple[int, str, int, list[str]]) -> None:
    """Fetch, parse, render (HTML, text, CSV) and send, as the service's run of one report does."""
    import json
    import smtplib
    from email.message import EmailMessage

    import requests

    from reporting.periods import period_containing
    from reporting.pipeline import render
    from reporting.stage_inputs import render_request_for

    index, data_url, smtp_port, addresses = job
    data = json.loads(requests.get(data_url + "positions", timeout=30).content)
    period = period_containing("daily", date(2026, 11, 20) - timedelta(days=index // REPORTS))
    rendered = render.render(render_request_for(_report, period, data))
    with smtplib.SMTP("127.0.0.1", smtp_port) as smtp:
        for address in addresses:
            message = EmailMessage()
            message["Subject"], message["From"], message["To"] = rendered.subject, "reports@localhost", address
            message.set_content(rendered.text)
            message.add_alternative(rendered.html, subtype="html")
            for attachment in rendered.attachments:
                maintype, subtype = attachment.mimetype.split("/", 1)
                message.add_attachment(
                    attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename
                )
            smtp.send_message(message)


def run_baseline(data_url: str, smtp_port: int, runs: int, first: int) -> dict:
    jobs = [(index, data_url, smtp_port, [f"baseline-{index}@example.com"]) for index in range(runs)]
    with Pool(1, initializer=_init_baseline) as pool:
        [process] = pool._pool  # the one pool process
        pool.map(baseline_job, jobs[:1], chunksize=1)
        figures = {"started": (rss(process.pid), 0)}
        pool.map(baseline_job, jobs[1:first], chunksize=1)
        figures["first"] = (rss(process.pid), 0)
        pool.map(baseline_job, jobs[first:], chunksize=1)
        figures["all"] = (rss(process.pid), 0)
    return figures


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--first", type=int, default=1_000)
    args = parser.parse_args()
    sink = SmtpSink()
    smtp_port = free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), DataHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    data_url = f"http://127.0.0.1:{http.server_address[1]}/api/"
    try:
        report_ids = prepare(data_url)
        print(f"baseline: {args.runs:,} jobs in Pool(1)", flush=True)
        baseline = run_baseline(data_url, smtp_port, args.runs, args.first)
        print(f"service: {args.runs:,} runs in one pool process", flush=True)
        sink.reset()
        subject = run_subject(report_ids, sink, smtp_port, args.runs, args.first)
    finally:
        smtp.stop()
        http.shutdown()
    got = Counter((subject, recipient) for _, subject, recipient in sink.accepted)  # a run: its report and period
    duplicates = sum(count - 1 for count in got.values() if count > 1)
    report(args, subject, baseline, duplicates=duplicates, received=len(got))


def report(args, subject: dict, baseline: dict, *, duplicates: int, received: int) -> None:
    from reporting.models import ReportRun

    statuses = dict(Counter(ReportRun.objects.values_list("status", flat=True)))
    first, everything = f"{args.first:,}", f"{args.runs:,}"
    rows = [
        ["service: the worker's pool process", mib(subject["started"][0]), mib(subject["first"][0]),
         mib(subject["all"][0]), ratio(subject["all"][0], subject["first"][0])],
        ["service: the worker's main process", mib(subject["started"][1]), mib(subject["first"][1]),
         mib(subject["all"][1]), ratio(subject["all"][1], subject["first"][1])],
        ["baseline: Pool(1) process", mib(baseline["started"][0]), mib(baseline["first"][0]),
         mib(baseline["all"][0]), ratio(baseline["all"][0], baseline["first"][0])],
    ]  # fmt: skip
    grown = subject["all"][0] / subject["first"][0]
    body = "\n".join(
        [
            table(["process", "after 1 run", f"after {first} runs", f"after {everything} runs", "ratio"], rows),
            "",
            f"- the pool process after {everything} runs: {ratio(subject['all'][0], subject['first'][0])} its memory "
            f"after {first} (target ≤ {TARGET:.2f}×: **{'met' if grown <= TARGET else 'MISSED'}**); the same pool "
            f"process throughout: {subject['same pool process']}",
            f"- runs: {statuses}; emails: {received:,} different (report, period, address) of {args.runs:,}, "
            f"{duplicates} duplicates",
            "",
            f"Command: `.venv/bin/python bench/bench_leak.py --runs {args.runs} --first {args.first}`. RSS from "
            "/proc, read with the process idle after each phase.",
        ]
    )
    write_result("leak", f"No leak: a worker's memory after {everything} runs against after {first}", body)


if __name__ == "__main__":
    main()
