"""Log lines that say which run they are about, and JSON logs (settings.LOGGING uses both).

The orchestration (reporting.runs) sets the ids of the run, report and part it works on in a
contextvar; RunContextFilter copies them onto every record. No model import here: logging is
configured before the apps are loaded.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

_ids: ContextVar[dict[str, int]] = ContextVar("reporting_log_ids", default={})  # noqa: B039 (never mutated)


@contextmanager
def log_context(**ids: int) -> Iterator[None]:
    """Within this block every log record carries `ids` (run_id, report_id, part_id) besides the enclosing ones."""
    token = _ids.set({**_ids.get(), **ids})
    try:
        yield
    finally:
        _ids.reset(token)


def bind(**ids: int) -> None:
    """Add ids to the current log context (undone when the enclosing log_context ends)."""
    _ids.set({**_ids.get(), **ids})


class RunContextFilter(logging.Filter):
    """Adds the ids of the run being worked on (if any) to each record. Configured in settings.LOGGING."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _ids.get().items():
            setattr(record, name, value)
        return True


class JsonFormatter(BaseJsonFormatter):
    """python-json-logger's formatter, writing the traceback the secrets filter redacted rather than a fresh one."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.exc_text:
            record = copy.copy(record)
            record.exc_info = None  # the formatter then writes record.exc_text, already redacted
        return super().format(record)
