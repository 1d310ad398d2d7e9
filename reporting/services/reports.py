"""Services on report definitions: create or change a report (schedule and recipients too), delete reports."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models.functions import Lower

from reporting import audit, schedules
from reporting.models import AuditEvent, Recipient, Report

Action = AuditEvent.Action
User = AbstractBaseUser | AnonymousUser | None
_LABELS = {
    "schedule": "schedule",
    "recipients": "recipients",
    "recipient_lists": "recipient lists",
    "destinations": "destinations",
}


def save_report(
    *,
    report: Report,
    save_related: Callable[[], None],
    schedule: schedules.CronSpec | None,
    actor: User,
    addresses: list[str] | None = None,
    actor_name: str = "system",
) -> None:
    """Create or change `report` (with the form's values), its recipients and its schedule, in one transaction.

    `save_related` saves what needs the report's id (the form's many-to-many fields);
    `addresses`, when given, are its own recipients, each a Recipient reused (whatever the
    case of its address) or created. The audit event lists each changed field before and
    after; an unchanged save records none. `actor_name` names who acted when no user did.
    """
    created = report.pk is None
    with audit.acting_as(actor), transaction.atomic():
        before = {} if created else report_state(report.pk)
        report.save()
        save_related()
        if addresses is not None:
            report.recipients.set(recipients_for(addresses))
        if schedule is None:
            schedules.delete_schedule(report)
            Report.objects.filter(pk=report.pk).update(periodic_task=None, schedule_rule="")
            report.periodic_task, report.schedule_rule = None, ""
        else:
            schedules.save_schedule(report=report, spec=schedule)
        changes = audit.changes_between(before, report_state(report.pk))
        if created:
            audit.record(
                actor=actor,
                actor_name=actor_name,
                action=Action.CREATED,
                summary="Created the report.",
                report=report,
                changes=changes,
            )
        elif changes:
            summary = f"Changed {', '.join(_label(name) for name in changes)}."
            audit.record(
                actor=actor,
                actor_name=actor_name,
                action=Action.CHANGED,
                summary=summary,
                report=report,
                changes=changes,
            )


def recipients_for(addresses: list[str]) -> list[Recipient]:
    """A Recipient for each address: the one already known (matched whatever its case), or a new one."""
    known = {
        recipient.email.lower(): recipient
        for recipient in Recipient.objects.annotate(lowered=Lower("email")).filter(
            lowered__in=[address.lower() for address in addresses]
        )
    }
    return [known.get(address.lower()) or Recipient.objects.create(email=address) for address in addresses]


def delete_reports(*, reports: list[Report], actor: User) -> None:
    """Delete reports (and their schedules), each audited; a report with archived runs is protected and stays."""
    with audit.acting_as(actor), transaction.atomic():  # the events go if the delete fails
        for report in reports:
            audit.record(
                actor=actor, action=Action.DELETED, summary=f"Deleted the report {report.name}.", report=report
            )
        Report.objects.filter(pk__in=[report.pk for report in reports]).delete()


def report_state(report_id: int) -> dict[str, object]:
    """The report as staff edit it, as text per field (its schedule and recipients included)."""
    report = Report.objects.select_related("data_source", "owner", "periodic_task__crontab").get(pk=report_id)
    state: dict[str, object] = {}
    for field in Report._meta.concrete_fields:
        if field.editable and field.name not in ("id", "created_at", "updated_at"):
            value = getattr(report, field.name)
            state[field.name] = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else _text(value)
    spec = schedules.spec_for(report)
    state["schedule"] = (
        f"{spec.minute} {spec.hour} {spec.day_of_month} {spec.month_of_year} {spec.day_of_week} ({spec.timezone})"
        + (f", only on the {spec.rule.replace('_', ' ')}" if spec.rule else "")
        if spec
        else "not scheduled"
    )
    state["recipients"] = sorted(report.recipients.values_list("email", flat=True))
    state["recipient_lists"] = sorted(report.recipient_lists.values_list("name", flat=True))
    state["destinations"] = sorted(report.destinations.values_list("name", flat=True))
    return state


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _label(name: str) -> str:
    return _LABELS.get(name) or str(getattr(Report._meta.get_field(name), "verbose_name", name))
