"""Data sources, report definitions, recipients, and the archive of runs and deliveries."""

import re
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import Q, QuerySet
from django.db.models.functions import Upper
from django.urls import reverse
from django.utils import timezone
from django.utils.deconstruct import deconstructible
from django_celery_beat.models import PeriodicTask

from reporting import addresses, conf, periods
from reporting.periods import Period
from reporting.pipeline import conditions, fetch, formats, layout, pdf

ENV_VAR_NAME = RegexValidator(
    r"^[A-Z_][A-Z0-9_]*$",
    "Use the name of an environment variable: capital letters, digits and underscores.",
)


@deconstructible
class FetchRule:
    """A field validator running one of `fetch`'s checks, which return their refusal in words ('' when fine).

    The fetch runs the same checks again, for a source saved before them or around the form.
    """

    def __init__(self, check: str, *args: str):
        self.check, self.args = check, args

    def __call__(self, value: object) -> None:
        problem = getattr(fetch, self.check)(*self.args, value)
        if problem:
            raise ValidationError(problem)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FetchRule) and (self.check, self.args) == (other.check, other.args)


TIMEZONE_CHOICES = sorted((name, name) for name in available_timezones())
EMAIL_MAX_ROWS_LIMIT = 1000


class DataSource(models.Model):
    """An HTTP JSON API that reports read from."""

    class AuthScheme(models.TextChoices):
        NONE = "none", "No authentication"
        BEARER = "bearer", "Bearer token (Authorization: Bearer …)"
        HEADER = "header", "Secret in a custom header"
        BASIC = "basic", "HTTP basic (variable holds user:password)"

    name = models.CharField(max_length=200, unique=True)
    base_url = models.URLField(
        max_length=500, validators=[FetchRule("url_problem")], help_text="e.g. https://api.internal.example/v1/"
    )
    auth_scheme = models.CharField(max_length=10, choices=AuthScheme, default=AuthScheme.NONE)
    auth_header_name = models.CharField(
        max_length=100,
        blank=True,
        validators=[FetchRule("header_name_problem")],
        help_text="Header that carries the secret when the scheme is 'custom header', e.g. X-API-Key.",
    )
    secret_env_var = models.CharField(
        "secret environment variable",
        max_length=100,
        blank=True,
        validators=[ENV_VAR_NAME, FetchRule("secret_variable_problem")],
        help_text="The NAME of the environment variable that holds the secret on the workers; it must start "
        "with REPORTING_SECRET_ (or be listed in REPORTING_SECRET_ENV_VARS). The secret itself is never stored here.",
    )
    connect_timeout = models.FloatField(
        default=5.0,
        validators=[FetchRule("timeout_problem", "connect")],
        help_text="Seconds to wait for a connection (at most 300).",
    )
    read_timeout = models.FloatField(
        default=30.0,
        validators=[FetchRule("timeout_problem", "read")],
        help_text="Seconds to wait for data between reads (at most 300).",
    )
    verify_tls = models.BooleanField("verify TLS certificates", default=True)
    drop_fields = models.TextField(
        "fields removed from the archived data",
        blank=True,
        help_text="Keys or dotted paths, one per line or comma-separated, removed from the answer before it is "
        "archived or rendered: a key name (session_token) wherever it occurs, a dotted path "
        "(meta.session.token) from the top, through every item of a list.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# The recipient's own fields, which templates see beside the attributes under the same names.
RESERVED_ATTRIBUTES = frozenset({"email", "name", "active"})
MAX_ATTRIBUTES = 50
# A template tag or variable that names the recipient: {{ recipient.client_id }}, {% if recipient.x %}.
USES_RECIPIENT = re.compile(r"\{[{%][^}]*\brecipient\b")
MAX_ATTRIBUTE_LENGTH = 500


def attributes_problems(attributes: object) -> list[str]:
    """What is wrong with a recipient's attributes, in words ([] when fine): names, values, sizes."""
    if not isinstance(attributes, dict):
        return ["Attributes must be names with values (a JSON object)."]
    problems = []
    if len(attributes) > MAX_ATTRIBUTES:
        problems.append(f"At most {MAX_ATTRIBUTES} attributes; there are {len(attributes)}.")
    for name, value in attributes.items():
        if not ATTRIBUTE_NAME.fullmatch(str(name)):
            problems.append(
                f"'{name}' is not an attribute name: use letters, digits and underscores, not starting with a digit."
            )
        elif name.lower() in RESERVED_ATTRIBUTES:
            problems.append(f"'{name}' is the recipient's own field, not an attribute: use another name.")
        if not isinstance(value, str):
            problems.append(f"The value of '{name}' must be text, not {type(value).__name__}.")
        elif len(value) > MAX_ATTRIBUTE_LENGTH:
            problems.append(f"The value of '{name}' is longer than {MAX_ATTRIBUTE_LENGTH} characters.")
        elif any(not character.isprintable() for character in value):
            problems.append(f"The value of '{name}' contains a line break or another control character.")
    return problems


def validate_attributes(attributes: object) -> None:
    problems = attributes_problems(attributes)
    if problems:
        raise ValidationError(problems)


class Recipient(models.Model):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True, help_text="Inactive recipients get no reports.")
    attributes = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_attributes],
        help_text="What a per-recipient report knows about this recipient, e.g. client_id, currency, language: "
        "it selects their rows or fills the path and query of their fetch.",
    )

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


class RecipientList(models.Model):
    """A reusable group of recipients, e.g. 'Finance leadership'."""

    name = models.CharField(max_length=200, unique=True)
    recipients = models.ManyToManyField(Recipient, related_name="lists", blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def validate_layout(value: object) -> None:
    problems = layout.problems(value)
    if problems:
        raise ValidationError(problems)


def validate_sender_address(address: str) -> None:
    """A report's From address must be at a domain of REPORTING_SENDER_DOMAINS (read when checked)."""
    problem = addresses.sender_problem(address, conf.REPORTING["SENDER_DOMAINS"])
    if problem:
        raise ValidationError(problem)


def validate_one_line(text: str) -> None:
    problem = addresses.one_line_problem(text)
    if problem:
        raise ValidationError(problem)


def validate_list_unsubscribe(url: str) -> None:
    problem = addresses.list_unsubscribe_problem(url)
    if problem:
        raise ValidationError(problem)


def report_template_choices() -> list[tuple[str, str]]:
    """The report body templates under reports/ in the template folders (the app's and the project's), by name."""
    folders = [folder / "reports" for folder in conf.template_dirs()]
    names = sorted({path.name for folder in folders for path in folder.glob("*.html") if not path.name.startswith("_")})
    return [(f"reports/{name}", name.removesuffix(".html").replace("_", " ").capitalize()) for name in names]


class Report(models.Model):
    class PeriodKind(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly (Monday to Sunday)"
        MONTHLY = "monthly", "Monthly"
        QUARTERLY = "quarterly", "Quarterly"
        NONE = "none", "None (a snapshot at the scheduled time)"

    class Audience(models.TextChoices):
        EVERYONE = "everyone", "The same email to every recipient"
        EACH = "each", "Each recipient their own report"

    class PerRecipientData(models.TextChoices):
        SPLIT = "split", "One fetch, its rows split by a field matched to an attribute"
        FETCH = "fetch", "A fetch per recipient, their attributes in the path and query"

    class WhenNoRows(models.TextChoices):
        SKIP = "skip", "Skip the recipient (recorded on the run)"
        SEND_EMPTY = "send_empty", "Send them the report with no rows"
        HOLD = "hold", "Hold their report for staff"

    class SendOnlyIf(models.TextChoices):
        ALWAYS = conditions.ALWAYS, "Always send"
        HAS_ROWS = conditions.HAS_ROWS, "There are rows"
        THRESHOLD = conditions.THRESHOLD, "A figure crosses a threshold"
        CHANGED = conditions.CHANGED, "The data changed since the last run that was sent"

    class FigureIs(models.TextChoices):
        VALUE = conditions.VALUE, "A value in the response (a dotted path, e.g. summary.total_value)"
        TOTAL = conditions.TOTAL, "The total of a field over the rows (e.g. market_value)"

    class Operator(models.TextChoices):
        ABOVE = "above", "is above"
        AT_LEAST = "at_least", "is at least"
        BELOW = "below", "is below"
        AT_MOST = "at_most", "is at most"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    data_source = models.ForeignKey(DataSource, on_delete=models.PROTECT, related_name="reports")
    path = models.CharField(
        max_length=500,
        blank=True,
        help_text="Path under the data source's base URL; may use the period, e.g. "
        "\"portfolio/{{ period.start|date:'Y-m' }}\".",
    )
    query_params = models.JSONField(
        default=dict,
        blank=True,
        help_text="Query parameters as a JSON object; values may use the period, e.g. "
        '{"from": "{{ period.start|date:\'Y-m-d\' }}", "to": "{{ period.end|date:\'Y-m-d\' }}"}.',
    )
    records_path = models.CharField(
        max_length=200,
        blank=True,
        help_text="Dotted path to the list of rows in the response, e.g. data.positions. "
        "Empty when the response itself is the list.",
    )
    period_kind = models.CharField("period", max_length=10, choices=PeriodKind, default=PeriodKind.DAILY)
    timezone = models.CharField(max_length=64, choices=TIMEZONE_CHOICES, default="UTC")
    template = models.CharField(max_length=200, help_text="Body template under templates/reports/.")
    subject_template = models.CharField(
        max_length=300, default="{{ report.name }} — {{ period.label }}", help_text="A Django template."
    )
    recipients = models.ManyToManyField(Recipient, blank=True, related_name="reports")
    recipient_lists = models.ManyToManyField(RecipientList, blank=True, related_name="reports")
    destinations = models.ManyToManyField(  # type: ignore[var-annotated]
        "Destination",
        blank=True,
        related_name="reports",
        help_text="Besides the email: Slack channels, Teams channels and webhooks that get each run's headline "
        "figures and links (Slack: its files too), after the emails are sent. Not for a report that sends each "
        "recipient their own report, nor for test sends.",
    )
    audience = models.CharField(
        max_length=10,
        choices=Audience,
        default=Audience.EVERYONE,
        help_text="Each recipient their own report: every recipient (of the report and its lists) gets an "
        "email with their own data only, by their attributes.",
    )
    per_recipient_data = models.CharField(
        "each recipient's data",
        max_length=10,
        choices=PerRecipientData,
        default=PerRecipientData.SPLIT,
    )
    split_field = models.CharField(
        "split rows by field",
        max_length=200,
        blank=True,
        help_text="One fetch, split: the field of each row (a dotted path within the row, e.g. client_id) "
        "that says whose row it is.",
    )
    split_attribute = models.CharField(
        "matched to attribute",
        max_length=64,
        blank=True,
        help_text="The recipient attribute a row's field must equal, e.g. client_id. Compared as text, exactly: "
        "'007' is not 7, 'ACME' is not 'acme'.",
    )
    when_no_rows = models.CharField(
        "a recipient with no rows",
        max_length=10,
        choices=WhenNoRows,
        default=WhenNoRows.SKIP,
    )
    attach_csv = models.BooleanField("attach CSV", default=True)
    attach_xlsx = models.BooleanField(
        "attach Excel", default=False, help_text="An .xlsx workbook of all rows: numbers and dates as Excel types."
    )
    attach_pdf = models.BooleanField(
        "attach PDF",
        default=False,
        help_text="The email as a PDF: its table and charts on numbered pages, the report and period on each.",
    )
    pdf_paper = models.CharField("PDF paper", max_length=10, choices=pdf.PAPERS, default=pdf.A4)
    charts = models.JSONField(
        default=list,
        blank=True,
        help_text="Charts drawn above the table, e.g. "
        '[{"kind": "line", "x": "date", "y": "value", "title": "Portfolio value"}, '
        '{"kind": "bar", "x": "asset_class", "y": "market_value", "title": "Allocation"}]. '
        "A line is drawn over a date field; bars sum a number field by category.",
    )
    layout = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_layout],
        help_text="The table's columns, labels, formats, sort, totals, subtotals, headline figures and intro, "
        "designed on this form (the Table template lays the email out by it; the CSV and Excel files use "
        "its columns and formats). Empty: every field of the rows, as the API names it.",
    )
    locale = models.CharField(
        "number and date format",
        max_length=10,
        choices=formats.LOCALES,
        default=formats.DEFAULT_LOCALE,
        help_text="How the layout writes numbers, amounts and dates, the same in the email, the CSV and the "
        "Excel file: 1,234.50 (en-GB) or 1.234,50 (de-DE). The CSV of a locale with a decimal comma "
        "separates its cells with ';', as spreadsheets there expect.",
    )
    email_max_rows = models.PositiveIntegerField(
        "rows shown in the email",
        default=100,
        # 100,000 rows made a 44.7 MB email: past a thousand, the attachment is the place to read them.
        validators=[
            MaxValueValidator(
                EMAIL_MAX_ROWS_LIMIT,
                f"Show at most {EMAIL_MAX_ROWS_LIMIT:,} rows in the email; the attachment holds them all.",
            )
        ],
        help_text=f"At most this many rows appear in the email's table (up to {EMAIL_MAX_ROWS_LIMIT:,}); "
        "the attachment holds them all.",
    )
    enabled = models.BooleanField(default=True)
    catch_up_hours = models.PositiveIntegerField(
        "catch-up window (hours)",
        default=24,
        help_text="A scheduled run missed (beat or the broker was down) is run late within this many hours "
        "of its slot; an older one is recorded as missed, for staff to run by hand.",
    )
    check_min_rows = models.PositiveIntegerField(
        "minimum rows",
        default=1,
        help_text="Hold the report back when the data has fewer rows than this (0: no check).",
    )
    check_required_fields = models.CharField(
        "required fields",
        max_length=500,
        blank=True,
        help_text="Comma-separated fields every row must have (not empty), e.g. account, value.",
    )
    check_max_age_field = models.CharField(
        "timestamp field",
        max_length=200,
        blank=True,
        help_text="A dotted path in the response (e.g. meta.as_of) to a date or timestamp that must be recent.",
    )
    check_max_age_hours = models.PositiveIntegerField(
        "maximum age (hours)",
        null=True,
        blank=True,
        help_text="Hold the report back when the timestamp field is older than this.",
    )
    send_only_if = models.CharField(
        "send only if",
        max_length=10,
        choices=SendOnlyIf,
        default=SendOnlyIf.ALWAYS,
        help_text="A scheduled run whose data does not meet this is skipped: nothing is sent, the run says why, "
        "and nobody is alerted. Run now, re-runs and tests always send.",
    )
    threshold_figure_is = models.CharField("figure is", max_length=10, choices=FigureIs, default=FigureIs.VALUE)
    threshold_figure = models.CharField(
        "figure",
        max_length=200,
        blank=True,
        help_text="A dotted path in the response (e.g. summary.total_value), or the field of each row to total "
        "(e.g. market_value). A number, or text that reads as one.",
    )
    threshold_operator = models.CharField("comparison", max_length=10, choices=Operator, default=Operator.ABOVE)
    threshold_value = models.DecimalField(
        "threshold", max_digits=24, decimal_places=6, null=True, blank=True, help_text="e.g. 1000000 or -2500.50"
    )
    from_name = models.CharField(
        "From name",
        max_length=100,
        blank=True,
        validators=[validate_one_line],
        help_text="The sender's name as recipients see it, e.g. Finance team. Empty: the service's own.",
    )
    from_address = models.EmailField(
        "From address",
        blank=True,
        validators=[validate_sender_address],
        help_text="Empty: the service's own address (DEFAULT_FROM_EMAIL). Only at the domains the service "
        "allows (REPORTING_SENDER_DOMAINS), so that the mail is not taken for spoofed.",
    )
    reply_to = models.EmailField(
        "Reply-To", blank=True, help_text="Where replies go, e.g. the team's shared mailbox. Empty: to the sender."
    )
    list_unsubscribe = models.CharField(
        "List-Unsubscribe",
        max_length=500,
        blank=True,
        validators=[validate_list_unsubscribe],
        help_text="For recipients outside the company (not at REPORTING_INTERNAL_DOMAINS): a mailto: address or "
        "an https: URL their mail program offers as Unsubscribe. An https: URL must unsubscribe on a POST "
        "(one click, RFC 8058).",
    )
    periodic_task = models.OneToOneField(
        PeriodicTask, null=True, blank=True, editable=False, on_delete=models.SET_NULL, related_name="report"
    )
    # A rule the crontab cannot say, applied to its slots: "last_business_day" keeps only the
    # slots on the last weekday (Mon-Fri) of their month. Written with the crontab by
    # reporting.schedules.save_schedule; see reporting.schedules for why it lives here.
    schedule_rule = models.CharField(
        max_length=40,
        blank=True,
        default="",
        editable=False,
        choices=[
            ("", "None (the crontab alone)"),
            ("last_business_day", "The last business day (Mon-Fri) of the month"),
        ],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("run_report", "Can run a report now or send a test")]
        # The admin's list order (name, then -pk to make it total): the first page is read
        # from the index instead of sorting every report.
        indexes = [models.Index(fields=["name", "-id"], name="report_name_id_idx")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("admin:reporting_report_change", args=[self.pk])

    def clean(self) -> None:
        """A per-recipient report says how each recipient's rows are found; no other report uses `recipient`."""
        super().clean()
        self._clean_send_only_if()
        uses_recipient = bool(USES_RECIPIENT.search(self.path + " " + str(self.query_params)))
        if not self.is_per_recipient:
            if uses_recipient:
                raise ValidationError(
                    {"audience": "The path or query uses the recipient: choose 'Each recipient their own report'."}
                )
            return
        if self.per_recipient_data == self.PerRecipientData.SPLIT:
            errors = {}
            if not self.split_field.strip():
                errors["split_field"] = "Say which field of each row says whose row it is, e.g. client_id."
            if not self.split_attribute.strip():
                errors["split_attribute"] = "Say which recipient attribute the field must equal, e.g. client_id."
            elif not ATTRIBUTE_NAME.fullmatch(self.split_attribute.strip()):
                errors["split_attribute"] = "An attribute name: letters, digits and underscores."
            if errors:
                raise ValidationError(errors)
        elif not uses_recipient:
            # Without the recipient in the request, every recipient would get the same whole answer.
            raise ValidationError(
                {
                    "path": "A fetch per recipient must use the recipient in the path or a query parameter, "
                    "e.g. clients/{{ recipient.client_id }}/statement."
                }
            )

    def _clean_send_only_if(self) -> None:
        """A threshold needs its figure and value; a fetch per recipient has no one answer to judge."""
        errors = {}
        if self.send_only_if == self.SendOnlyIf.THRESHOLD:
            if not self.threshold_figure.strip():
                errors["threshold_figure"] = (
                    "Give the figure: a dotted path in the response (e.g. summary.total_value), or the field of "
                    "each row to total (e.g. market_value)."
                )
            if self.threshold_value is None:
                errors["threshold_value"] = "Give the threshold the figure is compared with, e.g. 1000000."
        if (
            self.send_only_if != self.SendOnlyIf.ALWAYS
            and self.is_per_recipient
            and self.per_recipient_data == self.PerRecipientData.FETCH
        ):
            errors["send_only_if"] = (
                "A fetch per recipient has no one answer to judge before sending: use 'Always send' (and 'A recipient "
                "with no rows: skip' to send nobody an empty report), or 'One fetch, split'."
            )
        if errors:
            raise ValidationError(errors)

    @property
    def condition(self) -> conditions.Condition:
        """The report's "Send only if", as the conditions module takes it."""
        return conditions.Condition(
            kind=self.send_only_if,
            figure=self.threshold_figure.strip(),
            figure_is=self.threshold_figure_is,
            operator=self.threshold_operator,
            threshold=self.threshold_value,
        )

    def sender(self) -> str:
        """The From header of the report's emails: its own sender, else DEFAULT_FROM_EMAIL."""
        return addresses.sender_header(
            name=self.from_name.strip(), address=self.from_address.strip(), default=settings.DEFAULT_FROM_EMAIL
        )

    @property
    def is_per_recipient(self) -> bool:
        return self.audience == self.Audience.EACH

    def active_recipients(self) -> QuerySet:
        """The active recipients of the report and its lists, each once.

        Matched by id in each link table: one query joining both ways at once (reports or lists'
        reports) made PostgreSQL join every recipient to every list for each run, 90 ms a run
        with 1,500 recipients in all, growing with everyone's recipients, not the report's.
        """
        direct = Report.recipients.through.objects.filter(report_id=self.pk).values("recipient_id")
        listed = RecipientList.recipients.through.objects.filter(recipientlist__reports=self).values("recipient_id")
        return Recipient.objects.filter(active=True).filter(Q(pk__in=direct) | Q(pk__in=listed)).order_by("email")

    def recipient_addresses(self) -> list[str]:
        """Active addresses from the report and its lists, each once, in a stable order."""
        unique: dict[str, str] = {}
        for email in sorted(self.active_recipients().values_list("email", flat=True)):
            unique.setdefault(email.lower(), email)
        return list(unique.values())


def attachment_upload_to(instance: "RunAttachment", filename: str) -> str:
    if instance.part_id:
        return f"runs/{instance.run_id}/parts/{instance.part_id}/{filename}"
    return f"runs/{instance.run_id}/{filename}"


def snapshot_upload_to(instance: "ReportRun", filename: str) -> str:
    return f"runs/{instance.pk}/{filename}"


class ReportRun(models.Model):
    """One execution of a report for one period: the archive entry."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Run now"
        CATCH_UP = "catch-up", "Catch-up"
        TEST = "test", "Test send"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RETRYING = "retrying", "Waiting to retry"
        FETCHING = "fetching", "Fetching"
        RENDERING = "rendering", "Rendering"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        PARTIALLY_SENT = "partially_sent", "Partially sent"
        FAILED = "failed", "Failed"
        HELD = "held", "Held (data check failed)"
        MISSED = "missed", "Missed"
        SKIPPED = "skipped", "Skipped (condition not met)"

    # Not yet at an end: each of these has a deadline (deadline_at), enforced by a sweep.
    WORKING = (Status.QUEUED, Status.RETRYING, Status.FETCHING, Status.RENDERING, Status.SENDING)
    FINISHED = (Status.SENT, Status.PARTIALLY_SENT, Status.FAILED, Status.MISSED, Status.SKIPPED)
    # Something went out: the runs "only if the data changed" compares with.
    SENT_STATUSES = (Status.SENT, Status.PARTIALLY_SENT)
    # Triggers that stand for "the" run of a period: at most one each per period.
    SCHEDULED_TRIGGERS = (Trigger.SCHEDULE, Trigger.CATCH_UP)

    # No index of its own: the index on (report, -created_at) leads with report_id and serves every
    # lookup by report (and the PROTECT check when a report is deleted).
    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="runs", db_index=False)
    # What the run reports on, kept on the run itself: editing the report later (its name,
    # period or timezone) must not change how an archived run reads or resends.
    report_name = models.CharField(max_length=200, blank=True, help_text="The report's name when the run was made.")
    period_kind = models.CharField("period", max_length=10, choices=Report.PeriodKind, blank=True)
    period_timezone = models.CharField(
        "timezone", max_length=64, blank=True, help_text="The report's timezone when the run was made."
    )
    period_start = models.DateField()
    period_end = models.DateField(help_text="Last day of the period, inclusive.")
    period_key = models.CharField(max_length=64, editable=False)
    period_label = models.CharField(max_length=100, blank=True)
    scheduled_for = models.DateTimeField(null=True, blank=True, help_text="The schedule slot this run belongs to.")
    trigger = models.CharField(max_length=10, choices=Trigger)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status, default=Status.QUEUED)  # indexed in Meta
    recipients = models.JSONField(default=list, help_text="The addresses this run is for.")
    per_recipient = models.BooleanField(
        default=False, editable=False, help_text="Each recipient got their own report: see the recipient reports."
    )
    split_field = models.CharField(
        max_length=200,
        blank=True,
        editable=False,
        help_text="A per-recipient run of one fetch: the field of each row its rows were split by.",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True)
    rendered_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    deadline_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="While the run is not finished: when the deadline sweep takes it if it has not moved on.",
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False, help_text="Last sign of life.")
    attempts = models.PositiveIntegerField(default=0)
    recoveries = models.PositiveSmallIntegerField(
        default=0, editable=False, help_text="Times the stuck-run sweep took the run back from a silent worker."
    )
    checks_released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who sent a held run anyway.",
    )
    notes = models.TextField(blank=True, help_text="What staff should know about this run, e.g. a linked attachment.")
    alerted_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the owner was told that this run failed or was held."
    )
    legal_hold = models.BooleanField(default=False, help_text="Never pruned by retention while set.")
    error = models.TextField(blank=True, help_text="What went wrong, in words.")
    error_detail = models.TextField(blank=True, help_text="Technical detail (traceback).")
    request_url = models.CharField(max_length=2000, blank=True)
    data_snapshot = models.FileField(upload_to=snapshot_upload_to, blank=True, max_length=300)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    body_html = models.TextField(blank=True)
    body_text = models.TextField(blank=True)
    # The sender as the report said when the run was made: a resend says the same after an edit.
    from_email = models.CharField("From", max_length=400, blank=True, help_text="Empty: DEFAULT_FROM_EMAIL.")
    reply_to = models.EmailField("Reply-To", blank=True)
    list_unsubscribe = models.CharField("List-Unsubscribe", max_length=500, blank=True)
    rows_hash = models.CharField(
        max_length=64,
        blank=True,
        editable=False,
        help_text="sha256 of the rows as canonical JSON, for a report sent only if its data changed.",
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        get_latest_by = "created_at"
        permissions = [
            ("resend_reportrun", "Can resend an archived report run"),
            ("release_reportrun", "Can send a held run anyway or re-run it"),
            ("legal_hold_reportrun", "Can set or clear a run's legal hold"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["report", "period_key"],
                condition=Q(trigger__in=["schedule", "catch-up"]),
                name="one_scheduled_run_per_period",
            )
        ]
        indexes = [
            models.Index(fields=["report", "-created_at"]),
            models.Index(fields=["deadline_at"], condition=Q(deadline_at__isnull=False), name="run_deadline_idx"),
            # A plain btree for status = / IN: db_index=True would add, on PostgreSQL, a second
            # (varchar_pattern_ops) index for LIKE 'prefix%', which no query makes.
            models.Index(fields=["status"], name="run_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.report_name or self.report} · {self.period_label} · {self.get_status_display()}"

    def save(self, *args, **kwargs) -> None:
        if self._state.adding:
            self._fill_in_from_report()
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("admin:reporting_reportrun_change", args=[self.pk])

    def _fill_in_from_report(self) -> None:
        """Record what the run is about as the report says now, where the creator did not."""
        for name in ("period_start", "period_end"):  # a date may be given as text, as Django allows
            setattr(self, name, self._meta.get_field(name).to_python(getattr(self, name)))  # type: ignore[union-attr]
        report = self.report
        self.report_name = self.report_name or report.name
        self.period_kind = self.period_kind or report.period_kind
        self.period_timezone = self.period_timezone or report.timezone
        self.period_label = self.period_label or self.period.label

    @property
    def period(self) -> Period:
        """The period this run reports on, in the terms it was made with."""
        at = None
        if self.period_kind == periods.NONE and self.scheduled_for is not None:
            at = self.scheduled_for.astimezone(ZoneInfo(self.period_timezone or "UTC"))
        return Period(kind=self.period_kind, start=self.period_start, end=self.period_end, at=at)

    @property
    def is_rendered(self) -> bool:
        return self.rendered_at is not None

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class RunPart(models.Model):
    """One recipient's own report within a per-recipient run: their data, their email, their delivery.

    Made once per (run, address), by a unique constraint, when the run is planned; worked on
    by one worker at a time (a conditional UPDATE and a lease, as a run is).
    """

    _fetched_now: bool  # set by reporting.parts: this attempt fetched data not written yet

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        WORKING = "working", "Working"
        SENT = "sent", "Sent"
        SKIPPED = "skipped", "Skipped"
        HELD = "held", "Held (no rows)"
        FAILED = "failed", "Failed"

    OPEN = (Status.PENDING, Status.WORKING)

    # No index of its own: the unique (run, address) and the index on (run, status) lead with run_id.
    run = models.ForeignKey(ReportRun, on_delete=models.CASCADE, related_name="parts", db_index=False)
    recipient = models.ForeignKey(Recipient, null=True, blank=True, on_delete=models.SET_NULL, related_name="parts")
    address = models.EmailField(help_text="Where it is sent (for a test send: the staff member's own address).")
    recipient_name = models.CharField(max_length=200, blank=True)
    recipient_email = models.EmailField(blank=True, help_text="Whose report it is.")
    attributes = models.JSONField(default=dict, blank=True, help_text="The recipient's attributes when it was made.")
    key = models.CharField(max_length=500, blank=True, help_text="The attribute value their rows were matched on.")
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    not_before = models.DateTimeField(null=True, blank=True, editable=False, help_text="Waiting to retry until.")
    attempts = models.PositiveSmallIntegerField(default=0)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who sent it anyway after it was held with no rows.",
    )
    request_url = models.CharField(max_length=2000, blank=True)
    data = models.JSONField(null=True, blank=True, help_text="Their data, as their email was rendered from it.")
    row_count = models.PositiveIntegerField(null=True, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    body_html = models.TextField(blank=True)
    body_text = models.TextField(blank=True)
    rendered_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="What went wrong, in words.")
    error_detail = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "pk"]
        verbose_name = "recipient report"
        constraints = [models.UniqueConstraint(fields=["run", "address"], name="one_part_per_run_and_address")]
        indexes = [
            models.Index(fields=["run", "status"], name="part_run_status_idx"),
            models.Index(Upper("recipient_email"), name="part_recipient_email_upper_idx"),
            models.Index(fields=["key"], name="part_key_idx"),  # plain btree, no LIKE (pattern_ops) twin
        ]

    def __str__(self) -> str:
        return f"{self.recipient_name or self.recipient_email or self.address} · {self.get_status_display()}"

    def get_absolute_url(self) -> str:
        return reverse("admin:reporting_runpart_change", args=[self.pk])

    @property
    def is_rendered(self) -> bool:
        return self.rendered_at is not None

    @property
    def who(self) -> str:
        """The recipient as staff read it: "Name <email>", and the key their rows were matched on."""
        person = f"{self.recipient_name} <{self.recipient_email}>" if self.recipient_name else self.recipient_email
        return f"{person} ({self.key})" if self.key else person


class RunAttachment(models.Model):
    run = models.ForeignKey(ReportRun, on_delete=models.CASCADE, related_name="attachments")
    part = models.ForeignKey(
        RunPart, null=True, blank=True, on_delete=models.CASCADE, related_name="attachments", editable=False
    )
    filename = models.CharField(max_length=200)
    mimetype = models.CharField(max_length=100)
    file = models.FileField(upload_to=attachment_upload_to, max_length=300)
    size = models.PositiveBigIntegerField()
    linked = models.BooleanField(
        default=False, help_text="Too large to attach: the email carries a link to the archived file instead."
    )
    content_id = models.CharField(
        max_length=100, blank=True, help_text="Set for an image shown inside the email (a chart): its cid: name."
    )

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "filename"], condition=Q(part__isnull=True), name="unique_attachment_name"
            ),
            models.UniqueConstraint(
                fields=["part", "filename"], condition=Q(part__isnull=False), name="unique_part_attachment_name"
            ),
        ]

    def __str__(self) -> str:
        return self.filename


def validate_destination_variable(name: str) -> None:
    """The secret-variable rule of data sources, in a destination's words."""
    problem = fetch.secret_variable_problem(name)
    if problem:
        raise ValidationError(problem.replace("a data source's secret", "a destination's secret"))


class Destination(models.Model):
    """Where a run goes besides email: a Slack channel, a Microsoft Teams channel or a signed webhook.

    Its token or URL is a secret: only the name of the environment variable holding it is kept.
    """

    class Kind(models.TextChoices):
        SLACK = "slack", "Slack channel (bot token)"
        TEAMS = "teams", "Microsoft Teams (Workflows webhook)"
        WEBHOOK = "webhook", "Webhook (signed JSON)"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=10, choices=Kind)
    enabled = models.BooleanField(default=True, help_text="A disabled destination gets nothing (its reports keep it).")
    secret_env_var = models.CharField(
        "token or URL environment variable",
        max_length=100,
        validators=[ENV_VAR_NAME, validate_destination_variable],
        help_text="The NAME of the environment variable that holds, on the workers, the Slack bot token "
        "(xoxb-…) or the Teams or webhook URL. It must start with REPORTING_SECRET_ (or be listed in "
        "REPORTING_SECRET_ENV_VARS). The token or URL itself is never stored here.",
    )
    slack_channel = models.CharField(
        "Slack channel ID",
        max_length=30,
        blank=True,
        validators=[RegexValidator(r"^[CGD][A-Z0-9]{2,29}$", "A Slack channel ID, such as C0123ABCD.")],
        help_text="Slack only: the channel's ID (in Slack: the channel's details, at the bottom), e.g. C0123ABCD. "
        "Invite the app to the channel.",
    )
    attach_csv = models.BooleanField("CSV", default=True, help_text="Slack: upload the run's CSV; webhook: link to it.")
    attach_xlsx = models.BooleanField(
        "Excel", default=False, help_text="Slack: upload the run's Excel file; webhook: link to it."
    )
    signing_secret_env_var = models.CharField(
        "signing secret environment variable",
        max_length=100,
        blank=True,
        validators=[ENV_VAR_NAME, validate_destination_variable],
        help_text="Webhook only: the NAME of the environment variable holding the secret that signs each "
        "request (X-Report-Signature, HMAC-SHA256), by the same rule.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        errors = {}
        if self.kind == self.Kind.SLACK and not self.slack_channel:
            errors["slack_channel"] = "A Slack destination needs the ID of its channel."
        if self.kind != self.Kind.SLACK and self.slack_channel:
            errors["slack_channel"] = "Only a Slack destination has a channel: its URL says where it posts."
        if self.kind == self.Kind.WEBHOOK and not self.signing_secret_env_var:
            errors["signing_secret_env_var"] = "A webhook needs a signing secret, so its receiver can check it is us."
        if self.kind != self.Kind.WEBHOOK and self.signing_secret_env_var:
            errors["signing_secret_env_var"] = "Only a webhook signs its requests."
        if errors:
            raise ValidationError(errors)

    @property
    def described(self) -> str:
        """The destination as a delivery keeps it: "Slack #C0123ABCD: Finance", "Webhook: Ledger"."""
        where = f" #{self.slack_channel}" if self.kind == self.Kind.SLACK else ""
        return f"{self.Kind(self.kind).label.split(' (')[0]}{where}: {self.name}"


class Delivery(models.Model):
    """One email of a run to one address, or one message to a destination: the original send or a resend."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        SLACK = "slack", "Slack"
        TEAMS = "teams", "Microsoft Teams"
        WEBHOOK = "webhook", "Webhook"

    class Kind(models.TextChoices):
        ORIGINAL = "original", "Original send"
        RESEND = "resend", "Resend"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        BOUNCED = "bounced", "Bounced"
        FAILED = "failed", "Failed"

    ACCEPTED = (Status.SENT, Status.DELIVERED)

    run = models.ForeignKey(ReportRun, on_delete=models.CASCADE, related_name="deliveries")
    part = models.ForeignKey(
        RunPart, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries", editable=False
    )
    address = models.EmailField()
    channel = models.CharField(max_length=10, choices=Channel, default=Channel.EMAIL)
    destination = models.ForeignKey(
        Destination, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries", editable=False
    )
    target = models.CharField(
        max_length=300, blank=True, help_text="A destination's delivery: the destination as it was when sent."
    )
    payload = models.JSONField(
        default=dict, blank=True, help_text="A destination's delivery: what was sent (a resend sends it again)."
    )
    answer = models.JSONField(
        default=dict,
        blank=True,
        help_text="A destination's delivery: what the service answered (status, Slack's message and file ids, "
        "the tries that had to wait), without any secret.",
    )
    kind = models.CharField(max_length=10, choices=Kind, default=Kind.ORIGINAL)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.QUEUED)  # indexed in Meta
    message_id = models.CharField(max_length=300, blank=True)  # indexed in Meta
    esp_status = models.CharField("ESP status", max_length=50, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["run", "address"],
                condition=Q(kind="original", channel="email"),
                name="one_original_delivery_per_address",
            ),
            models.UniqueConstraint(
                fields=["run", "destination"],
                condition=Q(kind="original", destination__isnull=False),
                name="one_original_delivery_per_destination",
            ),
        ]
        # run_id keeps its own index: both unique constraints above are partial, so they serve
        # only queries that repeat their condition, not run.deliveries.
        indexes = [
            # The admin finds the runs sent to an address with address__iexact (UPPER(address)).
            models.Index(Upper("address"), name="delivery_address_upper_idx"),
            # Plain btrees for = and IN (tracking events by message_id, the queues by status):
            # db_index=True would add, on PostgreSQL, a varchar_pattern_ops twin of each for
            # LIKE 'prefix%', which no query makes, and every insert and update would maintain it.
            models.Index(fields=["status"], name="delivery_status_idx"),
            models.Index(fields=["message_id"], name="delivery_message_id_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.to} ({self.get_status_display()})"

    @property
    def to(self) -> str:
        """Where it went, as staff read it: the address, or the destination."""
        return self.address if self.channel == self.Channel.EMAIL else self.target


class Heartbeat(models.Model):
    """The last sign of life of a long-running process: beat, or one worker."""

    name = models.CharField(max_length=200, unique=True, help_text="'beat', or 'worker:<hostname>'.")
    seen_at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Alert(models.Model):
    """One failure alert email (a digest of the runs it names) and who it went to."""

    address = models.EmailField(db_index=True)
    sent_at = models.DateTimeField(default=timezone.now, db_index=True)
    subject = models.CharField(max_length=998)
    runs = models.ManyToManyField(ReportRun, related_name="alerts", blank=True)

    class Meta:
        ordering = ["-sent_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.address} · {self.subject}"


class AuditEvent(models.Model):
    """Who changed a report or ran or resent what, and when: shown on the report's page."""

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        CHANGED = "changed", "Changed"
        DELETED = "deleted", "Deleted"
        RAN = "ran", "Ran now"
        TEST_SENT = "test_sent", "Sent a test"
        RESENT = "resent", "Resent"
        RELEASED = "released", "Released a held run"
        RERAN = "reran", "Re-ran"
        LEGAL_HOLD = "legal_hold", "Changed legal hold"
        SCHEDULED = "scheduled", "Started a scheduled run"
        CAUGHT_UP = "caught_up", "Ran a missed slot late"
        REPUBLISHED = "republished", "Published a run again at its deadline"
        GAVE_UP = "gave_up", "Failed a run at its deadline"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=20, choices=Action)
    report = models.ForeignKey(Report, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events")
    report_name = models.CharField(max_length=200, blank=True)
    run = models.ForeignKey(ReportRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events")
    summary = models.TextField(help_text="What happened, in words.")
    changes = models.JSONField(default=dict, blank=True, help_text="Field → [before, after].")

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["report", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_name}: {self.summary}"


class ApiToken(models.Model):
    """A user's key to the REST API: what it may do (its scopes) within what the user may do.

    Only the secret's sha256 is kept; the prefix (its first characters) identifies it on pages.
    """

    class Scope(models.TextChoices):
        REPORTS_READ = "reports:read", "Read reports"
        REPORTS_WRITE = "reports:write", "Create and change reports"
        RUNS_READ = "runs:read", "Read runs, deliveries and attachments"
        RUNS_RUN = "runs:run", "Run reports now and send tests"
        ARCHIVE_RESEND = "archive:resend", "Resend archived runs"
        RECIPIENTS_READ = "recipients:read", "Read recipients and lists"
        RECIPIENTS_WRITE = "recipients:write", "Add, change and delete recipients and lists"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What it is for, e.g. 'finance dashboard'.")
    prefix = models.CharField(max_length=16, editable=False, help_text="The token's first characters.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, help_text="What it may do, within its user's permissions.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: until revoked.")
    revoked = models.BooleanField(default=False, help_text="A revoked token is refused for good.")

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self) -> bool:
        """Neither revoked nor expired."""
        return not self.revoked and (self.expires_at is None or self.expires_at > timezone.now())
