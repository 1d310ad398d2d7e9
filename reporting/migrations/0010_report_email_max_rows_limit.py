"""Rows shown in the email: at most 1,000 (100,000 made a 44.7 MB email); reports above it come down to it."""

import django.core.validators
from django.db import migrations, models

LIMIT = 1000


def bring_down_to_the_limit(apps, schema_editor):
    # A report saved before the limit would go on sending every row in the email's table;
    # its attachment still holds them all, and its form would refuse the old value anyway.
    Report = apps.get_model("reporting", "Report")
    Report.objects.filter(email_max_rows__gt=LIMIT).update(email_max_rows=LIMIT)


class Migration(migrations.Migration):
    dependencies = [
        ("reporting", "0009_data_source_secrets_and_limits"),
    ]

    operations = [
        migrations.AlterField(
            model_name="report",
            name="email_max_rows",
            field=models.PositiveIntegerField(
                default=100,
                help_text="At most this many rows appear in the email's table (up to 1,000); "
                "the attachment holds them all.",
                validators=[
                    django.core.validators.MaxValueValidator(
                        1000, "Show at most 1,000 rows in the email; the attachment holds them all."
                    )
                ],
                verbose_name="rows shown in the email",
            ),
        ),
        migrations.RunPython(bring_down_to_the_limit, migrations.RunPython.noop),
    ]
