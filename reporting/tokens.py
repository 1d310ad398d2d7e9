"""API tokens' secrets: made at random, kept only as their sha256, found again by that hash."""

from __future__ import annotations

import hashlib
import secrets

from reporting.models import ApiToken

PREFIX = "rpt_"
SECRET_BYTES = 32
SHOWN_CHARACTERS = 12  # "rpt_" and the first 8 characters of the random part: enough to tell tokens apart


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def hash_of(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def find(secret: str) -> ApiToken | None:
    """The token whose secret this is, with its user; the lookup is by hash, so nothing is compared char by char."""
    return ApiToken.objects.select_related("user").filter(key_hash=hash_of(secret)).first()
