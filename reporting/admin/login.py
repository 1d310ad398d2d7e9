"""The admin's login, hardened: the lockout page of django-axes, and two-factor authentication.

Two-factor (django-otp, TOTP) is switched on by REPORTING_REQUIRE_2FA. With it on, a
superuser or a member of REPORTING_2FA_GROUPS who has logged in with a password is sent
to the verification page until they give a code from their enrolled authenticator
(`python manage.py enrol_totp USERNAME`); the session then stays verified.
With it off, nothing changes.
"""

from collections.abc import Callable

import django_otp
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django_otp.forms import OTPTokenForm

from reporting import conf

VERIFY_URL_NAME = "reporting_verify_2fa"


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """django-axes' answer to a locked-out login: what happened and how long it lasts, in words."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    context = {
        "title": "Logging in is blocked for a while",
        "username": username,
        "failure_limit": conf.setting("AXES_FAILURE_LIMIT"),
        "cooloff_minutes": conf.setting("AXES_COOLOFF_MINUTES"),
        "site_header": "Scheduled Reports",
    }
    return TemplateResponse(request, "admin/locked_out.html", context, status=429).render()


class VerifyForm(OTPTokenForm):
    """django-otp's token form, with errors that tell the user what to do."""

    otp_error_messages = {
        **OTPTokenForm.otp_error_messages,
        "token_required": "Enter the 6-digit code your authenticator app shows.",
        "invalid_token": "That code is not right, or it was already used. Enter the code your app shows now.",
    }


def needs_two_factor(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether this user must pass a second factor before using the admin."""
    if not conf.setting("REPORTING_REQUIRE_2FA") or not user.is_authenticated:
        return False
    return isinstance(user, PermissionsMixin) and (
        user.is_superuser or user.groups.filter(name__in=conf.setting("REPORTING_2FA_GROUPS")).exists()
    )


class RequireTwoFactorMiddleware:
    """Send an unverified user who needs a second factor from any admin page to the verification page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._must_verify(request):
            verify = reverse(VERIFY_URL_NAME)
            return redirect(f"{verify}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)

    @staticmethod
    def _must_verify(request: HttpRequest) -> bool:
        if not conf.setting("REPORTING_REQUIRE_2FA") or request.user.is_verified():  # type: ignore[union-attr]
            return False
        # /healthz, the demo API and ESP webhooks have no admin session; logging out is always allowed.
        exempt = (reverse(VERIFY_URL_NAME), reverse("admin:logout"))
        on_admin = request.path.startswith(reverse("admin:index"))
        return on_admin and request.path not in exempt and needs_two_factor(request.user)


@login_required(login_url="admin:login")
def verify_view(request: HttpRequest) -> HttpResponse:
    """Ask for a code from the user's authenticator; a right one marks the session verified."""
    target = _safe_next(request)
    if not needs_two_factor(request.user) or request.user.is_verified():  # type: ignore[union-attr]
        return redirect(target)
    form = VerifyForm(request.user, request, data=request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        django_otp.login(request, request.user.otp_device)  # type: ignore[union-attr]
        return redirect(target)
    context = {
        "title": "Two-factor verification",
        "form": form,
        "devices": list(django_otp.devices_for_user(request.user)),
        "next": target,
        "site_header": "Scheduled Reports",
    }
    return TemplateResponse(request, "admin/verify_2fa.html", context)


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return reverse("admin:index")
