"""Preview: a report rendered for a chosen period with live data, exactly as it would be sent.

Nothing is archived and nothing is sent: the data is fetched into a temporary file, the
email rendered with the report's own settings (the same code as a run), and the result
returned as plain values for the admin's preview page. Errors come back in words.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from django.utils import timezone

from reporting import runs, stage_inputs
from reporting.models import Recipient, Report
from reporting.periods import Period
from reporting.pipeline import checks, conditions, fetch, layout, render, split

_SPOOL_BYTES = 1024 * 1024
SAMPLE_MAX_BYTES = 50 * 1024 * 1024  # the largest answer the layout designer describes
# The frame is as inert as the archive's email page: no script, form, font or network; a srcdoc
# has no headers, so the policy goes in a <meta> (the frame's sandbox="" attribute does the rest).
FRAME_POLICY = "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'"
_HEAD = re.compile(r"<head(\s[^>]*)?>", re.IGNORECASE)


@dataclass(frozen=True)
class PreviewFile:
    filename: str
    mimetype: str
    size: int
    inline: bool  # a chart shown inside the email rather than attached


@dataclass(frozen=True)
class Preview:
    period: Period
    request_url: str
    row_count: int
    subject: str
    html: str  # the HTML part with its charts as data: URIs and the frame's policy, for a sandboxed frame's srcdoc
    text: str  # plain text, not HTML: the page escapes it
    files: list[PreviewFile]
    chart_titles: list[str]
    checks_failed: list[str]  # what would hold the report back, in words; empty when it would be sent
    skipped: str = ""  # why a scheduled run would be skipped by the report's "Send only if", in words
    sender: str = ""  # the From header
    recipient: str = ""  # a per-recipient report: whose report this is
    recipient_note: str = ""  # …and what would happen to it, when not simply sent


class PreviewError(Exception):
    """The preview could not be made; `message` says why, in words."""

    def __init__(self, message: str, *, request_url: str = ""):
        super().__init__(message)
        self.message = message
        self.request_url = request_url


def preview_report(*, report_id: int, period_day: date | None, recipient_id: int | None = None) -> Preview:
    """Fetch and render the report for the period containing `period_day` (default: the last complete one).

    A per-recipient report is previewed as the recipient `recipient_id` (default: its first) would get it.
    """
    report = Report.objects.select_related("data_source").get(pk=report_id)
    return preview_draft(report, period_day=period_day, whose=_recipient(report, recipient_id))


def preview_draft(report: Report, *, period_day: date | None, whose: Recipient | None) -> Preview:
    """`preview_report` of a report as the form has it now, saved or not (the form's live preview).

    `whose`: the recipient a per-recipient report is previewed as (None for a report the same for all).
    """
    if report.is_per_recipient and whose is None:
        raise PreviewError("Each recipient gets their own report: choose recipients (a list) to preview it for one.")
    period = stage_inputs.period_for_day(report, period_day)
    values = split.recipient_values(email=whose.email, name=whose.name, attributes=whose.attributes) if whose else None
    request_url = ""
    try:
        fetch_for = values if whose and report.per_recipient_data == Report.PerRecipientData.FETCH else None
        request = stage_inputs.fetch_request_for(report, period, recipient=fetch_for)
        request_url = request.url
        # A large answer's rows are streamed (fetch.parse_answer), as a run streams them.
        request = replace(request, records_path=report.records_path)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as body:
            request_url, data = fetch.download(request, body)
            rows = fetch.select_rows(data, report.records_path)
            failures = checks.failed_checks(
                rows=rows, data=data, checks=stage_inputs.check_settings(report), now=timezone.now()
            )
            # As a scheduled run would judge it (a fetch per recipient has no condition: its form refuses one).
            verdict = _verdict(report, rows, data, failures) if not fetch_for else conditions.Verdict(held=failures)
            key = ""
            if whose and report.per_recipient_data == Report.PerRecipientData.SPLIT:
                key = str(whose.attributes.get(report.split_attribute.strip(), ""))
                mine = split.split_rows(
                    fetch.select_rows(data, report.records_path), report.split_field, {key} if key else set()
                )
                data = split.data_with_rows(report.records_path, mine.rows_by_key.get(key, []))
            render_request = stage_inputs.render_request_for(report, period, data, recipient=values, key=key)
            email = render.render(render_request)
    except (fetch.FetchError, render.RenderError) as exc:
        raise PreviewError(exc.message, request_url=request_url) from exc
    return Preview(
        period=period,
        request_url=request_url,
        row_count=len(render_request.rows),
        subject=email.subject,
        html=_with_frame_policy(_images_inline(email)),
        text=email.text,
        files=[
            PreviewFile(each.filename, each.mimetype, each.size, inline=bool(each.content_id))
            for each in email.attachments
        ],
        chart_titles=[f"{spec.title} — {period.label}" for spec in render_request.charts],
        checks_failed=verdict.held,
        skipped=verdict.skipped,
        sender=report.sender(),
        recipient=str(whose) if whose else "",
        recipient_note=_no_rows_note(report, render_request.rows) if whose else "",
    )


@dataclass(frozen=True)
class Sample:
    """What the layout designer offers from a live answer (see reporting.pipeline.layout.describe_sample)."""

    period: Period
    request_url: str
    described: dict
    rows: list[dict]  # the first rows at the records path, as text, to show


def sample(
    report: Report, *, period_day: date | None, whose: Recipient | None, records_path: str, rows: int = 5
) -> Sample:
    """Fetch the report's data for a period (as `whose`, in a fetch per recipient) and describe it."""
    period = stage_inputs.period_for_day(report, period_day)
    fetch_for = None
    if whose is not None and report.per_recipient_data == Report.PerRecipientData.FETCH:
        fetch_for = split.recipient_values(email=whose.email, name=whose.name, attributes=whose.attributes)
    request_url = ""
    try:
        request = stage_inputs.fetch_request_for(report, period, recipient=fetch_for)
        request_url = request.url
        # A sample is described from the whole answer, held in the web process: not the largest ones.
        request = replace(request, max_bytes=min(request.max_bytes, SAMPLE_MAX_BYTES))
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as body:
            request_url, data = fetch.download(request, body)
    except (fetch.FetchError, render.RenderError) as exc:
        raise PreviewError(exc.message, request_url=request_url) from exc
    described = layout.describe_sample(data, records_path)
    found = layout.rows_at(data, records_path) or []
    shown = [
        {str(key): _short(value) for key, value in list(row.items())[:40]}
        for row in found[:rows]
        if isinstance(row, dict)
    ]
    return Sample(period=period, request_url=request_url, described=described, rows=shown)


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:59] + "…"


def _verdict(report: Report, rows: Sequence[Any], data: object, failures: list[str]) -> conditions.Verdict:
    """Whether a scheduled run of this data would be held, skipped by "Send only if", or sent."""
    changed = report.send_only_if == conditions.CHANGED
    return conditions.verdict(
        report.condition,
        rows=rows,
        failures=failures,
        data=data,
        digest=conditions.rows_hash(rows) if changed else "",
        last_sent=runs.last_sent_run(report.pk) if changed else None,
    )


def _recipient(report: Report, recipient_id: int | None) -> Recipient | None:
    """Whose report a per-recipient report's preview shows; None for a report that is the same for all."""
    if not report.is_per_recipient:
        return None
    recipients = report.active_recipients()
    whose = recipients.filter(pk=recipient_id).first() if recipient_id else recipients.first()
    if whose is None:
        raise PreviewError("Each recipient gets their own report, and this report has no active recipient to show.")
    return whose


def _no_rows_note(report: Report, rows: Sequence[Any]) -> str:
    if rows:
        return ""
    return {
        Report.WhenNoRows.SKIP: "They have no rows for this period: they would be skipped (nothing sent to them).",
        Report.WhenNoRows.HOLD: "They have no rows for this period: their report would be held for staff.",
        Report.WhenNoRows.SEND_EMPTY: "They have no rows for this period: they would get this report, empty.",
    }[report.when_no_rows]  # type: ignore[index]


def _images_inline(email: render.RenderedEmail) -> str:
    html = email.html
    for image in email.inline_images:
        encoded = base64.b64encode(image.content).decode("ascii")
        html = html.replace(f"cid:{image.content_id}", f"data:{image.mimetype};base64,{encoded}")
    return html


def _with_frame_policy(html: str) -> str:
    """`html` with FRAME_POLICY as its first element in <head> (or first of all, without a head)."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{FRAME_POLICY}">'
    head = _HEAD.search(html)
    if head is None:
        return meta + html
    return html[: head.end()] + meta + html[head.end() :]
