"""Email addresses as staff type them: checked, de-duplicated, and refused in words; a report's sender."""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email

from reporting.pipeline.deliver import domain_of, in_domains


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


# --- a report's sender ------------------------------------------------------------------


def domains_in_words(domains: list[str] | tuple[str, ...]) -> str:
    """The domains as staff read them: ".example.com" as "example.com and its subdomains"."""
    shown = [f"{entry[1:]} and its subdomains" if entry.startswith(".") else entry for entry in domains]
    return ", ".join(shown) if shown else "none"


def sender_problem(address: str, domains: list[str] | tuple[str, ...]) -> str:
    """Why a report may not send from `address`, in words ('' when it may)."""
    if in_domains(address, domains):
        return ""
    return (
        f"Reports may be sent only from addresses at {domains_in_words(domains)}; {domain_of(address) or address} "
        "is not one of them (an administrator can add it to REPORTING_SENDER_DOMAINS)."
    )


def one_line_problem(text: str) -> str:
    """Why `text` cannot go in an email header as it is, in words ('' when it can)."""
    if any(not character.isprintable() for character in text):
        return "It contains a line break or another control character."
    return ""


def list_unsubscribe_problem(url: str) -> str:
    """Why `url` cannot be a List-Unsubscribe link, in words ('' when it can): one mailto: address or https: URL."""
    if one_line_problem(url) or any(character in url for character in " <>,\"'"):
        return "Give one link, without spaces, commas, quotes or angle brackets."
    if url.lower().startswith("mailto:"):
        address = urlsplit(url).path
        return "" if not _address_problem(address) else f"{address or 'The mailto: link'} is not a valid email address."
    try:
        URLValidator(schemes=["https"])(url)
    except ValidationError:
        return "Give a mailto: address (mailto:unsubscribe@example.com) or an https: URL (https://example.com/unsubscribe)."
    return ""


def sender_header(*, name: str, address: str, default: str) -> str:
    """The From header of a report with `name` and `address` (either may be empty), else `default`.

    A name without an address is given to the default address; an address without a name is sent bare.
    """
    if not address:
        if not name:
            return default
        address = parseaddr(default)[1]
    # Quoted where the name needs it, and not encoded: Django encodes the header when it sends it.
    return str(Address(display_name=name, addr_spec=address)) if name else address
