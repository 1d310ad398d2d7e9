"""The audit trail: who changed a report, or ran, resent, released or held what, and when."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from auditlog.context import auditlog_value, set_actor
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from reporting.models import AuditEvent, Report, ReportRun

Action = AuditEvent.Action


def record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    summary: str,
    report: Report | None = None,
    run: ReportRun | None = None,
    changes: dict[str, list] | None = None,
    actor_name: str = "system",
) -> AuditEvent:
    """Store one event; `report` defaults to the run's report, and names are kept for after deletion.

    `actor_name` names who acted when no user did (a sweep: "system"; a command: its name).
    """
    if report is None and run is not None:
        report = run.report
    user = actor if actor is not None and actor.is_authenticated else None
    return AuditEvent.objects.create(  # type: ignore[misc]
        actor=user,
        actor_name=user.get_username() if user else actor_name,
        action=action,
        report=report,
        report_name=report.name if report else "",
        run=run,
        summary=summary,
        changes=changes or {},
    )


def changes_between(before: dict[str, object], after: dict[str, object]) -> dict[str, list]:
    """Field → [before, after] for the fields whose values differ, as text."""
    return {
        name: [_text(before.get(name)), _text(after.get(name))]
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    }


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | set):
        return ", ".join(str(item) for item in value)
    return str(value)


ADDRESSES_NAMED = 20


def addresses_in_words(addresses: list[str]) -> str:
    """The addresses an event went to, every one when few: "a@x, b@x", or "10,000 addresses: a@x, … and 9,980 more"."""
    if len(addresses) <= ADDRESSES_NAMED:
        return ", ".join(addresses)
    shown = ", ".join(addresses[:ADDRESSES_NAMED])
    return f"{len(addresses):,} addresses: {shown} and {len(addresses) - ADDRESSES_NAMED:,} more (listed on the run)"


@contextlib.contextmanager
def acting_as(actor: AbstractBaseUser | AnonymousUser | None) -> Iterator[None]:
    """django-auditlog's entries in this block name `actor` (the admin's middleware already names its user;
    an API call is authenticated by token after that middleware, so it names nobody)."""
    outer = auditlog_value.get(None)
    user = actor if actor is not None and actor.is_authenticated else None
    if user is None or (outer is not None and outer.get("actor") == user):
        yield
        return
    try:
        with set_actor(user, remote_addr=(outer or {}).get("remote_addr")):
            yield
    finally:
        if outer is not None:
            auditlog_value.set(outer)  # set_actor leaves its own in place: the request's goes on naming its user
