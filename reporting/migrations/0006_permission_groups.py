"""Three permission groups for staff, so nobody needs to be a superuser to do their job.

- Report viewers: read everything, the archive included (read-only);
- Report editors: define reports, data sources and recipients, and their schedules;
- Report senders: run reports now, send tests, resend and release runs.

Running it again adds missing permissions to existing groups and removes none.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW_ARCHIVE = [
    "reporting.view_report",
    "reporting.view_reportrun",
    "reporting.view_delivery",
    "reporting.view_runattachment",
    "reporting.view_datasource",
    "reporting.view_recipient",
    "reporting.view_recipientlist",
]
EDIT_DEFINITIONS = [
    f"reporting.{verb}_{model}"
    for model in ("report", "datasource", "recipient", "recipientlist")
    for verb in ("add", "change", "delete", "view")
] + [
    "django_celery_beat.view_periodictask",
    "django_celery_beat.change_periodictask",
    "django_celery_beat.view_crontabschedule",
    "django_celery_beat.change_crontabschedule",
]
SEND = [
    "reporting.view_report",
    "reporting.view_reportrun",
    "reporting.view_delivery",
    "reporting.view_runattachment",
    "reporting.run_report",
    "reporting.resend_reportrun",
    "reporting.release_reportrun",
]
GROUPS = {"Report viewers": VIEW_ARCHIVE, "Report editors": EDIT_DEFINITIONS, "Report senders": SEND}


def install_groups(apps, schema_editor):
    # Permissions are made after migrations (post_migrate): the custom ones (run_report, …)
    # may not exist yet on a fresh database, so make them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, permissions in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for permission in permissions:
            app_label, codename = permission.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0005_install_periodic_sweeps"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install_groups, remove_groups)]
