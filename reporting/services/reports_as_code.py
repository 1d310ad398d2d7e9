"""Reports as code: the definitions (data sources, recipients, lists, destinations, reports) as one
YAML or JSON document, exported in a stable order and imported idempotently.

Objects refer to each other by natural keys (a data source by name, a recipient by email, a
report by slug, its owner by username), never by database id; secrets appear only as the
names of their environment variables, as the models keep them. An import adds and changes
what the file names and leaves everything else alone.

An import and its dry run do the same work in one transaction: each object is checked as the
admin checks it (a report through the report form itself, with its model's `full_clean`),
compared field by field with what is stored, and written only when it differs (reports
through `services.reports.save_report`). A dry run, or any problem anywhere in the file,
rolls the whole transaction back: nothing is half-imported, and a dry run shows exactly
what the import would do.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import DatabaseError, models, transaction
from django.db.models.functions import Lower

from reporting import audit, schedule_kinds, schedules
from reporting.addresses import clean_addresses
from reporting.forms import CRON_FIELDS, DataSourceForm, DestinationForm, ReportForm
from reporting.models import ENV_VAR_NAME, AuditEvent, DataSource, Destination, Recipient, RecipientList, Report
from reporting.pipeline import fetch
from reporting.services.reports import recipients_for, save_report

User = AbstractBaseUser | AnonymousUser | None
VERSION = 1
ACTOR_NAME = "import_reports"
FORMATS = ("yaml", "json")
SECTIONS = ("data_sources", "recipients", "recipient_lists", "destinations", "reports")

# What staff edit on each: the admin's own forms' fields (relations excepted), so the file follows the form.
DATA_SOURCE_FIELDS = tuple(DataSourceForm.Meta.fields)
RECIPIENT_FIELDS = ("email", "name", "active", "attributes")
DESTINATION_FIELDS = tuple(DestinationForm.Meta.fields)
# The report form's own fields, the relations written by natural key instead of id.
REPORT_RELATIONS = ("owner", "data_source", "recipient_lists", "destinations")
REPORT_FIELDS = tuple(name for name in ReportForm.Meta.fields if name not in REPORT_RELATIONS)
REPORT_KEYS = (*REPORT_FIELDS, *REPORT_RELATIONS, "recipients", "schedule")
SCHEDULE_KEYS = (*CRON_FIELDS, "timezone", "rule")
SECRET_FIELDS = ("secret_env_var", "signing_secret_env_var")
BOOLEAN_FIELDS = frozenset(
    model_field.name
    for model in (DataSource, Recipient, Destination, Report)
    for model_field in model._meta.concrete_fields
    if isinstance(model_field, models.BooleanField)
)
REQUIRED = {
    "data_sources": ("name", "base_url"),
    "recipients": ("email",),
    "recipient_lists": ("name",),
    "destinations": ("name", "kind", "secret_env_var"),
    "reports": ("slug", "name", "data_source", "template"),
}
NATURAL_KEY = {
    "data_sources": "name",
    "recipients": "email",
    "recipient_lists": "name",
    "destinations": "name",
    "reports": "slug",
}
NOUN = {
    "data_sources": "data source",
    "recipients": "recipient",
    "recipient_lists": "recipient list",
    "destinations": "destination",
    "reports": "report",
}


class ImportRefused(Exception):
    """The file cannot be imported as it is; `problems` say why, each naming the object and field."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


# --- export ---------------------------------------------------------------------------------------------


def export_document(*, report_slugs: list[str] | None = None) -> dict[str, Any]:
    """The definitions as plain values; with `report_slugs`, those reports and what they refer to only.

    ValidationError in words when a slug names no report.
    """
    reports = Report.objects.select_related("owner", "data_source", "periodic_task__crontab")
    if report_slugs is not None:
        missing = sorted(set(report_slugs) - set(reports.filter(slug__in=report_slugs).values_list("slug", flat=True)))
        if missing:
            raise ValidationError(f"No report with the slug {', '.join(repr(slug) for slug in missing)}.")
        reports = reports.filter(slug__in=report_slugs)
        sources = DataSource.objects.filter(reports__in=reports).distinct()
        lists = RecipientList.objects.filter(reports__in=reports).distinct()
        destinations = Destination.objects.filter(reports__in=reports).distinct()
        recipients = Recipient.objects.filter(
            models.Q(reports__in=reports) | models.Q(lists__in=lists.values("pk"))
        ).distinct()
    else:
        sources, lists = DataSource.objects.all(), RecipientList.objects.all()
        destinations, recipients = Destination.objects.all(), Recipient.objects.all()
    return {
        "version": VERSION,
        "data_sources": sorted((_plain(source, DATA_SOURCE_FIELDS) for source in sources), key=_by("name")),
        "recipients": sorted((_plain(person, RECIPIENT_FIELDS) for person in recipients), key=_by("email")),
        "recipient_lists": sorted((_list_values(found) for found in lists), key=_by("name")),
        "destinations": sorted((_plain(found, DESTINATION_FIELDS) for found in destinations), key=_by("name")),
        "reports": sorted((_stored_report(report) for report in reports), key=_by("slug")),
    }


def export_text(*, file_format: str, report_slugs: list[str] | None = None) -> str:
    """The export as YAML or JSON text: keys sorted, lists in their natural-key order, the same text each time."""
    return dump(export_document(report_slugs=report_slugs), file_format=file_format)


class _Dumper(yaml.SafeDumper):
    """safe_dump's dumper, writing a value seen twice out again rather than as an alias (&1 … *1)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class _Loader(yaml.SafeLoader):
    """safe_load's loader refusing aliases: a few lines of them can stand for billions of values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here", mark)
        return super().compose_node(parent, index)


def dump(document: dict[str, Any], *, file_format: str) -> str:
    if file_format == "json":
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return yaml.dump(document, Dumper=_Dumper, sort_keys=True, allow_unicode=True, default_flow_style=False, width=100)


def load(text: str, *, file_format: str) -> Any:
    """The document in `text`; ImportRefused in words when it is not YAML or JSON."""
    try:
        return (
            json.loads(text) if file_format == "json" else yaml.load(text, Loader=_Loader)
        )  # safe_load, without aliases
    except (ValueError, yaml.YAMLError) as exc:
        raise ImportRefused([f"The file is not valid {file_format.upper()}: {exc}"]) from exc


def format_for(filename: str, given: str | None = None) -> str:
    """The format asked for, else the one the file name's extension says (YAML unless it ends in .json)."""
    if given:
        return given
    return "json" if filename.lower().endswith(".json") else "yaml"


def _plain(instance: models.Model, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _value(getattr(instance, name)) for name in names}


def _value(value: Any) -> Any:
    """A field's value as YAML and JSON both write it: a decimal as text without trailing zeros."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value


def _by(key: str) -> Callable[[dict], tuple[str, str]]:
    return lambda item: (str(item[key]).lower(), str(item[key]))


def _sorted(names: Any) -> list[str]:
    """Emails or names in the export's order: whatever their case, then by case."""
    return sorted(names, key=lambda name: (name.lower(), name))


def _list_values(recipient_list: RecipientList) -> dict[str, Any]:
    return {"name": recipient_list.name, "members": _sorted(recipient_list.recipients.values_list("email", flat=True))}


def _stored_report(report: Report) -> dict[str, Any]:
    return _report_values(
        report,
        recipients=list(report.recipients.values_list("email", flat=True)),
        lists=list(report.recipient_lists.values_list("name", flat=True)),
        destinations=list(report.destinations.values_list("name", flat=True)),
        schedule=schedules.spec_for(report),
    )


def _report_values(
    report: Report, *, recipients: list[str], lists: list[str], destinations: list[str], schedule: Any
) -> dict[str, Any]:
    values = _plain(report, REPORT_FIELDS)
    values.update(
        owner=report.owner.get_username() if report.owner is not None else None,
        data_source=report.data_source.name,
        recipients=_sorted(recipients),
        recipient_lists=_sorted(lists),
        destinations=_sorted(destinations),
        schedule={key: getattr(schedule, key) for key in SCHEDULE_KEYS} if schedule else None,
    )
    return values


# --- import ---------------------------------------------------------------------------------------------


@dataclass
class Change:
    """One object of the file and what importing it does: created, changed (field → before, after) or unchanged."""

    kind: str  # a section name, e.g. "reports"
    key: str  # its natural key
    action: str  # "created", "changed" or "unchanged"
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def in_words(self) -> list[str]:
        lines = [f"{NOUN[self.kind]} {self.key!r}: {self.action}"]
        for name, (before, after) in self.fields.items():
            lines.append(f"    {name}: {_shown(before)} → {_shown(after)}")
        return lines


@dataclass
class ImportResult:
    changes: list[Change]
    dry_run: bool

    def count(self, action: str) -> int:
        return sum(1 for change in self.changes if change.action == action)

    @property
    def summary(self) -> str:
        counts = (
            f"{self.count('created')} created, {self.count('changed')} changed, {self.count('unchanged')} unchanged"
        )
        return f"Dry run, nothing written: {counts}." if self.dry_run else f"{counts}."

    def in_words(self) -> list[str]:
        lines = [line for change in self.changes if change.action != "unchanged" for line in change.in_words()]
        return [*lines, self.summary]


def import_text(*, text: str, file_format: str, dry_run: bool = False) -> ImportResult:
    """Import a YAML or JSON document (see `import_document`)."""
    return import_document(load(text, file_format=file_format), dry_run=dry_run)


def plan_import(document: Any) -> ImportResult:
    """What importing `document` would create and change, field by field, with nothing written."""
    return import_document(document, dry_run=True)


def import_document(document: Any, *, dry_run: bool = False) -> ImportResult:
    """Create or change the file's objects, all in one transaction, each checked as the admin checks it.

    ImportRefused, with every problem in words and nothing written, when any object is refused.
    A dry run does the same and rolls it all back: it returns what the import would do.
    """
    sections = _checked_shape(document)
    importer = _Importer()
    with transaction.atomic():
        for name, write in (
            ("data_sources", importer.data_source),
            ("recipients", importer.recipient),
            ("recipient_lists", importer.recipient_list),
            ("destinations", importer.destination),
            ("reports", importer.report),
        ):
            for item in sections[name]:
                importer.each(name, item, write)
        if importer.problems or dry_run:
            transaction.set_rollback(True)
    if importer.problems:
        raise ImportRefused(importer.problems)
    return ImportResult(changes=importer.changes, dry_run=dry_run)


# --- the file's shape: sections, keys, types ------------------------------------------------------------

_KEYS = {
    "data_sources": DATA_SOURCE_FIELDS,
    "recipients": RECIPIENT_FIELDS,
    "recipient_lists": ("name", "members"),
    "destinations": DESTINATION_FIELDS,
    "reports": REPORT_KEYS,
}


def _checked_shape(document: Any) -> dict[str, list[dict]]:
    """The document's sections, each a list of objects with known keys; ImportRefused naming every problem."""
    if not isinstance(document, dict):
        raise ImportRefused(["The file must hold a mapping with the sections " + ", ".join(SECTIONS) + "."])
    problems = []
    for key in document:
        if key != "version" and key not in SECTIONS:
            problems.append(
                f"Unknown section {key!r}{_did_you_mean(key, SECTIONS)}; the sections are {', '.join(SECTIONS)}."
            )
    if document.get("version", VERSION) != VERSION:
        problems.append(f"The file is of version {document.get('version')!r}; this service reads version {VERSION}.")
    sections: dict[str, list[dict]] = {}
    for name in SECTIONS:
        items = document.get(name) or []
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            problems.append(f"The section {name} must be a list of objects.")
            items = []
        sections[name] = items
        problems += _item_problems(name, items)
    if problems:
        raise ImportRefused(problems)
    return sections


def _item_problems(section: str, items: list[dict]) -> list[str]:
    problems, seen = [], set()
    key_name = NATURAL_KEY[section]
    for position, item in enumerate(items, start=1):
        key = item.get(key_name)
        who = f"{NOUN[section]} {key!r}" if isinstance(key, str) and key else f"{NOUN[section]} #{position}"
        for unknown in sorted(set(item) - set(_KEYS[section]), key=str):
            problems.append(f"{who}: unknown field {unknown!r}{_did_you_mean(str(unknown), _KEYS[section])}.")
        for required in REQUIRED[section]:
            if item.get(required) in (None, ""):
                problems.append(f"{who}: the field {required!r} is required.")
        if key is not None and not isinstance(key, str):
            problems.append(f"{who}: the field {key_name!r} must be text.")
        elif isinstance(key, str) and key.lower() in seen:
            problems.append(f"{who} is in the file twice.")
        seen.add(str(key).lower())
        problems += [f"{who}, field {name}: {problem}" for name, problem in _value_problems(item)]
        schedule = item.get("schedule") if section == "reports" else None
        if isinstance(schedule, dict):
            for unknown in sorted(set(schedule) - set(SCHEDULE_KEYS), key=str):
                problems.append(
                    f"{who}, field schedule: unknown field {unknown!r}{_did_you_mean(str(unknown), SCHEDULE_KEYS)}."
                )
        elif schedule is not None:
            problems.append(f"{who}, field schedule: give the cron fields and timezone, or null for no schedule.")
    return problems


def _value_problems(item: dict) -> list[tuple[str, str]]:
    """Values YAML read as something JSON cannot hold (a date, a time), and secrets where a variable's name goes."""
    problems = []
    for name, value in item.items():
        if name in BOOLEAN_FIELDS and not isinstance(value, bool):
            problems.append((name, f"must be true or false, not {_shown(value)}."))
        elif not _json_like(value):
            problems.append((name, "holds a date, time or other value that is not text: put it in quotes."))
        elif (
            name in SECRET_FIELDS and value and not (isinstance(value, str) and re.fullmatch(ENV_VAR_NAME.regex, value))
        ):
            # Never echo it: it may be the secret itself.
            problems.append(
                (
                    name,
                    "must be the NAME of an environment variable (capital letters, digits and underscores, "
                    "e.g. REPORTING_SECRET_API_TOKEN), never the secret itself: the file holds only variable names.",
                )
            )
    return problems


def _json_like(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _json_like(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_json_like(item) for item in value)
    return value is None or (isinstance(value, str | int | float | bool) and not isinstance(value, date | datetime))


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _shown(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


# --- writing, object by object --------------------------------------------------------------------------


class _Importer:
    """Checks and writes the file's objects in order, collecting what changed and every problem."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.problems: list[str] = []

    def each(self, section: str, item: dict, write: Callable[[dict], Change]) -> None:
        """One object in its own savepoint: refused (in words) without spoiling the rest of the check."""
        who = f"{NOUN[section]} {item[NATURAL_KEY[section]]!r}"
        try:
            with transaction.atomic():
                self.changes.append(write(item))
        except ValidationError as exc:
            self.problems += [f"{who}{_where(name)}: {message}" for name, message in _messages(exc)]
        except DatabaseError as exc:
            self.problems.append(f"{who}: the database refused it ({exc}).")

    def data_source(self, item: dict) -> Change:
        found = DataSource.objects.filter(name=item["name"]).first()
        source = found or DataSource()
        _set_fields(source, item, DATA_SOURCE_FIELDS)
        source.full_clean()
        try:
            fetch.check_source_url(source.base_url)  # as the admin's form checks it
        except fetch.FetchError as exc:
            raise ValidationError({"base_url": exc.message}) from exc
        return self._save("data_sources", source.name, found, source, DATA_SOURCE_FIELDS)

    def recipient(self, item: dict) -> Change:
        found = Recipient.objects.annotate(lowered=Lower("email")).filter(lowered=item["email"].lower()).first()
        recipient = found or Recipient()
        _set_fields(recipient, {**item, "attributes": item.get("attributes") or {}}, RECIPIENT_FIELDS)
        recipient.full_clean()
        return self._save("recipients", recipient.email, found, recipient, RECIPIENT_FIELDS)

    def destination(self, item: dict) -> Change:
        found = Destination.objects.filter(name=item["name"]).first()
        destination = found or Destination()
        _set_fields(destination, item, DESTINATION_FIELDS)
        destination.full_clean()
        return self._save("destinations", destination.name, found, destination, DESTINATION_FIELDS)

    def recipient_list(self, item: dict) -> Change:
        members = _text_list(item, "members")
        found = RecipientList.objects.filter(name=item["name"]).first()
        before = _list_values(found) if found else None
        recipient_list = found or RecipientList(name=item["name"])
        if found is None:
            recipient_list.full_clean()
            recipient_list.save()
        wanted = recipients_for(_addresses(members, "members"))
        if {recipient.pk for recipient in wanted} != set(recipient_list.recipients.values_list("pk", flat=True)):
            recipient_list.recipients.set(wanted)
        change = _change("recipient_lists", recipient_list.name, before, _list_values(recipient_list))
        self._audit(change)
        return change

    def report(self, item: dict) -> Change:
        found = Report.objects.select_related("owner", "data_source", "periodic_task__crontab").filter(
            slug=item["slug"]
        )
        report = found.first()
        before = _stored_report(report) if report else None
        form = ReportForm(data=_form_data(item, report), instance=report)
        if not form.is_valid():
            raise ValidationError({_file_field(name): errors for name, errors in form.errors.items()})
        spec = _schedule_spec(item)
        addresses = form.typed_addresses()
        desired = _report_values(
            form.instance,
            recipients=[recipient.email for recipient in _known_or_new(addresses)],
            lists=[found_list.name for found_list in form.cleaned_data["recipient_lists"]],
            destinations=[found.name for found in form.cleaned_data["destinations"]],
            schedule=spec,
        )
        change = _change("reports", form.instance.slug, before, desired)
        if change.action != "unchanged":
            form.save(commit=False)  # as the admin does: the instance unsaved, and form.save_m2m for save_report
            save_report(
                report=form.instance,
                save_related=form.save_m2m,
                schedule=spec,
                actor=None,
                actor_name=ACTOR_NAME,
                addresses=addresses,
            )
        return change

    def _save(self, section: str, key: str, found: Any, instance: models.Model, names: tuple[str, ...]) -> Change:
        before = _plain(found.__class__.objects.get(pk=found.pk), names) if found else None
        change = _change(section, key, before, _plain(instance, names))
        if change.action != "unchanged":
            instance.save()
            self._audit(change)
        return change

    def _audit(self, change: Change) -> None:
        """Objects other than reports: one event each created or changed (a report's is save_report's)."""
        if change.action == "unchanged":
            return
        audit.record(
            actor=None,
            actor_name=ACTOR_NAME,
            action=AuditEvent.Action.CREATED if change.action == "created" else AuditEvent.Action.CHANGED,
            summary=f"Imported the {NOUN[change.kind]} {change.key}: {change.action}.",
            changes={name: [_shown(before), _shown(after)] for name, (before, after) in change.fields.items()},
        )


def _change(section: str, key: str, before: dict | None, after: dict) -> Change:
    if before is None:
        return Change(section, key, "created")
    fields = {name: (before.get(name), value) for name, value in after.items() if before.get(name) != value}
    return Change(section, key, "changed" if fields else "unchanged", fields)


def _set_fields(instance: models.Model, item: dict, names: tuple[str, ...]) -> None:
    """The file's values on the instance; a field the file leaves out takes the model's default."""
    for name in names:
        model_field = instance._meta.get_field(name)
        value = item[name] if name in item else model_field.get_default()  # type: ignore[union-attr]
        if value is None and not model_field.null and isinstance(model_field, models.CharField | models.TextField):
            value = ""
        setattr(instance, name, value)


def _text_list(item: dict, name: str) -> list[str]:
    values = item.get(name) or []
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise ValidationError({name: "Give a list of names or addresses, each in quotes if need be."})
    return values


def _addresses(emails: list[str], name: str) -> list[str]:
    try:
        return clean_addresses(emails)
    except ValidationError as exc:
        raise ValidationError({name: exc.messages}) from exc


def _known_or_new(addresses: list[str]) -> list[Recipient]:
    """The recipients save_report will give the report, without creating any: the known spelling, or the typed."""
    known = {
        recipient.email.lower(): recipient
        for recipient in Recipient.objects.annotate(lowered=Lower("email")).filter(
            lowered__in=[address.lower() for address in addresses]
        )
    }
    return [known.get(address.lower()) or Recipient(email=address) for address in addresses]


def _form_data(item: dict, report: Report | None) -> dict[str, Any]:
    """What the report's admin page would post for the file's values (relations by id, found by natural key)."""
    defaults = {name: Report._meta.get_field(name).get_default() for name in REPORT_FIELDS}  # type: ignore[union-attr]
    data: dict[str, Any] = {}
    for name in REPORT_FIELDS:
        value = item[name] if name in item else defaults[name]
        if isinstance(value, dict | list):
            value = json.dumps(value)
        data[name] = "" if value is None else value
    data["owner"] = _pk_of(get_user_model(), "username", item.get("owner"), "owner", "user")
    data["data_source"] = _pk_of(DataSource, "name", item["data_source"], "data_source", "data source")
    data["recipient_lists"] = [
        _pk_of(RecipientList, "name", name, "recipient_lists", "recipient list")
        for name in _text_list(item, "recipient_lists")
    ]
    data["destinations"] = [
        _pk_of(Destination, "name", name, "destinations", "destination") for name in _text_list(item, "destinations")
    ]
    data["recipient_addresses"] = "\n".join(_text_list(item, "recipients"))
    schedule = item.get("schedule")
    data["schedule_enabled"] = schedule is not None
    data["schedule_kind"] = schedule_kinds.CUSTOM
    for name in CRON_FIELDS:
        data[name] = str((schedule or {}).get(name, ""))
    return data


def _pk_of(model: type[models.Model], key: str, value: Any, name: str, noun: str) -> int | str:
    if value in (None, ""):
        return ""
    found = model.objects.filter(**{key: value}).values_list("pk", flat=True).first()  # type: ignore[attr-defined]
    if found is None:
        where = "here (users are not imported: create the user first)" if noun == "user" else "in the file or here"
        raise ValidationError({name: f"There is no {noun} {value!r} {where}."})
    return found


def _schedule_spec(item: dict) -> schedules.CronSpec | None:
    """The file's schedule (its timezone: the report's unless it says another), checked as beat would run it."""
    schedule = item.get("schedule")
    if schedule is None:
        return None
    values = {name: str(schedule.get(name, getattr(schedules.CronSpec, name))).strip() for name in CRON_FIELDS}
    spec = schedules.CronSpec(
        **values,
        timezone=str(schedule.get("timezone") or item.get("timezone") or "UTC"),
        rule=str(schedule.get("rule") or ""),
    )
    try:
        schedules.validate(spec)
    except ValidationError as exc:
        raise ValidationError({"schedule": exc.messages}) from exc
    return spec


_FORM_TO_FILE = {"recipient_addresses": "recipients", **{name: f"schedule.{name}" for name in CRON_FIELDS}}


def _file_field(name: str) -> str:
    return _FORM_TO_FILE.get(name, name)


def _where(name: str) -> str:
    return "" if name == NON_FIELD_ERRORS else f", field {name}"


def _messages(exc: ValidationError) -> list[tuple[str, str]]:
    if hasattr(exc, "error_dict"):
        return [(name, message) for name, errors in exc.message_dict.items() for message in errors]
    return [(NON_FIELD_ERRORS, message) for message in exc.messages]


# --- one report as data (the REST API) -----------------------------------------------------------------


def report_values(report: Report) -> dict[str, Any]:
    """One report in the file's shape (relations by natural key, its schedule or None), with its id."""
    return {"id": report.pk, **_stored_report(report)}


def save_report_values(*, values: dict[str, Any], report: Report | None, actor: User) -> Report:
    """Create (`report` None) or change a report from values in the file's shape, checked by the admin's form.

    A key left out keeps the report's value (a new report: the form's default, its owner the actor).
    Refused: ValidationError by field, nothing written. The audit event is save_report's.
    """
    stored = _stored_report(report) if report else _new_report_defaults(actor)
    item = {**stored, **values}
    if item.get("schedule") is not None:
        item["schedule"] = _merged_schedule(stored.get("schedule"), values.get("schedule") or {}, item.get("timezone"))
    missing = [name for name in REQUIRED["reports"] if item.get(name) in (None, "")]
    if missing:
        raise ValidationError({name: "This field is required." for name in missing})
    with transaction.atomic():
        form = ReportForm(data=_form_data(item, report), instance=report)
        if not form.is_valid():
            raise ValidationError({_file_field(name): errors for name, errors in form.errors.items()})
        spec = _schedule_spec(item)
        form.save(commit=False)  # as the admin does: the instance unsaved, and form.save_m2m for save_report
        addresses = form.typed_addresses()
        save_report(report=form.instance, save_related=form.save_m2m, schedule=spec, actor=actor, addresses=addresses)
    return form.instance


def _merged_schedule(stored: dict | None, given: dict, report_timezone: Any) -> dict[str, Any]:
    """The fields given over the stored schedule (a new one: the defaults); its timezone, unless given, the
    report's, as the admin's form keeps it."""
    default = {name: getattr(schedules.CronSpec, name) for name in CRON_FIELDS}
    merged = {**(stored or default), **given}
    if "timezone" not in given:
        merged["timezone"] = report_timezone
    return merged


def _new_report_defaults(actor: User) -> dict[str, Any]:
    """As the admin's page for a new report: its owner is whoever creates it."""
    if actor is not None and actor.is_authenticated:
        return {"owner": actor.get_username()}
    return {}
