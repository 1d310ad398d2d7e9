"""Failure alerts: who must know that a report failed, was held or was missed — told once, in a digest.

A sweep (the periodic task `send_failure_alerts`, every minute) gathers the runs not yet
alerted, groups them by the address to tell (the report's owner, or ADMINS when the report
has none), and sends each address one email naming all its runs — at most one per address
every ALERT_INTERVAL_MINUTES, so an API outage across fifty reports is one email, not fifty.
Runs waiting for the next window stay unalerted and go in the next digest.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Max
from django.template.loader import render_to_string
from django.utils import timezone

from reporting import conf
from reporting.models import Alert, ReportRun

log = logging.getLogger(__name__)
Status = ReportRun.Status
# A partially sent run is alerted too: some addresses did not get the email, and the alert names them.
# A skipped run is not: its report's "Send only if" meant it, and nothing went wrong.
ALERTED_STATUSES = (Status.FAILED, Status.PARTIALLY_SENT, Status.HELD, Status.MISSED)
LOOK_BACK = timedelta(days=7)  # older runs are history, not news (e.g. on the first deploy)


def send_failure_alerts(*, now: datetime | None = None) -> int:
    """Send the due digests; returns how many emails went out."""
    now = now or timezone.now()
    by_audience = _runs_by_audience(now)
    recently = _recently_alerted({address for audience in by_audience for address in audience}, now)
    sent = 0
    for audience, run_ids in by_audience.items():
        if recently.intersection(audience):
            continue  # told less than ALERT_INTERVAL_MINUTES ago: these runs wait for the next digest
        if _send_digest(audience, run_ids, now):
            sent += 1
    return sent


def pending_runs(now: datetime):
    """Runs whose people have not been told yet: failed for good, held, or missed; not test sends."""
    return ReportRun.objects.filter(
        status__in=ALERTED_STATUSES, alerted_at__isnull=True, created_at__gte=now - LOOK_BACK
    ).exclude(trigger=ReportRun.Trigger.TEST)


def _runs_by_audience(now: datetime) -> dict[tuple[str, ...], list[int]]:
    """Run ids by who is told about them: the report's owner, or all of ADMINS together."""
    admins = tuple(sorted({address.lower() for _name, address in settings.ADMINS if address}))
    by_audience: dict[tuple[str, ...], list[int]] = defaultdict(list)
    nobody = []
    for run_id, owner_email in pending_runs(now).values_list("pk", "report__owner__email").order_by("pk"):
        audience = (owner_email.lower(),) if owner_email else admins
        if audience:
            by_audience[audience].append(run_id)
        else:
            nobody.append(run_id)
    if nobody:  # nobody to tell: say so in the log once, rather than every minute
        log.warning("runs %s failed or were held, but their reports have no owner and ADMINS is empty", nobody)
        ReportRun.objects.filter(pk__in=nobody).update(alerted_at=now)
    return by_audience


def _recently_alerted(addresses: set[str], now: datetime) -> set[str]:
    since = now - timedelta(minutes=conf.REPORTING["ALERT_INTERVAL_MINUTES"])
    latest = Alert.objects.filter(address__in=addresses).values("address").annotate(last=Max("sent_at"))
    return {row["address"] for row in latest if row["last"] > since}


def _send_digest(audience: tuple[str, ...], run_ids: list[int], now: datetime) -> bool:
    """Claim the runs, send one email naming them all, and record it; False when another sweep took them."""
    with transaction.atomic():
        # Claimed in the same transaction as the Alert rows: a sweep running meanwhile skips
        # them (where the database can lock rows), and a failed send gives them back.
        unclaimed = ReportRun.objects.filter(pk__in=run_ids, alerted_at__isnull=True)
        runs = list(unclaimed.select_for_update(skip_locked=True, of=("self",)).select_related("report").order_by("pk"))
        if not runs:
            return False
        ReportRun.objects.filter(pk__in=[run.pk for run in runs]).update(alerted_at=now)
        subject = _subject(runs)
        for address in audience:
            Alert.objects.create(address=address, sent_at=now, subject=subject).runs.set(runs)
        _email(list(audience), subject, runs).send()
    log.info("alerted %s about %d runs", ", ".join(audience), len(runs))
    return True


def _subject(runs: list[ReportRun]) -> str:
    if len(runs) == 1:
        run = runs[0]
        return f"{run.report.name} {_verb(run)}: {run.period_label}"
    reports = {run.report_id for run in runs}
    return f"{len(runs)} report runs need attention ({len(reports)} report{'s' if len(reports) > 1 else ''})"


def _verb(run: ReportRun) -> str:
    return {
        Status.FAILED: "failed",
        Status.PARTIALLY_SENT: "was sent only in part",
        Status.HELD: "was held back",
        Status.MISSED: "was missed",
    }[run.status]  # type: ignore[index]


def _email(addresses: list[str], subject: str, runs: list[ReportRun]) -> EmailMultiAlternatives:
    site = conf.REPORTING["SITE_URL"].rstrip("/")
    context = {
        "runs": [{"run": run, "verb": _verb(run), "url": site + run.get_absolute_url()} for run in runs],
        "site_url": site,
    }
    message = EmailMultiAlternatives(
        subject=f"[Scheduled Reports] {subject}",
        body=render_to_string("reporting/email/alert.txt", context),
        from_email=settings.SERVER_EMAIL,
        to=addresses,
    )
    message.attach_alternative(render_to_string("reporting/email/alert.html", context), "text/html")
    return message
