"""Times and durations as staff read them on a run's page."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.utils.dateformat import format as format_date

from reporting import conf


def duration_in_words(duration: timedelta) -> str:
    """A duration as people say it: "4 min 30 s", "2 h 5 min", "12 s"."""
    seconds = max(0, round(duration.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    return f"{seconds} s"


def local_time(moment: datetime, timezone_name: str | None) -> str:
    """`moment` in the given timezone (UTC when none), e.g. "25 November 2026, 15:50:03 GMT"."""
    return format_date(moment.astimezone(ZoneInfo(timezone_name or "UTC")), "j F Y, H:i:s T")


def retry_delay(retries: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, at least the server's Retry-After, capped."""
    base = conf.REPORTING["FETCH_RETRY_BASE_SECONDS"]
    cap = conf.REPORTING["FETCH_RETRY_MAX_SECONDS"]
    backoff = random.uniform(base, min(cap, base * 2**retries))
    return min(cap, max(backoff, retry_after or 0))
