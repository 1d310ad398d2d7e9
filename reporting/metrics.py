"""Prometheus metrics read from the database at scrape time: the archive is the source of truth.

Nothing is counted in the processes themselves, so any number of web processes give the same
answer and no multiprocess state is needed. A fixed number of queries for any number of reports.
Names and meanings: README "Observability".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import Count
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reporting import overview
from reporting.models import Delivery, ReportRun

WINDOW = timedelta(hours=24)  # runs by status and stage durations: the runs of the last day
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STAGES = (  # stage: (from, to) timings of the run
    ("fetch", "started_at", "fetched_at"),
    ("render", "fetched_at", "rendered_at"),
    ("send", "rendered_at", "finished_at"),
)


class ReportingCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from report_health_metrics(now)
        yield runs_by_status(now)
        yield deliveries_by_channel_and_status()
        yield stage_durations(now)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportingCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def report_health_metrics(now: datetime) -> Iterator[Metric]:
    """Per enabled report, what the overview shows: last success, late, missed, held, failures."""
    rows = overview.report_health(list(overview.enabled_reports()), now=now)
    last_success = GaugeMetricFamily(
        "reporting_report_last_success_timestamp_seconds",
        "When the report's last successful run (sent or partially sent) was made, Unix time.",
        labels=["report"],
    )
    age = GaugeMetricFamily(
        "reporting_report_last_success_age_seconds",
        "Seconds since the report's last successful run was made (since the report was created if it never succeeded).",
        labels=["report"],
    )
    gauges = {  # ReportHealth field: gauge
        "late": _per_report("reporting_report_late", "1 when the report's latest slot passed without a run."),
        "missed": _per_report("reporting_report_missed", "Slots recorded as missed since the last success."),
        "held": _per_report("reporting_report_held", "Runs held by a data check, not yet released or re-run."),
        "consecutive_failures": _per_report(
            "reporting_report_consecutive_failures", "Runs failed since the last success."
        ),
        "overdue": _per_report("reporting_report_overdue_runs", "Runs not at an end and past their deadline."),
    }
    for row in rows:
        slug = [row.report.slug]
        if row.last_success_at is not None:
            last_success.add_metric(slug, row.last_success_at.timestamp())
        since = row.last_success_at or row.report.created_at
        age.add_metric(slug, max(0.0, (now - since).total_seconds()))
        for field, gauge in gauges.items():
            gauge.add_metric(slug, float(getattr(row, field)))
    yield last_success
    yield age
    yield from gauges.values()


def _per_report(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["report"])


def runs_by_status(now: datetime) -> Metric:
    gauge = GaugeMetricFamily(
        "reporting_runs",
        "Runs made in the last 24 hours (test sends left out), by report and status.",
        labels=["report", "status"],
    )
    counted = (
        ReportRun.objects.filter(created_at__gte=now - WINDOW)
        .exclude(trigger=ReportRun.Trigger.TEST)
        .values_list("report__slug", "status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    for slug, status, count in counted:
        gauge.add_metric([slug, status], count)
    return gauge


def deliveries_by_channel_and_status() -> Metric:
    counter = CounterMetricFamily(
        "reporting_deliveries",
        "Deliveries in the archive (sends and resends), by channel and status. Retention pruning lowers it.",
        labels=["channel", "status"],
    )
    counted = Delivery.objects.values_list("channel", "status").annotate(count=Count("pk")).order_by()
    for channel, status, count in counted:
        counter.add_metric([channel, status], count)
    return counter


def stage_durations(now: datetime) -> Metric:
    """Fetch, render and send durations of the runs that ended in the last 24 hours, from their stored timings."""
    histogram = GaugeHistogramMetricFamily(
        "reporting_run_stage_duration_seconds",
        "Seconds each stage took, over the runs that ended in the last 24 hours (fetch: from the first start).",
        labels=["stage"],
    )
    fields = ("started_at", "fetched_at", "rendered_at", "finished_at")
    timings = ReportRun.objects.filter(finished_at__gte=now - WINDOW).values_list(*fields).order_by()
    durations: dict[str, list[float]] = {stage: [] for stage, _, _ in STAGES}
    for row in timings:
        at = dict(zip(fields, row, strict=True))
        for stage, begin, end in STAGES:
            if at[begin] and at[end] and at[end] >= at[begin]:
                durations[stage].append((at[end] - at[begin]).total_seconds())
    for stage, seconds in durations.items():
        buckets = [(str(float(bound)), sum(1 for s in seconds if s <= bound)) for bound in DURATION_BUCKETS]
        buckets.append(("+Inf", len(seconds)))
        histogram.add_metric([stage], buckets, sum(seconds))
    return histogram
