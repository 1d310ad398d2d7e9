"""{% audit_log_for object as entries %}: an object's audit-log entries, for its admin History page."""

from django import template
from django.db.models import Model

from reporting.audit_log import audit_log_entries

register = template.Library()


@register.simple_tag
def audit_log_for(instance: Model | None) -> list:
    return audit_log_entries(instance) if isinstance(instance, Model) else []
