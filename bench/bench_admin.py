"""Admin at scale: the archive pages with 10,000 reports, 200,000 runs and 1,000,000 deliveries.

Subject: the real admin (`reporting/admin/`) on PostgreSQL, requested through Django's
test `Client` as a logged-in superuser, with production-like settings (DEBUG off, so no
query log). Pages: the report list; the run list unfiltered, filtered by status, by
report, by a month of the date hierarchy and with a search; a run's page; the resend
confirmation (the `resend` action posted without `confirm`, and its own URL).

Baselines, in the same run: a bare ORM fetch of the same rows (the page's 100 rows with
the same filter and ordering, or the one run and its deliveries), interleaved with the
page so that noise hits both alike; and, for the lists, Django's plain `ModelAdmin`
changelist of the same model (`list_select_related = ["report"]` for runs, else their
`__str__` costs a query per row) on a second admin site.

Measured per page: queries (counted once, with their database time), best and median
server time over 7 requests after a warm-up. Target: under 300 ms.

The database `reporting_bench_admin` is seeded with bulk SQL (`INSERT … SELECT … FROM
generate_series`) and reused while it holds the right counts; `--reseed` starts again.

    .venv/bin/python bench/bench_admin.py [--reseed] [--repeat 7] [--explain]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

from common import interleaved, measure, ms, ratio, setup_django, table, write_result

DATABASE = "reporting_bench_admin"
SERVER_URL = "postgres://postgres@127.0.0.1:5432"
REPORTS, RUNS, DELIVERIES_PER_RUN = 10_000, 200_000, 5
DATA_SOURCES, RECIPIENTS, RECIPIENT_LISTS = 10, 500, 5
TARGET_SECONDS = 0.300
PAGE_SIZE = 100  # the admin's list_per_page
VAR_DIR = Path(tempfile.gettempdir()) / "reporting_bench_admin"


# --- the database -------------------------------------------------------------------------


def expected_counts() -> dict[str, int]:
    return {
        "reporting_report": REPORTS,
        "reporting_reportrun": RUNS,
        "reporting_delivery": RUNS * DELIVERIES_PER_RUN,
    }


def existing_counts() -> dict[str, int] | None:
    """Row counts of the benchmark database, or None when it does not exist or is not migrated."""
    import psycopg

    try:
        with psycopg.connect(f"{SERVER_URL}/{DATABASE}") as connection:
            return {
                name: connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in expected_counts()
            }
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return None


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")


SCHEDULE_IDS_FROM = 1000  # the seeded schedules' ids start after this

SEED_SQL = [
    # Data sources, recipients, recipient lists.
    f"""INSERT INTO reporting_datasource (id, name, base_url, auth_scheme, auth_header_name, secret_env_var,
            connect_timeout, read_timeout, verify_tls)
        SELECT g, 'Bench API ' || g, 'https://api-' || g || '.example.internal/v1/', 'bearer', '', 'BENCH_TOKEN',
            5, 30, true
        FROM generate_series(1, {DATA_SOURCES}) g""",
    f"""INSERT INTO reporting_recipient (id, email, name, active)
        SELECT g + 1, 'person' || g || '@example.com', 'Person ' || g, true
        FROM generate_series(0, {RECIPIENTS - 1}) g""",
    f"""INSERT INTO reporting_recipientlist (id, name)
        SELECT g, 'Team ' || g FROM generate_series(1, {RECIPIENT_LISTS}) g""",
    f"""INSERT INTO reporting_recipientlist_recipients (recipientlist_id, recipient_id)
        SELECT l, 1 + (l * 20 + m) % {RECIPIENTS}
        FROM generate_series(1, {RECIPIENT_LISTS}) l, generate_series(0, 19) m""",
    # Schedules: one crontab and one periodic task per scheduled report, as save_schedule writes them
    # (their ids after those of the service's own sweeps, which the migrations install).
    f"""INSERT INTO django_celery_beat_crontabschedule (id, minute, hour, day_of_week, day_of_month, month_of_year,
            timezone)
        SELECT g + {SCHEDULE_IDS_FROM}, (g % 60)::text, (5 + g % 4)::text,
            CASE WHEN g % 10 IN (6, 7) THEN 'mon' ELSE '*' END,
            CASE WHEN g % 10 IN (8, 9) THEN '1' ELSE '*' END,
            CASE WHEN g % 10 = 9 THEN '1,4,7,10' ELSE '*' END,
            (ARRAY['Europe/London', 'America/New_York', 'Asia/Singapore', 'UTC'])[1 + g % 4]
        FROM generate_series(1, {REPORTS}) g WHERE g % 50 <> 0""",
    f"""INSERT INTO django_celery_beat_periodictask (id, name, task, args, kwargs, enabled, total_run_count,
            date_changed, description, crontab_id, one_off, headers)
        SELECT g + {SCHEDULE_IDS_FROM}, 'Report ' || g || ': bench', 'reporting.tasks.run_scheduled_report', '[]',
            '{{"report_id": ' || g || '}}', g % 25 <> 0, 0, now(), 'Runs the report.', g + {SCHEDULE_IDS_FROM}, false,
            '{{}}'
        FROM generate_series(1, {REPORTS}) g WHERE g % 50 <> 0""",
    # Reports: 60% daily, 20% weekly, 10% monthly, 10% quarterly; every 50th unscheduled, every 25th disabled.
    f"""INSERT INTO reporting_report (id, name, slug, description, path, query_params, records_path, period_kind,
            timezone, template, subject_template, attach_csv, enabled, created_at, updated_at, data_source_id,
            owner_id, periodic_task_id, email_max_rows)
        SELECT g,
            (ARRAY['Portfolio summary', 'Collections', 'Month-end book', 'Cash position', 'Risk exposure',
                   'Trade breaks', 'Fees and charges', 'Client activity'])[1 + g % 8] || ' — desk ' || g,
            'report-' || lpad(g::text, 5, '0'), '', 'positions', '{{}}', 'data.positions',
            CASE WHEN g % 10 < 6 THEN 'daily' WHEN g % 10 < 8 THEN 'weekly' WHEN g % 10 = 8 THEN 'monthly'
                 ELSE 'quarterly' END,
            (ARRAY['Europe/London', 'America/New_York', 'Asia/Singapore', 'UTC'])[1 + g % 4],
            'reports/table.html', '{{{{ report.name }}}} — {{{{ period.label }}}}', true, g % 25 <> 0, now(), now(),
            1 + g % {DATA_SOURCES}, NULL, CASE WHEN g % 50 <> 0 THEN g + {SCHEDULE_IDS_FROM} END, 100
        FROM generate_series(1, {REPORTS}) g""",
    f"""INSERT INTO reporting_report_recipients (report_id, recipient_id)
        SELECT g, 1 + (g * 3 + k) % {RECIPIENTS} FROM generate_series(1, {REPORTS}) g, generate_series(0, 1) k""",
    f"""INSERT INTO reporting_report_recipient_lists (report_id, recipientlist_id)
        SELECT g, 1 + g % {RECIPIENT_LISTS} FROM generate_series(1, {REPORTS}) g""",
    # Runs: round-robin over the reports, one every 5 minutes back from now (~1.9 years);
    # 2% failed, 2% partially sent, the newest 10 still sending; an archived email of ~4 kB.
    f"""INSERT INTO reporting_reportrun (id, report_id, period_start, period_end, period_key, scheduled_for, trigger,
            status, recipients, created_at, started_at, fetched_at, rendered_at, finished_at, attempts, error,
            error_detail, request_url, data_snapshot, row_count, subject, body_html, body_text)
        SELECT g, r.id, (t.at - interval '1 day')::date, (t.at - interval '1 day')::date, 'bench-' || g, t.at,
            CASE WHEN g % 20 = 0 THEN 'manual' ELSE 'schedule' END,
            CASE WHEN g > {RUNS - 10} THEN 'sending' WHEN g % 50 = 0 THEN 'failed'
                 WHEN g % 50 = 25 THEN 'partially_sent' ELSE 'sent' END,
            (SELECT jsonb_agg('person' || ((g + k * 97) % {RECIPIENTS}) || '@example.com')
             FROM generate_series(0, {DELIVERIES_PER_RUN - 1}) k),
            t.at, t.at, t.at + interval '2 seconds', t.at + interval '3 seconds',
            CASE WHEN g > {RUNS - 10} THEN NULL ELSE t.at + interval '9 seconds' END, 1,
            CASE WHEN g % 50 = 0 THEN 'The mail server refused every recipient: 550 mailbox unavailable.'
                 WHEN g % 50 = 25 THEN 'One address bounced.' ELSE '' END,
            CASE WHEN g % 50 = 0 THEN repeat('Traceback (most recent call last): smtplib.SMTPRecipientsRefused ', 16)
                 ELSE '' END,
            'https://api.example.internal/v1/positions?date=' || (t.at - interval '1 day')::date, '', 80,
            r.name || ' — ' || to_char(t.at - interval '1 day', 'DD Month YYYY'),
            '<html><body><h1>' || r.name || '</h1><table>'
                || repeat('<tr><td>Instrument ' || g % 997 || '</td><td>' || g % 9973 || '.25</td></tr>', 80)
                || '</table></body></html>',
            repeat('Instrument ' || g % 997 || '  ' || g % 9973 || '.25' || chr(10), 40)
        FROM generate_series(1, {RUNS}) g
        JOIN reporting_report r ON r.id = 1 + (g - 1) % {REPORTS}
        CROSS JOIN LATERAL (SELECT now() - ({RUNS} - g) * interval '5 minutes' AS at) t""",
    # Deliveries: one per address of each run, with an ESP message id and a status that fits the run's.
    f"""INSERT INTO reporting_delivery (run_id, address, kind, status, message_id, esp_status, error, created_at,
            sent_at, requested_by_id)
        SELECT r.id, 'person' || ((r.id + k * 97) % {RECIPIENTS}) || '@example.com', 'original',
            CASE WHEN r.status = 'failed' THEN 'failed' WHEN r.status = 'sending' THEN 'sending'
                 WHEN r.status = 'partially_sent' AND k = 0 THEN 'bounced' WHEN k = 1 THEN 'sent'
                 ELSE 'delivered' END,
            '<bench-' || r.id || '-' || k || '@esp.example>', '', '', r.created_at,
            CASE WHEN r.status IN ('failed', 'sending') THEN NULL ELSE r.created_at + interval '8 seconds' END, NULL
        FROM reporting_reportrun r CROSS JOIN generate_series(0, {DELIVERIES_PER_RUN - 1}) k
        ORDER BY r.id, k""",
]
SEQUENCED_TABLES = [
    "reporting_datasource",
    "reporting_recipient",
    "reporting_recipientlist",
    "django_celery_beat_crontabschedule",
    "django_celery_beat_periodictask",
    "reporting_report",
    "reporting_reportrun",
    "reporting_delivery",
]


def seed() -> None:
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        # Rows are consistent by construction: skip the per-row foreign key triggers.
        cursor.execute("SET LOCAL session_replication_role = replica")
        defaults = model_defaults(cursor.cursor.connection)
        for statement in defaults["set"]:
            cursor.execute(statement)
        for statement in SEED_SQL:
            step = time.perf_counter()
            cursor.execute(statement)
            print(f"  {cursor.rowcount:>9,} rows in {time.perf_counter() - step:5.1f} s: {statement.split()[2]}")
        for statement in defaults["drop"]:
            cursor.execute(statement)
        for name in SEQUENCED_TABLES:
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
    print(f"seeded in {time.perf_counter() - started:.0f} s")


def model_defaults(context: object) -> dict[str, list[str]]:
    """Each model's own defaults as its columns' defaults while seeding, and how to drop them again.

    Django keeps defaults in Python, not in the table: a column added since SEED_SQL was written
    would otherwise fail its NOT NULL. The rows seeded get what the ORM would have given them.
    """
    import json

    from django.apps import apps
    from django.db import models
    from psycopg import sql

    tables = {table for statement in SEED_SQL for table in [statement.split()[2]]}
    statements: dict[str, list[str]] = {"set": [], "drop": []}
    for model in apps.get_models():
        if model._meta.db_table not in tables:
            continue
        for field in model._meta.concrete_fields:
            if field.null or field.primary_key or field.has_db_default():
                continue
            default = field.get_default()  # "" for text without a default of its own, as the ORM saves it
            if default is None:
                continue
            if isinstance(field, models.JSONField):
                literal = sql.SQL("{}::jsonb").format(sql.Literal(json.dumps(default)))
            else:
                literal = sql.Literal(field.get_prep_value(default))
            target = sql.SQL("ALTER TABLE {} ALTER COLUMN {}").format(
                sql.Identifier(model._meta.db_table), sql.Identifier(field.column)
            )
            statements["set"].append(sql.SQL("{} SET DEFAULT {}").format(target, literal).as_string(context))
            statements["drop"].append(sql.SQL("{} DROP DEFAULT").format(target).as_string(context))
    return statements


def vacuum_analyze() -> None:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # fresh statistics, and a visibility map for index-only scans
    print(f"VACUUM ANALYZE in {time.perf_counter() - started:.0f} s")


def prepare() -> None:
    """Create, migrate and seed the database unless it already holds the right counts."""
    reseed = "--reseed" in sys.argv or existing_counts() != expected_counts()
    if reseed:
        recreate_database()
    os.environ["DATABASE_URL"] = f"{SERVER_URL}/{DATABASE}"
    os.environ["REPORTING_VAR_DIR"] = str(VAR_DIR)
    # Production-like: DEBUG off (no query log, cached templates), the example's timezone.
    os.environ.update(
        DEBUG="false",
        SECRET_KEY="bench-admin-not-secret",
        ALLOWED_HOSTS="testserver",
        SECURE_SSL_REDIRECT="false",
        TIME_ZONE="Europe/London",
        STATIC_ROOT=str(VAR_DIR / "static"),
    )
    (VAR_DIR / "static").mkdir(parents=True, exist_ok=True)
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)  # also applies new indexes to a reused database
    if reseed:
        seed()
    vacuum_analyze()


# --- the pages ------------------------------------------------------------------------------


def sample_run():
    """A sent run from the middle of the archive, with a data snapshot and a CSV attachment on disk."""
    from django.core.files.base import ContentFile

    from reporting.models import ReportRun, RunAttachment

    run = ReportRun.objects.select_related("report").get(pk=RUNS // 2 + 1)
    rows = [{"instrument": f"Instrument {index}", "market_value": index * 1.25} for index in range(2_000)]
    if run.data_snapshot:
        run.data_snapshot.delete(save=False)
    for old in RunAttachment.objects.filter(run=run):
        old.file.delete(save=False)
    run.data_snapshot.save("snapshot.json", ContentFile(json.dumps({"data": {"positions": rows}})), save=True)
    RunAttachment.objects.filter(run=run).delete()
    csv_text = "instrument,market_value\n" + "".join(f"{r['instrument']},{r['market_value']}\n" for r in rows)
    attachment = RunAttachment(run=run, filename="positions.csv", mimetype="text/csv", size=len(csv_text))
    attachment.file.save("positions.csv", ContentFile(csv_text.encode()), save=True)
    return run


def plain_admin_urls() -> str:
    """A URLconf with the project's admin and, under /plain/, Django's plain ModelAdmin of the same models."""
    from django.contrib import admin
    from django.urls import path

    from reporting.models import Report, ReportRun

    plain = admin.AdminSite(name="plain")
    # Django's own list template: the project's (admin/reporting/report/…) links to views only its admin has.
    plain.register(Report, change_list_template="admin/change_list.html")
    plain.register(ReportRun, list_select_related=["report"], change_list_template="admin/change_list.html")
    module = types.ModuleType("bench_admin_urls")
    module.urlpatterns = [path("admin/", admin.site.urls), path("plain/", plain.urls)]
    sys.modules[module.__name__] = module
    return module.__name__


def pages(run) -> list[dict]:
    """Each page: its request, the bare-ORM baseline of the same rows, and the plain admin's URL if any."""
    from django.utils import timezone

    from reporting.models import Delivery, Report, ReportRun

    runs = ReportRun.objects.order_by("-created_at", "-pk")
    month = timezone.localtime(run.created_at)
    by_month = {"created_at__year": month.year, "created_at__month": month.month}
    address = run.recipients[0]
    report_name = run.report.name
    run_lists = [
        ("run list", {}, runs),
        ("run list: status failed", {"status__exact": "failed"}, runs.filter(status="failed")),
        ("run list: one report", {"report__id__exact": run.report_id}, runs.filter(report_id=run.report_id)),
        (
            f"run list: month {month:%Y-%m}",
            by_month,
            runs.filter(created_at__year=month.year, created_at__month=month.month),
        ),
        ("run list: search an address", {"q": address}, runs.filter(deliveries__address__iexact=address)),
        ("run list: search a report name", {"q": report_name}, runs.filter(report__name__icontains=report_name)),
    ]
    report_page = lambda: list(Report.objects.order_by("name", "-pk")[:PAGE_SIZE])  # noqa: E731
    found = [
        {
            "name": "report list",
            "get": ("/admin/reporting/report/", {}),
            "baseline": report_page,
            "plain": ("/plain/reporting/report/", {}),
        },
        {
            # The schedule in words and the next run are cached per distinct schedule (the
            # latter per minute): this row pays for them on every request, as the first one
            # in a minute does.
            "name": "report list, schedule caches cold",
            "get": ("/admin/reporting/report/", {}),
            "before": clear_schedule_caches,
            "baseline": report_page,
        },
    ]
    for name, params, queryset in run_lists:
        found.append(
            {
                "name": name,
                "get": ("/admin/reporting/reportrun/", params),
                "baseline": lambda queryset=queryset: list(queryset.select_related("report")[:PAGE_SIZE]),
                "plain": None if "q" in params else ("/plain/reporting/reportrun/", params),
            }
        )
    one_run = lambda: (  # noqa: E731
        ReportRun.objects.select_related("report").get(pk=run.pk),
        list(Delivery.objects.filter(run_id=run.pk)),
    )
    found += [
        {"name": "run page", "get": (f"/admin/reporting/reportrun/{run.pk}/change/", {}), "baseline": one_run},
        {
            "name": "resend: action posted",
            "post": ("/admin/reporting/reportrun/", {"action": "resend", "_selected_action": [run.pk]}),
            "baseline": one_run,
        },
        {
            "name": "resend: its own page",
            "get": (f"/admin/reporting/reportrun/{run.pk}/resend/", {}),
            "baseline": one_run,
        },
    ]
    return found


def clear_schedule_caches() -> None:
    from reporting.admin import reports

    reports._schedule_in_words.cache_clear()
    reports._upcoming_slots.cache_clear()


def request(client, page: dict):
    if "before" in page:
        page["before"]()
    if "post" in page:
        url, data = page["post"]
        response = client.post(url, data)
    else:
        url, data = page["get"]
        response = client.get(url, data)
    assert response.status_code == 200, (page["name"], response.status_code)
    response.content  # noqa: B018 (rendered: a TemplateResponse renders before it is returned)
    return response


def count_queries(call) -> tuple[int, float, list[tuple[float, str]]]:
    """Number of queries of one call, their database time in seconds, and the slowest three."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    timed = sorted(((float(query["time"]), query["sql"]) for query in captured.captured_queries), reverse=True)
    return len(timed), sum(seconds for seconds, _ in timed), timed[:3]


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def run_pages(repeat: int, show_explain: bool) -> list[dict]:
    from django.contrib.auth.models import User
    from django.test import Client, override_settings

    user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    run = sample_run()
    results = []
    with override_settings(ROOT_URLCONF=plain_admin_urls()):
        for page in pages(run):
            subject = lambda page=page: request(client, page)  # noqa: E731
            page_timing, baseline_timing = interleaved(subject, page["baseline"], repeat=repeat)
            queries, db_seconds, slowest = count_queries(subject)  # warm, like the timed requests
            plain_timing = None
            if page.get("plain"):
                plain_url, plain_params = page["plain"]
                plain_timing = measure(lambda u=plain_url, p=plain_params: client.get(u, p).content, repeat=repeat)
            results.append(
                {
                    "name": page["name"],
                    "queries": queries,
                    "db": db_seconds,
                    "page": page_timing,
                    "baseline": baseline_timing,
                    "plain": plain_timing,
                }
            )
            print(
                f"{page['name']}: {queries} queries, {ms(db_seconds)} in the database, median {ms(page_timing.median)}"
            )
            for seconds, sql in slowest:
                print(f"    {ms(seconds)}  {sql[:240]}")
                if show_explain and seconds >= 0.005:
                    print("      " + explain(sql).replace("\n", "\n      "))
    return results


# --- the report -------------------------------------------------------------------------------


def results_table(results: list[dict]) -> str:
    rows = []
    for result in results:
        page, baseline, plain = result["page"], result["baseline"], result["plain"]
        met = page.median < TARGET_SECONDS
        rows.append(
            [
                result["name"],
                result["queries"],
                ms(result["db"]),
                ms(page.median),
                ms(page.best),
                ms(baseline.median),
                ratio(page.median, baseline.median),
                ms(plain.median) if plain else "—",
                ratio(page.median, plain.median) if plain else "—",
                "yes" if met else f"**no** (+{ms(page.median - TARGET_SECONDS)})",
            ]
        )
    headers = [
        "page",
        "queries",
        "DB time",
        "median",
        "best",
        "bare ORM (median)",
        "vs ORM",
        "plain ModelAdmin (median)",
        "vs plain",
        "< 300 ms",
    ]
    return table(headers, rows)


def missed_paragraph(results: list[dict]) -> str:
    missed = [result for result in results if result["page"].median >= TARGET_SECONDS]
    if not missed:
        return "Every page met the target (median under 300 ms).\n"
    lines = ["Missed (median at or over 300 ms):", ""]
    for result in missed:
        page, plain = result["page"], result["plain"]
        python = page.median - result["db"]
        lines.append(
            f"- {result['name']}: +{ms(page.median - TARGET_SECONDS)} (best {ms(page.best)}); "
            f"{ms(result['db'])} in the database, ~{ms(python)} in Python"
            + (f"; Django's plain changelist of the same rows took {ms(plain.median)}" if plain else "")
            + "."
        )
    return "\n".join(lines) + "\n"


NOTES = """
What the profile and EXPLAIN (ANALYZE) showed, and what changed
(`reporting/admin/`, `reporting/migrations/0003_admin_list_indexes.py`):

- **Run list, delivery counts.** `Count("deliveries")` twice made every list query a join of
  200,000 runs with 1,000,000 deliveries grouped by run: 5 s for the page, and Django wrapped the
  same grouped join around the paginator's COUNT (0.2 s) and the date hierarchy's MIN/MAX and
  DISTINCT years (0.4 s and 1.6 s). Now two correlated `COUNT` subqueries on the deliveries' run
  index; EXPLAIN shows them run 100 times (after the LIMIT), and COUNT(*) and MIN/MAX leave them out.
- **Search.** `deliveries__address` in `search_fields` made Django add DISTINCT over every column
  of run × delivery: 3-4 s for each of the page, its COUNT and MIN/MAX. Now a whole address is an
  EXISTS on a new `UPPER(address)` index and other words match the report's name or slug (a join to
  the 10,000-row report table). The run's subject and error text are no longer searched: each is a
  sequential scan of the 300 MB run table (350-600 ms, twice per page), which a btree cannot serve
  for `%word%` and a trigram index would tie the schema to PostgreSQL.
- **Report filter.** `list_filter = ["report"]` put 10,000 links on every page of the run list.
  Now the filter shows only the chosen report; it is chosen from the run list's report column,
  the report page's "Runs" link or the report list's run history.
- **Date hierarchy.** Django lists the years that have runs with `SELECT DISTINCT date_trunc(…)`
  over every run (an index-only scan of 200,000 entries and a sort: ~130 ms on its own), and a
  year's months with another (~90 ms). The year and month links now span MIN to MAX (two index
  probes); a chosen month's days still come from Django's own query over that month.
- **Counts.** `show_full_result_count = False` (one COUNT(*) per page, not two), facets off (a
  filtered COUNT per choice over the whole table), sorting only by `created_at` (any other column
  sorts the archive).
- **Report list.** Sorting all 10,000 reports joined to their tasks and crontabs before the
  LIMIT took ~50 ms; a new `(name, -id)` index (the changelist's order) lets PostgreSQL read the
  first 100 in order and join only those. The latest run and the new status history (the last
  10 runs as marks) are 12 correlated subqueries on the `(report, -created_at)` index, evaluated
  for the 100 rows of the page only: no extra query, and no cost that grows with the archive.
  In Python, putting schedules in words (cron_descriptor) and computing next runs (Celery's
  crontab parser) cost ~60 ms per 100 rows; both are now cached per distinct schedule (next runs
  per minute). The "caches cold" row clears them before every request.
- **Run page.** The run was fetched twice (`change_view` and Django's own); now once.
- **Resend, posted.** Django builds the run list before it runs an action: the grouped COUNT
  ran twice (2 × 0.2 s). Now one plain COUNT.

Left as is: Django's own rendering of a 100-row changelist is most of each list's time on this
shared 2-core machine (see the plain ModelAdmin column; a run's `__str__` is rendered twice a
row, for the cell and the checkbox's label). The two searches are the pages closest to the
target, with ~100-130 ms in the database on top of that rendering:
- an address: PostgreSQL walks the runs newest first and probes each one's deliveries
  (~12,000 index probes for the first 100 matches, 60-100 ms); starting from the address index
  (2,000 deliveries) takes ~20-40 ms warm, but the planner picks it only if the subquery cannot
  be flattened (e.g. a never-reached LIMIT in it, measured 36 ms against 85 ms), which is a
  planner trick we did not want to depend on;
- the name of a report, "Collections — desk 1": each word must match, so 521 reports and their
  10,420 runs match; PostgreSQL estimates one report, starts from the reports and sorts all
  their runs (55-90 ms) instead of walking the runs newest first and stopping at 100.
Timings vary with the other benchmarks sharing the machine (load average shown above); the
query counts do not. Over six runs after the changes, the address search's median ranged
277-346 ms and the name search's 219-379 ms: at the target rather than safely under it. Every
other page stayed under 300 ms in each run (the report list with cold schedule caches once
reached 308 ms at a load average above 2, before its per-row URL and mark work was trimmed).

Before the changes: the same data and pages, measured once the same way (7 requests per page):

| page                           | queries | DB time    | median     | plain ModelAdmin (median) |
| ------------------------------ | ------- | ---------- | ---------- | ------------------------- |
| report list                    | 6       | 109.0 ms   | 324.0 ms   | 86.3 ms                   |
| run list                       | 8       | 7609.0 ms  | 7993.1 ms  | 115.8 ms                  |
| run list: status failed        | 8       | 541.0 ms   | 1499.2 ms  | 128.0 ms                  |
| run list: one report           | 8       | 224.0 ms   | 936.2 ms   | 48.4 ms                   |
| run list: month                | 7       | 742.0 ms   | 1555.3 ms  | 210.2 ms                  |
| run list: search an address    | 8       | 12276.0 ms | 11873.2 ms | —                         |
| run list: search a report name | 8       | 13759.0 ms | 18407.9 ms | —                         |
| run page                       | 7       | 15.0 ms    | 67.1 ms    | —                         |
| resend: action posted          | 7       | 480.0 ms   | 1310.0 ms  | —                         |
| resend: its own page           | 3       | 2.0 ms     | 15.1 ms    | —                         |
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reseed", action="store_true", help="drop the database and seed it again")
    parser.add_argument("--repeat", type=int, default=7, help="timed requests per page (after one warm-up)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each query over 5 ms")
    args = parser.parse_args()
    prepare()
    load_before = os.getloadavg()[0]
    results = run_pages(args.repeat, args.explain)
    load = f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    body = (
        f"{REPORTS:,} reports ({DATA_SOURCES} data sources, {RECIPIENT_LISTS} recipient lists, 98% scheduled), "
        f"{RUNS:,} runs (one every 5 minutes over ~1.9 years, round-robin, ~4 kB archived email each), "
        f"{RUNS * DELIVERIES_PER_RUN:,} deliveries; PostgreSQL, DEBUG off, Django's test `Client` as a "
        f"superuser; {args.repeat} requests per page after a warm-up, interleaved with the baseline. "
        "Server time is the whole request through Django (middleware, admin, template rendering). "
        '"DB time" is the sum of the page\'s query times (one warm request). Ratios are page ÷ baseline; '
        f"{load} (2 cores).\n\n" + results_table(results) + "\n\n" + missed_paragraph(results) + NOTES
    )
    missed = [result["name"] for result in results if result["page"].median >= TARGET_SECONDS]
    write_result("admin", "Admin at scale: 10,000 reports, 200,000 runs, 1,000,000 deliveries", body)
    if missed:
        print(f"missed the target: {', '.join(missed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
