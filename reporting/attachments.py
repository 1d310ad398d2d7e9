"""Attachments too large to send: which ones, and the email that links to them in the archive instead."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import replace

from django.core.files.base import File
from django.db import transaction
from django.urls import reverse

from reporting import conf
from reporting.models import ReportRun, RunAttachment, RunPart
from reporting.pipeline import render, xlsx


def too_large_to_attach(attachments: list[render.Attachment]) -> dict[int, str]:
    """Which attachments to link instead of attach (index → why, in words): the largest, until the rest fit.

    Sizes are counted as encoded in the message (base64: 4 bytes for every 3), all attachments together.
    """
    limit = conf.REPORTING["MAX_ATTACHMENT_BYTES"]
    sizes = {  # the files; a chart shown inside the email stays in it
        index: 4 * math.ceil(attachment.size / 3)
        for index, attachment in enumerate(attachments)
        if not attachment.content_id
    }
    total = sum(sizes.values())
    too_large = {}
    for index in sorted(sizes, key=lambda each: sizes[each], reverse=True):
        if total <= limit:
            break
        total -= sizes[index]
        over = "is over" if sizes[index] > limit else "would take the attachments over"
        too_large[index] = (
            f"{attachments[index].filename} ({size_in_words(sizes[index])} encoded) {over} the "
            f"{size_in_words(limit)} attachment limit; the email links to the archived file instead."
        )
    return too_large


def store(
    run: ReportRun,
    request: render.RenderRequest,
    email: render.RenderedEmail,
    *,
    part: RunPart | None = None,
    replace: bool = True,
) -> tuple[render.RenderedEmail, str]:
    """Archive the email's files, of the run or of one recipient's `part`, in place of any stored before
    (`replace=False`: there are none to replace).

    Those too large to attach are linked instead: returns the email to archive and send (the
    same, or rendered again with its links) and what was linked, in words ('' when nothing).
    """
    too_large = too_large_to_attach(email.attachments)
    with transaction.atomic() if replace else nullcontext():
        if replace:
            (part.attachments.all() if part else run.attachments.filter(part__isnull=True)).delete()
        links = []
        for index, attachment in enumerate(email.attachments):
            stored = RunAttachment.objects.create(
                run=run,
                part=part,
                filename=attachment.filename,
                mimetype=attachment.mimetype,
                size=attachment.size,
                file=File(attachment.open(), name=attachment.filename),
                linked=index in too_large,
                content_id=attachment.content_id,
            )
            if stored.linked:
                links.append(link_to(stored))
    if links:
        email = render_with_links(request, email, links)
    return email, " ".join(too_large.values())


def link_to(attachment: RunAttachment) -> dict[str, str]:
    """What the email says about a linked attachment: its name, size and address in the admin."""
    path = reverse("admin:reporting_reportrun_attachment", args=[attachment.run_id, attachment.pk])
    return {
        "filename": attachment.filename,
        "size": size_in_words(attachment.size),
        "url": conf.REPORTING["SITE_URL"].rstrip("/") + path,
    }


def render_with_links(
    request: render.RenderRequest, first: render.RenderedEmail, links: list[dict[str, str]]
) -> render.RenderedEmail:
    """The email rendered again, now that the archived files it links to have addresses."""
    linked = {link["filename"] for link in links}
    still_attached = [each for each in first.attachments if each.filename not in linked]
    extra = {
        "linked_attachments": links,
        "attach_csv": any(each.mimetype == "text/csv" for each in still_attached),  # "the attached CSV has them all"
        "attach_xlsx": any(each.mimetype == xlsx.MIMETYPE for each in still_attached),
    }
    # The files sent are those of the first rendering: its PDF, CSV and XLSX are not made again.
    again = replace(
        request, attach_csv=False, attach_xlsx=False, attach_pdf=False, context_extra={**request.context_extra, **extra}
    )
    email = render.render(again)
    # A report's own text template may not include the generic link block: the links are added at its end.
    missing = [link for link in links if link["url"] not in email.text]
    text = email.text.rstrip("\n") + "\n\n" + "".join(map(_link_in_text, missing)) if missing else email.text
    return replace(email, text=text, attachments=still_attached)


def _link_in_text(link: dict[str, str]) -> str:
    return f"{link['filename']} ({link['size']}) is too large to attach. Download it from the archive:\n{link['url']}\n"


def size_in_words(size: int) -> str:
    """A size in bytes as people read it: "14.2 MB", "980 KB", "512 bytes"."""
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"
