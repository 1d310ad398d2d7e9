"""Recipients and recipient lists: list, read, create, change, delete, as the admin allows."""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Path, Query, Router, Status

from reporting.api import schemas
from reporting.api.access import (
    ADD_LISTS,
    ADD_RECIPIENTS,
    CHANGE_LISTS,
    CHANGE_RECIPIENTS,
    DELETE_LISTS,
    DELETE_RECIPIENTS,
    VIEW_LISTS,
    VIEW_RECIPIENTS,
    token,
)
from reporting.api.errors import answers
from reporting.models import Recipient, RecipientList
from reporting.services import recipients as services_recipients

router = Router(tags=["recipients"])
ObjectId = Path(..., ge=1, le=schemas.MAX_INT)
RECIPIENT_FIELDS = ("id", "email", "name", "active", "attributes")


PAGE = Query(...)


def _recipient(recipient: Recipient) -> dict[str, Any]:
    return {name: getattr(recipient, name) for name in RECIPIENT_FIELDS}


def _list(recipient_list: RecipientList) -> dict[str, Any]:
    members = sorted(recipient_list.recipients.values_list("pk", flat=True))
    return {"id": recipient_list.pk, "name": recipient_list.name, "members": members}


@router.get(
    "/recipients",
    response=answers({200: schemas.RecipientPage}),
    operation_id="list_recipients",
    auth=token(VIEW_RECIPIENTS),
)
def list_recipients(request: HttpRequest, page: schemas.Page = PAGE) -> dict[str, Any]:
    found = Recipient.objects.order_by("email", "pk")
    return {"count": found.count(), "items": [_recipient(r) for r in found[page.offset : page.offset + page.limit]]}


@router.get(
    "/recipients/{recipient_id}",
    response=answers({200: schemas.RecipientOut}),
    operation_id="get_recipient",
    auth=token(VIEW_RECIPIENTS),
)
def get_recipient(request: HttpRequest, recipient_id: int = ObjectId) -> dict[str, Any]:
    return _recipient(get_object_or_404(Recipient, pk=recipient_id))


@router.post(
    "/recipients",
    response=answers({201: schemas.RecipientOut}),
    operation_id="create_recipient",
    auth=token(ADD_RECIPIENTS),
)
def create_recipient(request: HttpRequest, values: schemas.RecipientIn) -> Status:
    recipient = Recipient(**_given(values))
    services_recipients.save_recipient(recipient=recipient, actor=request.user)
    return Status(201, _recipient(recipient))


@router.patch(
    "/recipients/{recipient_id}",
    response=answers({200: schemas.RecipientOut}),
    operation_id="update_recipient",
    auth=token(CHANGE_RECIPIENTS),
)
def update_recipient(request: HttpRequest, values: schemas.RecipientIn, recipient_id: int = ObjectId) -> dict[str, Any]:
    recipient = get_object_or_404(Recipient, pk=recipient_id)
    for name, value in _given(values).items():
        setattr(recipient, name, value)
    services_recipients.save_recipient(recipient=recipient, actor=request.user)
    return _recipient(recipient)


@router.delete(
    "/recipients/{recipient_id}",
    response=answers({204: None}),
    operation_id="delete_recipient",
    auth=token(DELETE_RECIPIENTS),
)
def delete_recipient(request: HttpRequest, recipient_id: int = ObjectId) -> HttpResponse:
    recipient = get_object_or_404(Recipient, pk=recipient_id)
    services_recipients.delete_recipient(recipient=recipient, actor=request.user)
    return HttpResponse(status=204)


@router.get(
    "/recipient-lists",
    response=answers({200: schemas.RecipientListPage}),
    operation_id="list_recipient_lists",
    auth=token(VIEW_LISTS),
)
def list_recipient_lists(request: HttpRequest, page: schemas.Page = PAGE) -> dict[str, Any]:
    found = RecipientList.objects.order_by("name", "pk")
    return {"count": found.count(), "items": [_list(each) for each in found[page.offset : page.offset + page.limit]]}


@router.get(
    "/recipient-lists/{list_id}",
    response=answers({200: schemas.RecipientListOut}),
    operation_id="get_recipient_list",
    auth=token(VIEW_LISTS),
)
def get_recipient_list(request: HttpRequest, list_id: int = ObjectId) -> dict[str, Any]:
    return _list(get_object_or_404(RecipientList, pk=list_id))


@router.post(
    "/recipient-lists",
    response=answers({201: schemas.RecipientListOut}),
    operation_id="create_recipient_list",
    auth=token(ADD_LISTS),
)
def create_recipient_list(request: HttpRequest, values: schemas.RecipientListIn) -> Status:
    given = _given(values)
    recipient_list = RecipientList(name=given.get("name") or "")
    services_recipients.save_recipient_list(
        recipient_list=recipient_list, member_ids=given.get("members"), actor=request.user
    )
    return Status(201, _list(recipient_list))


@router.patch(
    "/recipient-lists/{list_id}",
    response=answers({200: schemas.RecipientListOut}),
    operation_id="update_recipient_list",
    auth=token(CHANGE_LISTS),
)
def update_recipient_list(
    request: HttpRequest, values: schemas.RecipientListIn, list_id: int = ObjectId
) -> dict[str, Any]:
    recipient_list = get_object_or_404(RecipientList, pk=list_id)
    given = _given(values)
    recipient_list.name = given.get("name", recipient_list.name)
    services_recipients.save_recipient_list(
        recipient_list=recipient_list, member_ids=given.get("members"), actor=request.user
    )
    return _list(recipient_list)


@router.delete(
    "/recipient-lists/{list_id}",
    response=answers({204: None}),
    operation_id="delete_recipient_list",
    auth=token(DELETE_LISTS),
)
def delete_recipient_list(request: HttpRequest, list_id: int = ObjectId) -> HttpResponse:
    recipient_list = get_object_or_404(RecipientList, pk=list_id)
    services_recipients.delete_recipient_list(recipient_list=recipient_list, actor=request.user)
    return HttpResponse(status=204)


def _given(values: Any) -> dict[str, Any]:
    """The fields the caller sent (null for a text field: empty)."""
    given = values.model_dump(exclude_unset=True)
    return {name: "" if value is None and name in ("email", "name") else value for name, value in given.items()}
