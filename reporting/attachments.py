"""Attachments too large to send: which ones, and the email that links to them in the archive instead."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace as dataclass_replace

from django.core.files.base import File
from django.db import transaction
from django.urls import reverse

from reporting import conf
from reporting.models import ReportRun, RunAttachment, RunPart
from reporting.pipeline import render


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
    same, or, if it links to other files than it was rendered with, rendered again with its
    links) and what was linked, in words ('' when nothing).
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
                links.append(_link(stored.filename, stored.size, run_id=run.pk, part_id=part.pk if part else None))
    if links != email.links:  # a PDF, made of the email, took the files over the limit: not foreseen
        email = render_with_links(request, email, links)
    elif links:
        email = dataclass_replace(email, attachments=render.still_attached(email.attachments, links))
    return email, " ".join(too_large.values())


Links = list[dict[str, str]]  # each a linked file's "filename", "size" (in words) and "url"


def links_to_files(run_id: int, part_id: int | None = None) -> Callable[[list[render.Attachment]], Links]:
    """What the email of a run (or of its recipient's part) links to, given its files: those too large
    to attach, at the addresses `store` archives them at (render.RenderRequest.link_files)."""

    def links(attachments: list[render.Attachment]) -> Links:
        too_large = too_large_to_attach(attachments)
        return [
            _link(attachment.filename, attachment.size, run_id=run_id, part_id=part_id)
            for index, attachment in enumerate(attachments)
            if index in too_large
        ]

    return links


def _link(filename: str, size: int, *, run_id: int, part_id: int | None) -> dict[str, str]:
    """What the email says about a linked file: its name, size and address in the admin (by its name,
    which stays the address of the run's file of that name when a later attempt archives it again)."""
    if part_id is None:
        path = reverse("admin:reporting_reportrun_file", args=[run_id, filename])
    else:
        path = reverse("admin:reporting_reportrun_part_file", args=[run_id, part_id, filename])
    return {"filename": filename, "size": size_in_words(size), "url": conf.REPORTING["SITE_URL"].rstrip("/") + path}


def render_with_links(
    request: render.RenderRequest, first: render.RenderedEmail, links: list[dict[str, str]]
) -> render.RenderedEmail:
    """The email rendered again, now that the files it links to are known."""
    attached = render.still_attached(first.attachments, links)
    # The files sent are those of the first rendering: its PDF, CSV and XLSX are not made again.
    again = dataclass_replace(
        request,
        attach_csv=False,
        attach_xlsx=False,
        attach_pdf=False,
        link_files=None,
        context_extra={**request.context_extra, **render.link_context(links, first.files)},
    )
    email = render.render(again)
    return dataclass_replace(
        email, text=render.with_links_in_text(email.text, links), attachments=attached, links=links
    )


def size_in_words(size: int) -> str:
    """A size in bytes as people read it: "14.2 MB", "980 KB", "512 bytes"."""
    for unit, factor in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"
