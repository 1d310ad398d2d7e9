"""Small builders for the objects most tests need."""

from __future__ import annotations

from reporting import schedules
from reporting.models import DataSource, Recipient, RecipientList, Report

POSITIONS = {
    "as_of": "2026-11-20",
    "summary": {"total_value": 1234567.89, "day_pnl": -2500.5},
    "data": {
        "positions": [
            {"instrument": "Acme Corp", "quantity": 100, "market_value": 15000.25},
            {"instrument": "Globex 4.25% 2032", "quantity": 50, "market_value": 49875.0},
            {"instrument": "Initech ETF", "quantity": 10, "market_value": 987.65},
        ]
    },
}


def data_source(base_url: str, **fields) -> DataSource:
    return DataSource.objects.create(name=fields.pop("name", f"Source {base_url}"), base_url=base_url, **fields)


def report(source: DataSource, *, addresses: list[str] = ("ann@example.com", "bob@example.com"), **fields) -> Report:
    defaults = {
        "name": "Portfolio",
        "slug": "portfolio",
        "path": "positions",
        "records_path": "data.positions",
        "period_kind": Report.PeriodKind.DAILY,
        "timezone": "Europe/London",
        "template": "reports/table.html",
        "subject_template": "Portfolio — {{ period.label }}",
    }
    created = Report.objects.create(data_source=source, **{**defaults, **fields})
    for address in addresses:
        recipient, _ = Recipient.objects.get_or_create(email=address)
        created.recipients.add(recipient)
    return created


def recipient_list(name: str, addresses: list[str]) -> RecipientList:
    created = RecipientList.objects.create(name=name)
    for address in addresses:
        recipient, _ = Recipient.objects.get_or_create(email=address)
        created.recipients.add(recipient)
    return created


def schedule(report_obj: Report, **cron) -> None:
    spec = schedules.CronSpec(**{"timezone": report_obj.timezone, **cron})
    schedules.save_schedule(report=report_obj, spec=spec)
    report_obj.refresh_from_db()


def report_tasks():
    """The reports' own periodic tasks, without the service's sweeps (installed by a migration)."""
    from django_celery_beat.models import PeriodicTask

    from reporting.schedules import RUN_TASK

    return PeriodicTask.objects.filter(task=RUN_TASK)


def report_crontabs():
    """Crontab schedules other than the sweeps' own."""
    from django_celery_beat.models import CrontabSchedule

    return CrontabSchedule.objects.exclude(periodictask__name__startswith="Reporting: ")


def staff_user(username: str, *codenames: str):
    """A staff user (password "pw") holding the given permissions of the reporting app, e.g. "view_reportrun"."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    found = Permission.objects.filter(content_type__app_label="reporting", codename__in=codenames)
    assert found.count() == len(codenames), f"unknown permission among {codenames}"
    user.user_permissions.add(*found)
    return user


def owner():
    """A user to own reports made through the form (an enabled report needs someone to alert)."""
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="owner", defaults={"email": "owner@example.com"})
    return user


def api_token(user, *scopes: str, **fields) -> str:
    """A token of `user` with `scopes` (default: all of them); returns its secret, for Authorization: Bearer."""
    from reporting.models import ApiToken
    from reporting.services import tokens

    issued = tokens.issue_token(
        user=user,
        name=fields.pop("name", "test"),
        scopes=list(scopes or ApiToken.Scope.values),
        expires_at=None,
        actor=None,
    )
    if fields:
        ApiToken.objects.filter(pk=issued.token.pk).update(**fields)
    return issued.secret
