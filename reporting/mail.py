"""An email backend for the embedded default: each message becomes one `.eml` file."""

import re
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage
from django.utils import timezone


class EmlFileBackend(BaseEmailBackend):
    """Write each message to EMAIL_FILE_PATH as `<time>_<recipient>_<message-id>.eml`.

    Django's own file backend appends a whole connection's messages to one `.log`
    file; one standard `.eml` per message opens directly in any mail program.
    """

    def __init__(self, file_path: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.folder = Path(file_path or settings.EMAIL_FILE_PATH)

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        for message in email_messages:
            mime = message.message()
            name = "_".join(
                [
                    timezone.now().strftime("%Y%m%d-%H%M%S-%f"),
                    _safe(",".join(message.recipients()))[:80],
                    _safe(mime["Message-ID"] or "")[:60],
                ]
            )
            path = self.folder / f"{name}.eml"
            path.write_bytes(mime.as_bytes(linesep="\r\n"))  # type: ignore[call-arg]
        return len(email_messages)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@.+-]+", "-", text).strip("-")
