"""Enrol a user's TOTP authenticator for the admin's two-factor step (django-otp)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

DEVICE_NAME = "Authenticator"


@transaction.atomic
def enrol_totp(*, username: str, replace: bool = False) -> TOTPDevice:
    """Give `username` a new confirmed TOTP device; with `replace`, their old ones stop working."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ValidationError(f"There is no user {username!r}.")
    existing = TOTPDevice.objects.filter(user=user)
    if existing.exists() and not replace:
        raise ValidationError(
            f"{username} already has an authenticator. Use --replace to give them a new one "
            "(the old one then stops working)."
        )
    existing.delete()
    return TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=True)
