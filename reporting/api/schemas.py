"""What goes in and comes out of the API. A report's fields are the admin form's own (as reports as code
writes them: relations by natural key), so a field added to the form is in the API too."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.db import models
from ninja import Field, Schema
from pydantic import ConfigDict, create_model

from reporting.models import Delivery, Report, ReportRun
from reporting.services.reports_as_code import REPORT_FIELDS

MAX_PAGE = 200
MAX_INT = 2**31 - 1  # what every database here stores in an integer column
MAX_ADDRESSES = 1000
Email = Annotated[str, Field(max_length=254)]
Name = Annotated[str, Field(max_length=200)]


class Strict(Schema):
    """A request body: an unknown field is refused (422), not ignored."""

    model_config = ConfigDict(extra="forbid")


class Page(Schema):
    """limit (1-200) and offset of a list; each answer gives the count of all that match."""

    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=MAX_INT)


class Schedule(Strict):
    """The report's crontab, in its timezone (default: the report's); rule "" or "last_business_day"."""

    minute: str = Field("0", max_length=240)
    hour: str = Field("7", max_length=96)
    day_of_month: str = Field("*", max_length=124)
    month_of_year: str = Field("*", max_length=64)
    day_of_week: str = Field("*", max_length=64)
    timezone: str | None = Field(None, max_length=64)
    rule: str = Field("", max_length=40)


def _type_of(field: models.Field, *, for_input: bool) -> Any:
    """The Python type of a report form field, as the API writes it (a decimal as text)."""
    if field.choices:
        kind: Any = Literal[tuple(str(value) for value, _label in field.flatchoices)]
    elif isinstance(field, models.BooleanField):
        kind = bool
    elif isinstance(field, models.IntegerField):
        kind = Annotated[int, Field(ge=0, le=MAX_INT)]
    elif isinstance(field, models.DecimalField):
        kind = Decimal if for_input else str
    elif isinstance(field, models.JSONField):
        kind = list[dict[str, Any]] if field.name == "charts" else dict[str, Any]
    elif field.max_length:
        kind = Annotated[str, Field(max_length=field.max_length)]
    else:
        kind = Annotated[str, Field(max_length=100_000)]
    return kind | None if field.null else kind


def _report_fields(*, for_input: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in REPORT_FIELDS:
        kind = _type_of(Report._meta.get_field(name), for_input=for_input)  # type: ignore[arg-type]
        fields[name] = (kind | None, None) if for_input else (kind, ...)
    return fields


_RELATIONS_OUT: dict[str, Any] = {
    "id": (int, ...),
    "owner": (str | None, ...),
    "data_source": (str, ...),
    "recipients": (list[str], ...),
    "recipient_lists": (list[str], ...),
    "destinations": (list[str], ...),
    "schedule": (Schedule | None, ...),
}
_RELATIONS_IN: dict[str, Any] = {
    "owner": (Annotated[str, Field(max_length=150)] | None, None),
    "data_source": (Name | None, None),
    "recipients": (Annotated[list[Email], Field(max_length=MAX_ADDRESSES)] | None, None),
    "recipient_lists": (Annotated[list[Name], Field(max_length=MAX_ADDRESSES)] | None, None),
    "destinations": (Annotated[list[Name], Field(max_length=MAX_ADDRESSES)] | None, None),
    "schedule": (Schedule | None, None),
}

ReportOut = create_model("ReportOut", __base__=Schema, **_RELATIONS_OUT, **_report_fields(for_input=False))
ReportIn = create_model("ReportIn", __base__=Strict, **_RELATIONS_IN, **_report_fields(for_input=True))
ReportIn.__doc__ = (
    "A report's fields as the admin's form has them; relations by name (owner: a username, data_source and "
    "recipient_lists: names, recipients: addresses). Left out: unchanged. schedule null: run only by hand; "
    "a schedule's fields left out: unchanged (a new schedule: 0 7 * * *)."
)
_REQUIRED_NEW = {
    "name": (Name, ...),
    "slug": (Annotated[str, Field(max_length=100)], ...),
    "data_source": (Name, ...),
    "template": (Annotated[str, Field(max_length=200)], ...),
}
NewReportIn = create_model("NewReportIn", __base__=ReportIn, **_REQUIRED_NEW)  # type: ignore[call-overload]
NewReportIn.__doc__ = (
    "A new report: as ReportIn, with name, slug, data_source and template; the rest: the form's defaults."
)


class ReportPage(Schema):
    count: int
    items: list[ReportOut]  # type: ignore[valid-type]


class RunRequest(Strict):
    """period_day: any day in the period to report on; left out: the last complete period."""

    period_day: date | None = None


class TestRequest(RunRequest):
    """recipient_id: whose report a test of a per-recipient report sends (default: its first recipient)."""

    recipient_id: int | None = Field(None, ge=1, le=MAX_INT)


class RunBrief(Schema):
    id: int
    report_id: int
    report_name: str
    period_start: date
    period_end: date
    period_label: str
    trigger: Literal[tuple(ReportRun.Trigger.values)]  # type: ignore[valid-type]
    status: Literal[tuple(ReportRun.Status.values)]  # type: ignore[valid-type]
    recipients: list[str]
    created_at: datetime
    finished_at: datetime | None
    error: str


class RunsQueued(Schema):
    runs: list[RunBrief]


class DeliveryOut(Schema):
    id: int
    channel: str
    address: str
    target: str
    kind: Literal[tuple(Delivery.Kind.values)]  # type: ignore[valid-type]
    status: Literal[tuple(Delivery.Status.values)]  # type: ignore[valid-type]
    requested_by_id: int | None
    message_id: str
    error: str
    created_at: datetime
    sent_at: datetime | None


class AttachmentOut(Schema):
    id: int
    filename: str
    mimetype: str
    size: int
    available: bool
    url: str


class RunOut(RunBrief):
    subject: str
    row_count: int | None
    notes: str
    legal_hold: bool
    deliveries: list[DeliveryOut]
    attachments: list[AttachmentOut]


class RunPage(Schema):
    count: int
    items: list[RunBrief]


class ResendRequest(Strict):
    """addresses: exactly who gets it; left out or null: the run's original recipients."""

    addresses: Annotated[list[Email], Field(min_length=1, max_length=MAX_ADDRESSES)] | None = None


class ResendOut(Schema):
    run_id: int
    addresses: list[str]
    deliveries: list[DeliveryOut]


class RecipientOut(Schema):
    id: int
    email: str
    name: str
    active: bool
    attributes: dict[str, Any]


class RecipientIn(Strict):
    email: Email | None = None
    name: Name | None = None
    active: bool | None = None
    attributes: dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=1000)]] | None = None


class RecipientPage(Schema):
    count: int
    items: list[RecipientOut]


class RecipientListOut(Schema):
    id: int
    name: str
    members: list[int]


class RecipientListIn(Strict):
    """members: the recipients' ids (replaces the list's members; left out: unchanged)."""

    name: Name | None = None
    members: Annotated[list[Annotated[int, Field(ge=1, le=MAX_INT)]], Field(max_length=10_000)] | None = None


class RecipientListPage(Schema):
    count: int
    items: list[RecipientListOut]
