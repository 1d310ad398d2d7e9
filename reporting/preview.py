"""Preview: a report rendered for a chosen period with live data, exactly as it would be sent.

Nothing is archived and nothing is sent: the data is fetched into a temporary file, the
email rendered with the report's own settings (the same code as a run), and the result
returned as plain values for the admin's preview page. Errors come back in words.
"""

from __future__ import annotations

import base64
import re
import tempfile
from dataclasses import dataclass
from datetime import date

from reporting import stage_inputs
from reporting.models import Report
from reporting.periods import Period
from reporting.pipeline import checks, fetch, render

_SPOOL_BYTES = 1024 * 1024
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


class PreviewError(Exception):
    """The preview could not be made; `message` says why, in words."""

    def __init__(self, message: str, *, request_url: str = ""):
        super().__init__(message)
        self.message = message
        self.request_url = request_url


def preview_report(*, report_id: int, period_day: date | None) -> Preview:
    """Fetch and render the report for the period containing `period_day` (default: the last complete one)."""
    report = Report.objects.select_related("data_source").get(pk=report_id)
    period = stage_inputs.period_for_day(report, period_day)
    request_url = ""
    try:
        request = stage_inputs.fetch_request_for(report, period)
        request_url = request.url
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as body:
            request_url, data = fetch.download(request, body)
        render_request = stage_inputs.render_request_for(report, period, data)
        email = render.render(render_request)
    except (fetch.FetchError, render.RenderError) as exc:
        raise PreviewError(exc.message, request_url=request_url) from exc
    held = checks.failed_checks(
        rows=render_request.rows, data=data, checks=stage_inputs.check_settings(report), now=render_request.generated_at
    )
    return Preview(
        period=period,
        request_url=request_url,
        row_count=len(render_request.rows),
        subject=email.subject,
        html=_with_frame_policy(_images_inline(email)),
        text=email.text,
        files=[
            PreviewFile(each.filename, each.mimetype, len(each.content), inline=bool(each.content_id))
            for each in email.attachments
        ],
        chart_titles=[f"{spec.title} — {period.label}" for spec in render_request.charts],
        checks_failed=held,
    )


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
