"""Destinations besides email (Slack, Teams, webhooks): the model, the report's choice of them, and
deliveries to them (a channel, the destination, what was sent and what it answered).

An email's original delivery stays unique per (run, address); a destination's per (run, destination).
Editors define destinations and viewers see them, as data sources (the groups of 0006).
"""

import django.core.validators
import django.db.models.deletion
import reporting.models
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

GROUP_PERMISSIONS = {
    "Report viewers": ["view"],
    "Report editors": ["add", "change", "delete", "view"],
}


def grant_destination_permissions(apps, schema_editor):
    """Add the destination's permissions to the groups of 0006 that exist (made afresh: post_migrate is later)."""
    app_config = apps.get_app_config("reporting")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, verbs in GROUP_PERMISSIONS.items():
        group = Group.objects.filter(name=name).first()
        if group is not None:
            codenames = [f"{verb}_destination" for verb in verbs]
            group.permissions.add(
                *Permission.objects.filter(content_type__app_label="reporting", codename__in=codenames)
            )


class Migration(migrations.Migration):

    dependencies = [
        ('reporting', '0015_send_only_if_sender'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('auth', '0012_alter_user_first_name_max_length'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.CreateModel(
            name='Destination',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=200, unique=True)),
                ('kind', models.CharField(choices=[('slack', 'Slack channel (bot token)'), ('teams', 'Microsoft Teams (Workflows webhook)'), ('webhook', 'Webhook (signed JSON)')], max_length=10)),
                ('enabled', models.BooleanField(default=True, help_text='A disabled destination gets nothing (its reports keep it).')),
                ('secret_env_var', models.CharField(help_text='The NAME of the environment variable that holds, on the workers, the Slack bot token (xoxb-…) or the Teams or webhook URL. It must start with REPORTING_SECRET_ (or be listed in REPORTING_SECRET_ENV_VARS). The token or URL itself is never stored here.', max_length=100, validators=[django.core.validators.RegexValidator('^[A-Z_][A-Z0-9_]*$', 'Use the name of an environment variable: capital letters, digits and underscores.'), reporting.models.validate_destination_variable], verbose_name='token or URL environment variable')),
                ('slack_channel', models.CharField(blank=True, help_text="Slack only: the channel's ID (in Slack: the channel's details, at the bottom), e.g. C0123ABCD. Invite the app to the channel.", max_length=30, validators=[django.core.validators.RegexValidator('^[CGD][A-Z0-9]{2,29}$', 'A Slack channel ID, such as C0123ABCD.')], verbose_name='Slack channel ID')),
                ('attach_csv', models.BooleanField(default=True, help_text="Slack: upload the run's CSV; webhook: link to it.", verbose_name='CSV')),
                ('attach_xlsx', models.BooleanField(default=False, help_text="Slack: upload the run's Excel file; webhook: link to it.", verbose_name='Excel')),
                ('signing_secret_env_var', models.CharField(blank=True, help_text='Webhook only: the NAME of the environment variable holding the secret that signs each request (X-Report-Signature, HMAC-SHA256), by the same rule.', max_length=100, validators=[django.core.validators.RegexValidator('^[A-Z_][A-Z0-9_]*$', 'Use the name of an environment variable: capital letters, digits and underscores.'), reporting.models.validate_destination_variable], verbose_name='signing secret environment variable')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'ordering': ['name'],
            },
        ),
        migrations.RemoveConstraint(
            model_name='delivery',
            name='one_original_delivery_per_address',
        ),
        migrations.AddField(
            model_name='delivery',
            name='answer',
            field=models.JSONField(blank=True, default=dict, help_text="A destination's delivery: what the service answered (status, Slack's message and file ids, the tries that had to wait), without any secret."),
        ),
        migrations.AddField(
            model_name='delivery',
            name='channel',
            field=models.CharField(choices=[('email', 'Email'), ('slack', 'Slack'), ('teams', 'Microsoft Teams'), ('webhook', 'Webhook')], default='email', max_length=10),
        ),
        migrations.AddField(
            model_name='delivery',
            name='payload',
            field=models.JSONField(blank=True, default=dict, help_text="A destination's delivery: what was sent (a resend sends it again)."),
        ),
        migrations.AddField(
            model_name='delivery',
            name='target',
            field=models.CharField(blank=True, help_text="A destination's delivery: the destination as it was when sent.", max_length=300),
        ),
        migrations.AddField(
            model_name='delivery',
            name='destination',
            field=models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='deliveries', to='reporting.destination'),
        ),
        migrations.AddField(
            model_name='report',
            name='destinations',
            field=models.ManyToManyField(blank=True, help_text="Besides the email: Slack channels, Teams channels and webhooks that get each run's headline figures and links (Slack: its files too), after the emails are sent. Not for a report that sends each recipient their own report, nor for test sends.", related_name='reports', to='reporting.destination'),
        ),
        migrations.AddConstraint(
            model_name='delivery',
            constraint=models.UniqueConstraint(condition=models.Q(('channel', 'email'), ('kind', 'original')), fields=('run', 'address'), name='one_original_delivery_per_address'),
        ),
        migrations.AddConstraint(
            model_name='delivery',
            constraint=models.UniqueConstraint(condition=models.Q(('destination__isnull', False), ('kind', 'original')), fields=('run', 'destination'), name='one_original_delivery_per_destination'),
        ),
        migrations.RunPython(grant_destination_permissions, migrations.RunPython.noop),
    ]
