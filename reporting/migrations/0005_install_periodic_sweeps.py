"""Install the service's own periodic tasks as django-celery-beat rows, so staff see them in the admin.

- catch-up of missed scheduled runs, every 5 minutes;
- recovery of runs stuck without a heartbeat, every minute;
- failure alerts (one digest per owner, throttled), every minute;
- pruning of the archive by the retention settings, daily at 03:17 UTC.
"""

import json

from django.db import migrations
from django.utils import timezone

EVERY_MINUTE = "every minute"
EVERY_5_MINUTES = "every 5 minutes"
SWEEPS = [
    ("Reporting: catch up missed runs", "reporting.tasks.catch_up_missed_runs", EVERY_5_MINUTES),
    ("Reporting: recover stuck runs", "reporting.tasks.recover_stuck_runs", EVERY_MINUTE),
    ("Reporting: send failure alerts", "reporting.tasks.send_failure_alerts", EVERY_MINUTE),
    ("Reporting: prune the archive", "reporting.tasks.prune_archive", None),
]


def install(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    intervals = {
        EVERY_MINUTE: IntervalSchedule.objects.get_or_create(every=1, period="minutes")[0],
        EVERY_5_MINUTES: IntervalSchedule.objects.get_or_create(every=5, period="minutes")[0],
    }
    nightly, _ = CrontabSchedule.objects.get_or_create(
        minute="17", hour="3", day_of_month="*", month_of_year="*", day_of_week="*", timezone="UTC"
    )
    for name, task, every in SWEEPS:
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={
                "task": task,
                "interval": intervals[every] if every else None,
                "crontab": None if every else nightly,
                "kwargs": json.dumps({}),
                "enabled": True,
                "description": "Installed by the reporting app; keep it enabled.",
            },
        )
    # Tell a running beat to look again (historical models lack PeriodicTasks.update_changed()).
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def uninstall(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _task, _every in SWEEPS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0004_safeguards"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
