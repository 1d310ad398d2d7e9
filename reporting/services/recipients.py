"""Services on recipients: import them from a CSV or XLSX file (all rows or none), export them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Lower

from reporting import audit, recipients_io
from reporting.models import AuditEvent, Recipient, RecipientList, attributes_problems

User = AbstractBaseUser | AnonymousUser | None
LOOKUP_CHUNK = 500  # addresses per query when finding the file's recipients


@dataclass
class ImportResult:
    """What an import did (or, with problems or a dry run, would have done): nothing is written with problems."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)
    written: bool = False

    @property
    def summary(self) -> str:
        return f"{self.created} added, {self.updated} changed, {self.unchanged} unchanged"


def import_recipients(*, content: bytes, filename: str, actor: User, dry_run: bool = False) -> ImportResult:
    """Add or update the recipients of a CSV or XLSX file, matched by email whatever its case; all or nothing.

    Every row is checked first; any problem and nothing is written. The writes happen in one
    transaction with the audit event, so a failure part-way leaves the recipients as they were.
    """
    try:
        table = recipients_io.read_table(content, filename=filename)
    except recipients_io.TableError as exc:
        return ImportResult(problems=[str(exc)])
    result = ImportResult(problems=table.problems)
    if not table.rows and not table.problems:
        result.problems.append("The file has no recipients: put one per row under the header row.")
    lists = _lists_by_name(table, result.problems)
    existing = _existing_recipients(table, result.problems)
    planned = [_change(row, existing.get(row.email.lower()), result.problems) for row in table.rows]
    for plan in planned:
        if plan.recipient.pk is None:
            result.created += 1
        elif plan.changed:
            result.updated += 1
        else:
            result.unchanged += 1
    if result.problems or dry_run:
        return result
    with transaction.atomic():
        _write(planned, lists)
        audit.record(
            actor=actor,
            action=AuditEvent.Action.CHANGED,
            summary=f"Imported recipients from {filename[:100]}: {result.summary}.",
        )
    result.written = True
    return result


def export_recipients(*, recipients: QuerySet, file_format: str) -> bytes:
    """The recipients as a CSV or XLSX file in the import's shape (it reads back as the same recipients)."""
    lists_of = defaultdict(list)
    memberships = RecipientList.recipients.through.objects.filter(recipient__in=recipients)
    for recipient_id, list_name in memberships.values_list("recipient_id", "recipientlist__name"):
        lists_of[recipient_id].append(list_name)
    rows = (
        {**values, "lists": lists_of[values["pk"]]}
        for values in recipients.order_by("email").values("pk", "email", "name", "active", "attributes")
    )
    header, cells = recipients_io.export_rows(rows)
    return recipients_io.to_csv(header, cells) if file_format == "csv" else recipients_io.to_xlsx(header, cells)


def _lists_by_name(table: recipients_io.Table, problems: list[str]) -> dict[str, RecipientList]:
    """The lists the file names, by name; a row naming one that does not exist is a problem."""
    wanted = {name for row in table.rows for name in row.lists or []}
    found = {found.name: found for found in RecipientList.objects.filter(name__in=wanted)}
    for row in table.rows:
        for name in row.lists or []:
            if name not in found:
                problems.append(
                    f"Row {row.row}, column lists: there is no recipient list named '{name[:100]}' "
                    "(make it first, or correct the name)."
                )
    return found


def _existing_recipients(table: recipients_io.Table, problems: list[str]) -> dict[str, Recipient]:
    """The file's recipients already here, by lower-case address (their lists prefetched)."""
    addresses = [row.email.lower() for row in table.rows]
    found: dict[str, Recipient] = {}
    for start in range(0, len(addresses), LOOKUP_CHUNK):
        chunk = addresses[start : start + LOOKUP_CHUNK]
        matches = Recipient.objects.annotate(address=Lower("email")).filter(address__in=chunk)
        for recipient in matches.prefetch_related("lists"):
            if recipient.address in found:
                problems.append(
                    f"{found[recipient.address].email} and {recipient.email} are two recipients here; "
                    "the file cannot say which one it means. Merge them first."
                )
            found[recipient.address] = recipient
    return found


@dataclass
class _Planned:
    """One row's recipient with the file's values set (not saved yet), and its lists before and after."""

    recipient: Recipient
    changed: bool
    lists_before: dict[str, RecipientList]
    lists_after: set[str]


def _change(
    row: recipients_io.RecipientRow,
    recipient: Recipient | None,
    problems: list[str],
) -> _Planned:
    if recipient is None:
        recipient = Recipient(email=row.email, attributes={})
    lists_before = {found.name: found for found in recipient.lists.all()} if recipient.pk else {}
    before = (recipient.email, recipient.name, recipient.active, dict(recipient.attributes), set(lists_before))
    recipient.email = row.email  # the file's spelling of the address
    if row.name is not None:
        recipient.name = row.name
    if row.active is not None:
        recipient.active = row.active
    attributes = dict(recipient.attributes)
    for name, value in row.attributes.items():
        if value is None:
            attributes.pop(name, None)
        else:
            attributes[name] = value
    recipient.attributes = attributes
    for problem in attributes_problems(attributes):  # the file's and the recipient's other attributes together
        problems.append(f"Row {row.row}: {problem}")
    lists_after = set(row.lists) if row.lists is not None else set(lists_before)
    after = (recipient.email, recipient.name, recipient.active, attributes, lists_after)
    return _Planned(recipient, recipient.pk is None or after != before, lists_before, lists_after)


def _write(planned: list[_Planned], lists: dict[str, RecipientList]) -> None:
    """Save what changed (each save in the audit log), then each list's members added and removed at once."""
    joins: dict[RecipientList, list[Recipient]] = defaultdict(list)
    leaves: dict[RecipientList, list[Recipient]] = defaultdict(list)
    for plan in planned:
        if not plan.changed:
            continue
        plan.recipient.save()
        for name in plan.lists_after - set(plan.lists_before):
            joins[lists[name]].append(plan.recipient)
        for name in set(plan.lists_before) - plan.lists_after:
            leaves[plan.lists_before[name]].append(plan.recipient)
    for recipient_list, members in joins.items():
        recipient_list.recipients.add(*members)
    for recipient_list, members in leaves.items():
        recipient_list.recipients.remove(*members)


# --- one recipient or list at a time (the API; the admin saves them through its own forms) ------------


def save_recipient(*, recipient: Recipient, actor: User) -> Recipient:
    """Create or change a recipient, checked as the model checks it (ValidationError by field); in the audit log."""
    recipient.full_clean()
    with audit.acting_as(actor), transaction.atomic():
        recipient.save()
    return recipient


def delete_recipient(*, recipient: Recipient, actor: User) -> None:
    with audit.acting_as(actor), transaction.atomic():
        recipient.delete()


def save_recipient_list(*, recipient_list: RecipientList, member_ids: list[int] | None, actor: User) -> RecipientList:
    """Create or change a list (its members: these recipients' ids, when given); ValidationError by field."""
    recipient_list.full_clean()
    members = list(Recipient.objects.filter(pk__in=member_ids or []))
    if member_ids is not None and len(members) != len(set(member_ids)):
        unknown = sorted(set(member_ids) - {member.pk for member in members})
        raise ValidationError({"members": f"There is no recipient with the id {', '.join(map(str, unknown))}."})
    with audit.acting_as(actor), transaction.atomic():
        recipient_list.save()
        if member_ids is not None:
            recipient_list.recipients.set(members)
    return recipient_list


def delete_recipient_list(*, recipient_list: RecipientList, actor: User) -> None:
    with audit.acting_as(actor), transaction.atomic():
        recipient_list.delete()
