"""Email addresses as staff type them: checked, de-duplicated, and refused in words."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.validators import validate_email


def clean_addresses(addresses: list[str]) -> list[str]:
    """Validate and de-duplicate addresses (case-insensitively); ValidationError names the bad ones."""
    checked = check_addresses(addresses)
    if checked.invalid:
        raise ValidationError(f"Not a valid email address: {', '.join(map(readable_address, checked.invalid))}.")
    return checked.valid


@dataclass(frozen=True)
class CheckedAddresses:
    valid: list[str]  # each once, case-insensitively, in the order given
    invalid: dict[str, str]  # address → why it is refused, in words


def check_addresses(addresses: list[str]) -> CheckedAddresses:
    """Sort addresses into valid ones (de-duplicated case-insensitively) and invalid ones with the reason.

    Refused besides what Django's validator refuses: a line break or other control character
    (it could add a header) and more than 254 characters (what SMTP carries).
    """
    unique: dict[str, str] = {}
    invalid: dict[str, str] = {}
    for raw in addresses:
        address = raw.strip()
        if not address:
            continue
        problem = _address_problem(address)
        if problem:
            invalid[address] = f"{problem}; nothing was sent to it."
        else:
            unique.setdefault(address.lower(), address)
    return CheckedAddresses(valid=list(unique.values()), invalid=invalid)


def _address_problem(address: str) -> str:
    if any(not character.isprintable() for character in address):
        return "Not a valid email address (it contains a line break or another control character)"
    if len(address) > 254:
        return "Not a valid email address (longer than 254 characters)"
    try:
        validate_email(address)
    except ValidationError:
        return "Not a valid email address"
    return ""


def readable_address(address: str) -> str:
    """An address as staff can read it: control characters shown escaped."""
    return address if address.isprintable() else repr(address)


def check_some_address_is_valid(addresses: list[str]) -> None:
    """ValidationError in words when not one of `addresses` could be sent to."""
    if not check_addresses(addresses).valid:
        shown = ", ".join(readable_address(address) for address in addresses[:5])
        raise ValidationError(f"None of the run's addresses is a valid email address ({shown}): nothing was sent.")
