"""What the admin's areas share: links into the run list, and the marks that show a run's status."""

from __future__ import annotations

import functools

from django.urls import get_script_prefix, reverse
from django.utils.html import format_html

from reporting.models import ReportRun

# A mark per status for the run history: shape and colour (see report/change_list.html).
RUN_MARKS = {
    ReportRun.Status.SENT: ("sent", "●"),
    ReportRun.Status.PARTIALLY_SENT: ("partial", "◐"),
    ReportRun.Status.FAILED: ("failed", "✕"),
    ReportRun.Status.HELD: ("held", "⏸"),
    ReportRun.Status.MISSED: ("missed", "◌"),
    ReportRun.Status.SKIPPED: ("skipped", "–"),
}
RUN_MARK_WORKING = ("working", "○")


def runs_of_report_url(report_id: int) -> str:
    """The run list filtered to one report: resolved once, not once per row of a list."""
    return f"{_run_list_url(get_script_prefix())}?report__id__exact={report_id}"


@functools.lru_cache(maxsize=16)
def _run_list_url(script_prefix: str) -> str:
    return reverse("admin:reporting_reportrun_changelist")  # under the current script prefix, the key


def run_mark(status: ReportRun.Status) -> str:
    css_class, mark = RUN_MARKS.get(status, RUN_MARK_WORKING)
    return format_html('<span class="run-mark run-{}" title="{}">{}</span>', css_class, status.label, mark)


RUN_MARK_HTML = {status: run_mark(status) for status in ReportRun.Status}
RUN_STATUS_LABELS = dict(ReportRun.Status.choices)
