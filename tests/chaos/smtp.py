"""An SMTP server on loopback that keeps a mailbox and can stall or refuse on command.

A message is in the mailbox once the server acknowledged it (the 250 after DATA went out).
While stalled, every reply waits `delay` seconds first; if the client has given up by then
(it closed the connection or sent its next command), the server drops the connection and
keeps nothing of an unacknowledged message: the client was told nothing and recorded a
failure, and the mailbox agrees. (A real MTA may keep a message whose 250 was lost, the
ambiguity of RFC 1047; the service can only guess then, so it is not modelled here.)
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from tests.e2e.conftest import free_port

ALERT_PREFIX = "[Scheduled Reports] "
# What a real server takes to accept a message: long enough that a worker killed during a
# run's sends is often caught mid-message, well under the clients' timeout.
ACCEPT_SECONDS = 0.4


@dataclass(frozen=True)
class Received:
    """One acknowledged message: its envelope recipients, subject and Message-ID."""

    recipients: tuple[str, ...]
    subject: str
    message_id: str
    at: float  # time.time()
    body: str  # the HTML and plain-text parts, to check the report's figures

    @property
    def is_alert(self) -> bool:
        return self.subject.startswith(ALERT_PREFIX)


@dataclass(frozen=True)
class Mode:
    """How the server answers now: normally, slowly, or with an error at one phase."""

    delay: float = 0.0
    refuse_phase: str = ""  # "greeting", "rcpt" or "data"
    refuse_code: int = 0

    def refusal(self, phase: str) -> str | None:
        if self.refuse_phase != phase:
            return None
        kind = "Temporary" if self.refuse_code < 500 else "Permanent"
        return f"{self.refuse_code} {kind} failure injected by the chaos harness"


class ChaosSmtp:
    """The server, its mailbox and its fault switches (thread-safe: the server runs in a thread)."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.mode = Mode()
        self.dropped = 0  # unacknowledged messages dropped because the client had given up
        self._mailbox: list[Received] = []
        self._lock = threading.Lock()
        self._controller = _Controller(self, hostname=self.host, port=self.port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    # --- faults ---------------------------------------------------------------------------

    def stall(self, delay: float) -> None:
        self.mode = Mode(delay=delay)

    def refuse(self, phase: str, code: int) -> None:
        self.mode = Mode(refuse_phase=phase, refuse_code=code)

    def normal(self) -> None:
        self.mode = Mode()

    # --- the mailbox ----------------------------------------------------------------------

    def mailbox(self) -> list[Received]:
        with self._lock:
            return list(self._mailbox)

    def count_dropped(self) -> None:
        with self._lock:
            self.dropped += 1

    def keep(self, recipients: list[str], content: bytes) -> None:
        message = email.message_from_bytes(content, policy=email.policy.default)
        parts = [message.get_body((kind,)) for kind in ("html", "plain")]
        received = Received(
            recipients=tuple(recipients),
            subject=str(message.get("Subject", "")),
            message_id=str(message.get("Message-ID", "")).strip(),
            at=time.time(),
            body="\n".join(part.get_content() for part in parts if part is not None),
        )
        with self._lock:
            self._mailbox.append(received)


class _Handler:
    def __init__(self, server: ChaosSmtp):
        self.server = server

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        refusal = self.server.mode.refusal("rcpt")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):
        refusal = self.server.mode.refusal("data")
        if refusal:
            return refusal
        await asyncio.sleep(ACCEPT_SECONDS)
        # Kept when the acknowledgement goes out (see _ChaosSMTP.push), not before.
        session.chaos_pending = (list(envelope.rcpt_tos), bytes(envelope.original_content))
        return "250 Message accepted for delivery"


class _ChaosSMTP(SMTP):
    """aiosmtpd's protocol with the fault switches applied to every reply."""

    def __init__(self, handler: _Handler, **kwargs):
        super().__init__(handler, **kwargs)
        self.chaos = handler.server

    async def push(self, status):
        text = status.decode() if isinstance(status, bytes) else status
        mode = self.chaos.mode
        refusal = mode.refusal("greeting")
        if text.startswith("220 ") and refusal:
            await super().push(refusal)
            self._close()
            return
        if mode.delay:
            try:
                await asyncio.sleep(mode.delay)
            except asyncio.CancelledError:  # the client closed the connection meanwhile
                if self._forget_pending() is not None:
                    self.chaos.count_dropped()
                raise
            if self._client_gave_up():
                if self._forget_pending() is not None:
                    self.chaos.count_dropped()
                self._close()
                return
        pending = self._forget_pending()
        if pending is not None and text.startswith("250"):
            self.chaos.keep(*pending)
        await super().push(status)

    def _client_gave_up(self) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing() or self._reader.at_eof():
            return True
        # smtplib never pipelines: anything already waiting is the command it sent after giving up.
        return bool(self._reader._buffer)

    def _forget_pending(self):
        pending = getattr(self.session, "chaos_pending", None) if self.session else None
        if pending is not None:
            self.session.chaos_pending = None
        return pending

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Controller(Controller):
    def __init__(self, server: ChaosSmtp, **kwargs):
        super().__init__(_Handler(server), **kwargs)

    def factory(self):
        return _ChaosSMTP(self.handler, **self.SMTP_kwargs)
