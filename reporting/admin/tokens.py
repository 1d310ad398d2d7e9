"""The admin for API tokens: each staff member makes, sees and revokes their own (a superuser: everyone's).

The secret is shown once, in the message after it is made; only its hash is stored.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from reporting.models import ApiToken
from reporting.services import tokens as services_tokens


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="What it may do; never more than your own permissions allow.",
    )

    class Meta:
        model = ApiToken
        fields = ["name", "scopes", "expires_at"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "scopes_in_words", "created_at", "last_used_at", "expires_at", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["name", "prefix"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:  # a new token: its name, scopes and expiry; afterwards only "revoked" can change
            kwargs["form"] = ApiTokenForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:  # type: ignore[override]
        if obj is None:
            return ["name", "scopes", "expires_at"]
        return ["name", "prefix", "user", "scopes_in_words", "created_at", "last_used_at", "expires_at", "revoked"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        if obj is None:
            return []
        fixed = ["name", "prefix", "user", "scopes_in_words", "created_at", "last_used_at", "expires_at"]
        return [*fixed, "revoked"] if obj.revoked else fixed  # revoked for good

    @admin.display(description="scopes")
    def scopes_in_words(self, token: ApiToken) -> str:
        return ", ".join(token.scopes)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        found = super().get_queryset(request).select_related("user")
        return found if request.user.is_superuser else found.filter(user=request.user.pk)

    # Any staff member manages their own tokens (what a token may do is bounded by its user's permissions).
    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return self.has_module_permission(request) and self._own(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return self.has_module_permission(request) and self._own(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False  # revoked, not deleted: it stays listed with its last use

    @staticmethod
    def _own(request: HttpRequest, obj: ApiToken | None) -> bool:
        return obj is None or request.user.is_superuser or obj.user_id == request.user.pk

    def save_model(self, request: HttpRequest, token: ApiToken, form: forms.ModelForm, change: bool) -> None:
        if change:
            if form.cleaned_data.get("revoked") and "revoked" in form.changed_data:
                services_tokens.revoke_token(token=ApiToken.objects.get(pk=token.pk), actor=request.user)
            return
        try:
            issued = services_tokens.issue_token(
                user=request.user,  # type: ignore[arg-type]
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=form.cleaned_data.get("expires_at"),
                actor=request.user,
            )
        except ValidationError as exc:  # the form checked the same: only a race gets here
            raise ValidationError(exc.messages) from exc
        token.__dict__.update({name: value for name, value in issued.token.__dict__.items() if name != "_state"})
        token._state.adding = False
        messages.warning(
            request,
            f"The token {issued.token.name}: {issued.secret} — copy it now: it is not stored and will not be shown "
            "again.",
        )
