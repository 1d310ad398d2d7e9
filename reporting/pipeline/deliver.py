"""Deliver: one email per address through Django's email API.

Any Django email backend works: django-anymail's ESP backends, SMTP, or the `.eml`
file backend of the embedded default. The caller owns the bookkeeping; this module
builds messages and sends them one at a time over one connection.
"""

from __future__ import annotations

import secrets
import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from anymail.message import attach_inline_image
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import make_msgid

from reporting import conf
from reporting.pipeline.render import Attachment

_FAILED_ESP_STATUSES = {"rejected", "failed", "invalid"}


class DeliveryError(Exception):
    """One message was not accepted; `permanent` says retrying will not help."""

    def __init__(self, message: str, *, permanent: bool):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class OutgoingEmail:
    subject: str
    html: str
    text: str
    attachments: list[Attachment]
    from_email: str = ""  # "": DEFAULT_FROM_EMAIL
    reply_to: str = ""
    list_unsubscribe: str = ""  # a mailto: or https: link, for recipients outside REPORTING_INTERNAL_DOMAINS


@dataclass(frozen=True)
class SendResult:
    message_id: str
    esp_status: str  # anymail's status for this recipient, or "" when the backend gives none


@contextmanager
def connection() -> Iterator[BaseEmailBackend]:
    """One open connection to the configured email backend, closed afterwards."""
    backend = get_connection(fail_silently=False)
    try:
        backend.open()
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"The mail server could not be reached: {exc}", permanent=False) from exc
    try:
        yield backend
    finally:
        backend.close()


def send(email: OutgoingEmail, address: str, *, backend: BaseEmailBackend) -> SendResult:
    """Send `email` to `address` alone; raise DeliveryError when it is not accepted."""
    message = build_message(email, address, backend=backend)
    try:
        backend.send_messages([message])
    except smtplib.SMTPRecipientsRefused as exc:
        code, reason = next(iter(exc.recipients.values()))
        raise DeliveryError(_smtp_words(code, reason), permanent=code >= 500) from exc
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(_smtp_words(exc.smtp_code, exc.smtp_error), permanent=exc.smtp_code >= 500) from exc
    except AnymailRecipientsRefused as exc:
        raise DeliveryError(f"The email service refused the address: {exc}", permanent=True) from exc
    except AnymailError as exc:  # before OSError: anymail's API errors are requests' (and so OSError's) too
        raise DeliveryError(f"The email service refused the message: {_first_line(exc)}", permanent=False) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"The mail server could not be reached: {exc}", permanent=False) from exc
    except Exception as exc:  # ESP backends raise their own errors (anymail.exceptions.AnymailError, …)
        raise DeliveryError(f"The email service refused the message: {exc}", permanent=False) from exc
    return _result(message)


class _Message(EmailMultiAlternatives):
    """An email whose MIME boundaries are drawn when it is built, from 128 random bits.

    Python's email generator otherwise makes each one up as it writes the message, and compiles
    a regular expression of it to check that no part holds it: ~0.2 ms a message. A boundary of
    128 bits drawn after the content exists cannot be in it but by a chance of 2**-128, which no
    value from a data source can improve on: it cannot know the bits.
    """

    def message(self, **options: Any) -> Any:  # Django 6 adds a `policy` option
        mime = super().message(**options)
        for part in mime.walk():
            if part.is_multipart():
                part.set_boundary(f"==============={secrets.token_hex(16)}==")
        return mime


def build_message(
    email: OutgoingEmail, address: str, *, backend: BaseEmailBackend | None = None
) -> EmailMultiAlternatives:
    message = _Message(
        subject=email.subject,
        body=email.text,
        from_email=email.from_email or settings.DEFAULT_FROM_EMAIL,
        to=[address],
        reply_to=[email.reply_to] if email.reply_to else None,
        headers={"Message-ID": make_msgid(domain=_domain()), **unsubscribe_headers(email.list_unsubscribe, address)},
        connection=backend,
    )
    html = email.html
    for attachment in email.attachments:
        if attachment.content_id:  # an image inside the HTML: a fresh Content-ID for each message
            content_id = attach_inline_image(message, attachment.read(), attachment.filename)
            html = html.replace(f"cid:{attachment.content_id}", f"cid:{content_id}")
        else:
            message.attach(attachment.filename, attachment.read(), attachment.mimetype)  # from its spool when large
    message.attach_alternative(html, "text/html")
    return message


def unsubscribe_headers(link: str, address: str) -> dict[str, str]:
    """List-Unsubscribe for a recipient outside the company; with an https: link, one-click too (RFC 8058)."""
    if not link or in_domains(address, conf.REPORTING["INTERNAL_DOMAINS"]):
        return {}
    headers = {"List-Unsubscribe": f"<{link}>"}
    if link.lower().startswith("https:"):
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def domain_of(address: str) -> str:
    """The domain of an email address, lower-cased ('' without one)."""
    return address.rpartition("@")[2].strip().lower() if "@" in address else ""


def in_domains(address: str, domains: list[str] | tuple[str, ...]) -> bool:
    """Whether the address is at one of `domains`: "example.com" exactly, ".example.com" it and its subdomains."""
    domain = domain_of(address)
    for entry in domains:
        entry = entry.lower()
        if domain == entry.lstrip(".") or (entry.startswith(".") and domain.endswith(entry)):
            return True
    return False


def _result(message: EmailMultiAlternatives) -> SendResult:
    message_id = message.extra_headers["Message-ID"]
    status = getattr(message, "anymail_status", None)
    if status is None:
        return SendResult(message_id=message_id, esp_status="")
    statuses = set(status.status or ())
    if statuses & _FAILED_ESP_STATUSES:
        raise DeliveryError(
            f"The email service did not accept the message (status: {', '.join(sorted(statuses))}).", permanent=True
        )
    esp_id = str(status.message_id) if status.message_id is not None else message_id
    return SendResult(message_id=esp_id, esp_status=",".join(sorted(statuses)))


def _first_line(exc: Exception) -> str:
    """Anymail's first line ("Postmark API response 401 (UNAUTHORIZED)"), with the ESP's own words."""
    first = str(exc).splitlines()[0].rstrip(": {") if str(exc) else type(exc).__name__
    response = getattr(exc, "response", None)
    try:
        answer = response.json() if response is not None else {}
    except ValueError:
        answer = {}
    words = next(
        (
            answer[key]
            for key in ("Message", "message", "error", "detail")
            if isinstance(answer, dict) and isinstance(answer.get(key), str)
        ),
        "",
    )
    return f"{first}: {words}"[:500] if words else first[:500]


def _smtp_words(code: int, reason: bytes | str) -> str:
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    kind = "permanently refused" if code >= 500 else "temporarily refused"
    return f"The mail server {kind} the message ({code} {text})."


def _domain() -> str:
    sender = settings.DEFAULT_FROM_EMAIL
    return sender.rsplit("@", 1)[-1].strip(" >") if "@" in sender else "localhost"
