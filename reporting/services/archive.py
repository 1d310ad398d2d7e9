"""Services on the archive: resend an archived run's email, put runs on legal hold or release them."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from reporting import archive, audit
from reporting.models import AuditEvent, Delivery, ReportRun, RunPart
from reporting.services.enqueue import SEND_RESEND, enqueue

Action = AuditEvent.Action
User = AbstractBaseUser | AnonymousUser | None


@dataclass(frozen=True)
class PlannedResend:
    """One run of a resend and exactly the addresses it goes to."""

    run: ReportRun
    addresses: list[str]


def plan_resend(*, run_ids: list[int], addresses: list[str] | None) -> list[PlannedResend]:
    """Who each run's resend would go to: `addresses`, or each run's original recipients when None.

    Nothing is written. ValidationError in words when a run cannot be resent or an address is invalid.
    """
    chosen = ReportRun.objects.filter(pk__in=run_ids).select_related("report").order_by("pk")
    return [PlannedResend(run, archive.resend_targets(run, addresses)) for run in chosen]


def resend(*, run_ids: list[int], addresses: list[str] | None, actor: User) -> list[PlannedResend]:
    """Resend each run's archived email (nothing is fetched again) to exactly the planned addresses.

    One transaction: the deliveries are recorded as queued and audited with their addresses,
    and the sends published after commit. Raises ValidationError (nothing written) as plan_resend.
    """
    requested_by_id = actor.pk if actor is not None and actor.is_authenticated else None
    with transaction.atomic():
        planned = plan_resend(run_ids=run_ids, addresses=addresses)
        for each in planned:
            deliveries = archive.record_resend(each.run, each.addresses, requested_by_id=requested_by_id)
            summary = f"Resent run #{each.run.pk} ({each.run.period_label}) to {', '.join(each.addresses)}."
            audit.record(actor=actor, action=Action.RESENT, summary=summary, run=each.run)
            enqueue(SEND_RESEND, run_id=each.run.pk, delivery_ids=[delivery.pk for delivery in deliveries])
    return planned


@dataclass(frozen=True)
class PlannedPartResend:
    """One recipient's report and exactly the addresses its resend goes to."""

    part: RunPart
    addresses: list[str]


def plan_part_resend(*, part_id: int, addresses: list[str] | None) -> PlannedPartResend:
    """Who a recipient's report would be resent to: `addresses`, or the address it went to when None.

    Nothing is written. ValidationError in words when it cannot be resent or an address is invalid.
    """
    part = RunPart.objects.select_related("run").get(pk=part_id)
    return PlannedPartResend(part, archive.resend_targets(part, addresses))


def resend_part(*, part_id: int, addresses: list[str] | None, actor: User) -> PlannedPartResend:
    """Resend one recipient's archived report, alone, to exactly the planned addresses.

    Typed addresses get that recipient's report, with that recipient's data: the page that
    confirms says whose it is.
    """
    requested_by_id = actor.pk if actor is not None and actor.is_authenticated else None
    with transaction.atomic():
        planned = plan_part_resend(part_id=part_id, addresses=addresses)
        part, run = planned.part, planned.part.run
        deliveries = archive.record_resend(part, planned.addresses, requested_by_id=requested_by_id)
        summary = f"Resent {part.who}'s report of run #{run.pk} ({run.period_label}) to {', '.join(planned.addresses)}."
        audit.record(actor=actor, action=Action.RESENT, summary=summary, run=run)
        enqueue(SEND_RESEND, run_id=run.pk, delivery_ids=[delivery.pk for delivery in deliveries])
    return planned


def resend_here(*, run_id: int, addresses: list[str] | None, actor: User = None) -> list[Delivery]:
    """Resend a run's archived email in this process (a management command); returns its deliveries, as sent."""
    with transaction.atomic():
        [planned] = plan_resend(run_ids=[run_id], addresses=addresses)
        requested_by_id = actor.pk if actor is not None and actor.is_authenticated else None
        deliveries = archive.record_resend(planned.run, planned.addresses, requested_by_id=requested_by_id)
        to = ", ".join(planned.addresses)
        summary = f"Resent run #{run_id} ({planned.run.period_label}) from the command line to {to}."
        audit.record(actor=actor, action=Action.RESENT, summary=summary, run=planned.run)
    archive.send_resend(run_id=run_id, delivery_ids=[delivery.pk for delivery in deliveries])
    return list(Delivery.objects.filter(pk__in=[delivery.pk for delivery in deliveries]))


def send_resend(*, run_id: int, delivery_ids: list[int]) -> None:
    """In a worker: send a recorded resend's queued deliveries."""
    archive.send_resend(run_id=run_id, delivery_ids=delivery_ids)


def set_legal_hold(*, run_ids: list[int], held: bool, actor: User) -> int:
    """Put runs on legal hold (never pruned by retention) or release them; how many changed."""
    with transaction.atomic():
        changed = list(
            ReportRun.objects.filter(pk__in=run_ids).exclude(legal_hold=held).select_related("report").order_by("pk")
        )
        ReportRun.objects.filter(pk__in=[run.pk for run in changed]).update(legal_hold=held)
        for run in changed:
            what = "Put run #{} ({}) on legal hold." if held else "Released run #{} ({}) from legal hold."
            summary = what.format(run.pk, run.period_label)
            audit.record(actor=actor, action=Action.LEGAL_HOLD, summary=summary, run=run)
    return len(changed)
