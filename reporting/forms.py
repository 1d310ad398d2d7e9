"""Admin forms: the report with its schedule, and the run-now and resend confirmations."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, time
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from reporting import periods, schedule_kinds, schedules
from reporting.addresses import clean_addresses
from reporting.models import DataSource, Destination, Recipient, Report, report_template_choices
from reporting.periods import DAILY, period_containing
from reporting.pipeline import charts, fetch, formats, pdf
from reporting.pipeline.checks import field_names
from reporting.pipeline.render import RenderError, period_values, render_string, render_subject
from reporting.widgets import ChartsWidget, LayoutWidget, QueryParamsWidget

CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
PICKER_FIELDS = ("schedule_kind", "schedule_time", "schedule_weekday", "schedule_day")
CONDITION_CHOICE_FIELDS = ("send_only_if", "threshold_figure_is", "threshold_operator")


class ReportForm(forms.ModelForm):
    """The report definition plus its schedule, stored in the report's own PeriodicTask."""

    template = forms.ChoiceField(choices=report_template_choices, help_text="Body templates under templates/reports/.")
    schedule_enabled = forms.BooleanField(
        label="Send on a schedule", required=False, initial=True, help_text="Untick to run this report only by hand."
    )
    # The picker in words: it writes the cron fields below (here on save, and in the browser as
    # they change, by schedule_picker.js). Absent from a POST, it is "custom": the cron fields rule.
    schedule_kind = forms.ChoiceField(
        label="Runs",
        choices=schedule_kinds.KIND_CHOICES,
        required=False,
        help_text="Pick the schedule in words; it fills in the cron fields below. Choose Custom to type them "
        "yourself. Business days are Monday to Friday: public holidays are not skipped. A month without the "
        "chosen day (e.g. the 31st) is skipped.",
    )
    schedule_time = forms.TimeField(
        label="at",
        required=False,
        initial=time(7, 0),
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        help_text="In the report's timezone.",
    )
    schedule_weekday = forms.ChoiceField(
        label="on", choices=schedule_kinds.WEEKDAY_CHOICES, required=False, initial="1"
    )
    schedule_day = forms.IntegerField(
        label="day",
        min_value=1,
        max_value=31,
        required=False,
        initial=1,
    )
    minute = forms.CharField(
        initial="0", max_length=240, required=False, help_text='0-59, e.g. "0" or "0,30" or "*/15".'
    )
    hour = forms.CharField(initial="7", max_length=96, required=False, help_text='0-23, e.g. "7" or "8-18".')
    day_of_month = forms.CharField(initial="*", max_length=124, required=False, help_text='1-31, e.g. "1" or "*".')
    month_of_year = forms.CharField(
        initial="*", max_length=64, required=False, help_text='1-12, e.g. "*" or "1,4,7,10".'
    )
    day_of_week = forms.CharField(
        initial="*",
        max_length=64,
        required=False,
        help_text='0-6 with Sunday 0, or names: "mon-fri". Both day fields must match.',
    )

    # Absent from a POST (a form from before the PDF), the paper stays the report's own.
    pdf_paper = forms.ChoiceField(label="PDF paper", choices=pdf.PAPERS, required=False)
    recipient_addresses = forms.CharField(
        label="Recipients",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "data-addresses": "typed"}),
        help_text="Email addresses, one per line or separated by commas. A new address becomes a recipient; "
        "one already known is reused (whatever its case).",
    )

    class Meta:
        model = Report
        fields = [
            "name",
            "slug",
            "description",
            "owner",
            "enabled",
            "data_source",
            "path",
            "query_params",
            "records_path",
            "period_kind",
            "timezone",
            "template",
            "subject_template",
            "locale",
            "layout",
            "attach_csv",
            "attach_xlsx",
            "attach_pdf",
            "pdf_paper",
            "email_max_rows",
            "charts",
            "recipient_lists",
            "destinations",
            "audience",
            "per_recipient_data",
            "split_field",
            "split_attribute",
            "when_no_rows",
            "catch_up_hours",
            "check_min_rows",
            "check_required_fields",
            "check_max_age_field",
            "check_max_age_hours",
            "send_only_if",
            "threshold_figure_is",
            "threshold_figure",
            "threshold_operator",
            "threshold_value",
            "from_name",
            "from_address",
            "reply_to",
            "list_unsubscribe",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in CONDITION_CHOICE_FIELDS:
            if name in self.fields:  # absent from a POST (a form from before them): the report keeps its own
                self.fields[name].required = False
        if "charts" in self.fields:  # not on a read-only page
            self.fields["charts"].widget = ChartsWidget(report=self.instance)
            self.fields["charts"].help_text = ChartsWidget.help_text
        if "query_params" in self.fields:
            self.fields["query_params"].widget = QueryParamsWidget()
            self.fields["query_params"].help_text = QueryParamsWidget.help_text
        if "layout" in self.fields:
            self.fields["layout"].widget = LayoutWidget(report=self.instance)
        if "locale" in self.fields:
            self.fields["locale"].required = False
        if self.instance.pk:
            self.fields["recipient_addresses"].initial = "\n".join(
                self.instance.recipients.order_by("email").values_list("email", flat=True)
            )
        spec = schedules.spec_for(self.instance) if self.instance.pk else None
        if self.instance.pk:
            self.fields["schedule_enabled"].initial = spec is not None
        for field in CRON_FIELDS:
            if spec is not None:
                self.fields[field].initial = getattr(spec, field)
        self._show_picked(spec)

    def _show_picked(self, spec: schedules.CronSpec | None) -> None:
        """The picker shows the kind the stored schedule (or the default one) matches."""
        cron = {field: self.fields[field].initial for field in CRON_FIELDS}
        picked = schedule_kinds.kind_of(schedule_kinds.CronFields(**cron, rule=spec.rule if spec else ""))
        self.fields["schedule_kind"].initial = picked.kind
        self.fields["schedule_time"].initial = picked.at
        self.fields["schedule_weekday"].initial = str(picked.weekday)
        self.fields["schedule_day"].initial = picked.day
        # Where schedule_picker.js asks for the schedule in words and its next runs.
        self.fields["schedule_kind"].widget.attrs["data-next-runs-url"] = reverse("admin:reporting_report_next_runs")

    def clean_subject_template(self) -> str:
        subject = self.cleaned_data["subject_template"]
        try:
            # Not strict: the data the subject may name is not known until a run fetches it.
            render_subject(subject, _sample_context(), strict=False)
        except RenderError as exc:
            raise ValidationError(exc.message) from exc
        return subject

    def clean_pdf_paper(self) -> str:
        return self.cleaned_data["pdf_paper"] or self.instance.pdf_paper

    def clean_recipient_addresses(self) -> list[str]:
        """The typed addresses, each once whatever its case; ValidationError naming every bad one."""
        typed = self.cleaned_data["recipient_addresses"]
        return clean_addresses(typed.replace(",", "\n").replace(";", "\n").splitlines())

    def clean_layout(self) -> dict:
        """An empty layout is none (every field of the rows); the model checks the rest against its schema."""
        return self.cleaned_data.get("layout") or {}

    def clean_locale(self) -> str:
        """Left out of a form (an older client, a script): the report's own, or the default."""
        return self.cleaned_data.get("locale") or self.instance.locale or formats.DEFAULT_LOCALE

    def typed_addresses(self) -> list[str]:
        return self.cleaned_data.get("recipient_addresses") or []

    def clean_path(self) -> str:
        path = self.cleaned_data["path"]
        _check_template(path, what="path")
        return path

    def clean_query_params(self) -> dict:
        params = self.cleaned_data["query_params"] or {}
        if not isinstance(params, dict) or any(isinstance(value, dict | list) for value in params.values()):
            raise ValidationError('Give the query parameters as a JSON object of names to values, e.g. {"date": "…"}.')
        _check_query_param_sizes(params)
        for name, value in params.items():
            _check_template(str(value), what=f"query parameter '{name}'")
        return params

    def clean_charts(self) -> list:
        """Each chart checked now, in words, rather than failing the first run."""
        try:
            return [spec.to_dict() for spec in charts.parse_specs(self.cleaned_data.get("charts"))]
        except charts.ChartError as exc:
            raise ValidationError(exc.message) from exc

    def clean_check_required_fields(self) -> str:
        """Stored as typed names joined by ", ": no empty names, each once."""
        names = dict.fromkeys(field_names(self.cleaned_data["check_required_fields"]))
        return ", ".join(names)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        self._check_max_age_pair(cleaned)
        self._check_destinations(cleaned)
        if cleaned.get("enabled") and not _has_active_address(cleaned):
            self.add_error(
                "recipient_addresses",
                "An enabled report needs at least one active recipient, directly or through a recipient list.",
            )
        if cleaned.get("enabled") and not _someone_to_alert(cleaned.get("owner")):
            self.add_error(
                "owner",
                "An enabled report needs someone to tell when it fails: choose an owner with an email address "
                "(or set ADMINS for the whole service).",
            )
        self._derive_cron_fields(cleaned)
        if cleaned.get("schedule_enabled") and all(field in cleaned for field in CRON_FIELDS):
            try:
                schedules.validate(self.schedule_spec())  # type: ignore[arg-type]
            except ValidationError as exc:
                if hasattr(exc, "error_dict"):
                    for field, errors in exc.error_dict.items():
                        self.add_error(field if field in self.fields else None, errors)
                else:
                    self.add_error(None, exc)
        return cleaned

    def _derive_cron_fields(self, cleaned: dict) -> None:
        """The cron fields (and rule) from the picked kind; custom (or no kind posted): as typed, each required."""
        kind = cleaned.get("schedule_kind") or schedule_kinds.CUSTOM
        cleaned["schedule_rule"] = ""
        if not cleaned.get("schedule_enabled"):
            return  # runs only by hand: whatever the schedule fields say is not kept
        if kind == schedule_kinds.CUSTOM or self._cron_typed_by_hand():
            for field in CRON_FIELDS:
                if field in cleaned and not cleaned[field].strip():
                    self.add_error(field, "This field is required.")
            if kind == schedule_kinds.MONTHLY_LAST_BUSINESS_DAY and all(field in cleaned for field in CRON_FIELDS):
                # As schedule_picker.js does: typed cron that still says "every weekday 26-31" keeps the rule.
                typed = schedule_kinds.CronFields(**{field: cleaned[field] for field in CRON_FIELDS})
                as_rule = schedule_kinds.kind_of(replace(typed, rule=schedules.LAST_BUSINESS_DAY))
                cleaned["schedule_rule"] = schedules.LAST_BUSINESS_DAY if as_rule.kind == kind else ""
            return
        picked = self._picked(cleaned, kind)
        if picked is None:
            for field in CRON_FIELDS:
                cleaned.pop(field, None)  # no schedule to check until the picker's details are given
            return
        derived = schedule_kinds.cron_for(picked)
        for field in CRON_FIELDS:
            cleaned[field] = getattr(derived, field)
            self.errors.pop(field, None)  # what was typed there is replaced
        cleaned["schedule_rule"] = derived.rule

    def _cron_typed_by_hand(self) -> bool:
        """Whether the cron fields were changed and the picker was not: the typed cron is what was meant.

        Without JavaScript nothing moves the picker when the cron fields are edited (the
        browser does that with schedule_picker.js), so a picker left as the page showed it
        does not undo them. When both changed, the picker wins: the script keeps them in step.
        """
        changed = set(self.changed_data)
        return bool(changed & set(CRON_FIELDS)) and not changed & set(PICKER_FIELDS)

    def _picked(self, cleaned: dict, kind: str) -> schedule_kinds.Picked | None:
        """The picker's choice, or None after naming each detail it needs that is missing."""
        needs = {"schedule_time": "Give the time it runs at."}
        if kind in (schedule_kinds.WEEKLY, schedule_kinds.MONTHLY_FIRST_WEEKDAY):
            needs["schedule_weekday"] = "Choose the day of the week."
        if kind in (schedule_kinds.MONTHLY_DAY, schedule_kinds.QUARTERLY):
            needs["schedule_day"] = "Give the day of the month (1-31)."
        missing = [field for field in needs if cleaned.get(field) in (None, "")]
        for field in missing:
            if field not in self.errors:
                self.add_error(field, needs[field])
        if missing or any(field in self.errors for field in needs):
            return None
        return schedule_kinds.Picked(
            kind=kind,
            at=cleaned["schedule_time"].replace(second=0, microsecond=0),
            weekday=int(cleaned.get("schedule_weekday") or 1),
            day=cleaned.get("schedule_day") or 1,
        )

    def _check_destinations(self, cleaned: dict) -> None:
        """Slack, Teams and webhooks get one message per run: a report that sends each recipient their own
        data has no one message to give them (it would be someone's data, or everyone's)."""
        if cleaned.get("audience") == Report.Audience.EACH and cleaned.get("destinations"):
            self.add_error(
                "destinations",
                "A report that sends each recipient their own report cannot also post to Slack, Teams or a "
                "webhook: remove its destinations, or send the same email to every recipient.",
            )

    def _check_max_age_pair(self, cleaned: dict) -> None:
        """The age check needs both its field and its limit."""
        has_field = bool((cleaned.get("check_max_age_field") or "").strip())
        has_hours = cleaned.get("check_max_age_hours") is not None
        if has_field and not has_hours:
            self.add_error("check_max_age_hours", "Give the maximum age in hours for the timestamp field.")
        elif has_hours and not has_field and "check_max_age_field" not in self.errors:
            self.add_error("check_max_age_field", "Give the timestamp field whose age to check, e.g. meta.as_of.")

    def schedule_spec(self) -> schedules.CronSpec | None:
        if not self.cleaned_data.get("schedule_enabled"):
            return None
        values = {field: self.cleaned_data[field].strip() for field in CRON_FIELDS}
        rule = self.cleaned_data.get("schedule_rule", "")
        return schedules.CronSpec(timezone=self.cleaned_data.get("timezone") or "UTC", rule=rule, **values)


# The request URL is kept with each run (at most 2,000 characters): the parameters must fit in it.
MAX_QUERY_PARAMS = 50
MAX_QUERY_PARAM_NAME = 100
MAX_QUERY_PARAM_VALUE = 500


def _check_query_param_sizes(params: dict) -> None:
    """ValidationError in words when there are too many parameters or one is too long."""
    if len(params) > MAX_QUERY_PARAMS:
        raise ValidationError(f"Give at most {MAX_QUERY_PARAMS} query parameters; there are {len(params)}.")
    for name, value in params.items():
        if len(name) > MAX_QUERY_PARAM_NAME:
            raise ValidationError(
                f"The query parameter name '{name[:40]}…' is {len(name):,} characters long; "
                f"at most {MAX_QUERY_PARAM_NAME} are allowed."
            )
        if len(str(value)) > MAX_QUERY_PARAM_VALUE:
            raise ValidationError(
                f"The value of the query parameter '{name}' is {len(str(value)):,} characters long; "
                f"at most {MAX_QUERY_PARAM_VALUE} are allowed."
            )


def _someone_to_alert(owner) -> bool:
    """Whether a failure of the report would reach anyone: its owner's address, or else ADMINS."""
    return bool(owner is not None and owner.email) or any(address for _name, address in settings.ADMINS)


def _has_active_address(cleaned: dict) -> bool:
    """Whether a typed address (new, or of an active recipient) or a list's active recipient would get it."""
    typed = {address.lower() for address in cleaned.get("recipient_addresses") or []}
    inactive = {
        email.lower()
        for email in Recipient.objects.filter(active=False).values_list("email", flat=True)
        if email.lower() in typed
    }
    if typed - inactive:
        return True
    lists = cleaned.get("recipient_lists")
    return lists is not None and Recipient.objects.filter(active=True, lists__in=lists).exists()


def _sample_context() -> dict:
    """What a template typed on the form is tried with: the values a run gives, made up."""
    return {
        "report": {"name": "Report", "slug": "report", "description": ""},
        "period": period_values(period_containing(DAILY, date(2026, 1, 5))),
    }


_RECIPIENT_VALUE = re.compile(r"recipient\.([A-Za-z_][A-Za-z0-9_]*)")


def _check_template(template_text: str, *, what: str) -> None:
    """ValidationError in words for a path or parameter template that no run could render."""
    # A recipient's attributes are known only per recipient: each one named is tried with a sample value
    # (whether the report is per recipient is checked by the model's clean()).
    recipient = {name: "sample" for name in _RECIPIENT_VALUE.findall(template_text)}
    try:
        # Strict: a path or parameter sees only the report and the period, both known now.
        render_string(template_text, {**_sample_context(), "recipient": recipient}, what=what)
    except RenderError as exc:
        raise ValidationError(exc.message) from exc


class RunNowForm(forms.Form):
    period_day = forms.DateField(
        label="Period containing",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Any day in the period to report on. Leave empty for the last complete period.",
    )

    def __init__(self, *args, recipients=None, **kwargs):
        """`recipients`: a per-recipient report's active recipients, to choose whose report (a test, a preview)."""
        super().__init__(*args, **kwargs)
        if recipients is not None:
            self.fields["recipient"] = forms.ModelChoiceField(
                queryset=recipients,
                required=False,
                label="As received by",
                empty_label="(the first recipient)",
                help_text="Each recipient gets their own report: whose to show.",
            )

    def clean_period_day(self) -> date | None:
        """A day whose period fits in the calendar: the week of 27 December 9999 ends in the year 10000."""
        day = self.cleaned_data["period_day"]
        if day is not None and day > periods.LAST_DAY:
            raise ValidationError(periods.TOO_FAR)
        return day


class PreviewForm(RunNowForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["period_day"].help_text = "Any day in the period to preview. Leave empty for the last complete one."


class ResendForm(forms.Form):
    """Who gets a resend: one choice, and the addresses only when that choice says so."""

    ORIGINAL, TYPED = "original", "typed"
    target = forms.ChoiceField(
        label="Send to",
        choices=[(ORIGINAL, "The run's original recipients"), (TYPED, "Only the addresses typed below")],
        initial=ORIGINAL,
        widget=forms.RadioSelect,
    )
    addresses = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text='Only with "Only the addresses typed below": one address per line, or separated by commas.',
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        raw = cleaned.get("addresses", "").replace(",", "\n").splitlines()
        typed = [address for address in (line.strip() for line in raw) if address]
        if cleaned.get("target") == self.TYPED:
            try:
                cleaned["address_list"] = clean_addresses(typed)
            except ValidationError as exc:
                self.add_error("addresses", exc)
                return cleaned
            if not cleaned["address_list"]:
                self.add_error("addresses", "Type at least one address.")
        else:
            if typed:  # never send to the originals while addresses stand typed in the box
                self.add_error(
                    "addresses",
                    'You typed addresses but chose the original recipients. Choose "Only the addresses typed '
                    'below" to send only to them, or clear the box to send to the original recipients.',
                )
            cleaned["address_list"] = None
        return cleaned


class DataSourceForm(forms.ModelForm):
    class Meta:
        model = DataSource
        fields = [
            "name",
            "base_url",
            "auth_scheme",
            "auth_header_name",
            "secret_env_var",
            "connect_timeout",
            "read_timeout",
            "verify_tls",
            "drop_fields",
        ]

    def clean_base_url(self) -> str:
        """Only http(s), no user:password, a host in REPORTING_ALLOWED_SOURCE_HOSTS (by name here, by address
        when fetching)."""
        url = self.cleaned_data["base_url"]
        try:
            fetch.check_source_url(url)
        except fetch.FetchError as exc:
            raise ValidationError(exc.message) from exc
        return url


class DestinationForm(forms.ModelForm):
    class Meta:
        model = Destination
        fields = [
            "name",
            "kind",
            "enabled",
            "secret_env_var",
            "slack_channel",
            "attach_csv",
            "attach_xlsx",
            "signing_secret_env_var",
        ]
