"""Services on API tokens: issue one (its secret shown once), revoke one, and know who a secret acts for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from reporting import audit, tokens
from reporting.models import ApiToken

User = AbstractBaseUser | AnonymousUser | None
SCOPES = frozenset(ApiToken.Scope.values)
LAST_USED_PRECISION = 60  # seconds: a token used many times a minute is written once a minute


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once, never stored


def issue_token(
    *, user: AbstractBaseUser, name: str, scopes: list[str], expires_at: datetime | None, actor: User
) -> IssuedToken:
    """A new token for `user`; only the hash of its secret is stored. ValidationError in words on unknown scopes."""
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise ValidationError({"scopes": f"Unknown scopes: {', '.join(unknown)}."})
    if not scopes:
        raise ValidationError({"scopes": "Choose at least one scope."})
    secret = tokens.new_secret()
    token = ApiToken(
        user=user,  # type: ignore[misc]  # the project's user model
        name=name,
        prefix=secret[: tokens.SHOWN_CHARACTERS],
        key_hash=tokens.hash_of(secret),
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
    )
    token.full_clean()
    with audit.acting_as(actor), transaction.atomic():
        token.save()
    return IssuedToken(token, secret)


def revoke_token(*, token: ApiToken, actor: User) -> None:
    """Refuse the token from now on (it stays listed, revoked)."""
    with audit.acting_as(actor), transaction.atomic():
        token.revoked = True
        token.save(update_fields=["revoked"])


def authenticate(*, secret: str) -> ApiToken | None:
    """The usable token of an active user whose secret this is (its last use noted), or None."""
    token = tokens.find(secret)
    if token is None or not token.is_usable() or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
