"""Reading django-auditlog's entries (each field before and after, and who) for one object."""

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Model


def audit_log_entries(instance: Model, *, limit: int = 20) -> list[LogEntry]:
    """The latest audit-log entries of one object, newest first."""
    content_type = ContentType.objects.get_for_model(instance)
    entries = LogEntry.objects.filter(content_type=content_type, object_pk=str(instance.pk))
    return list(entries.select_related("actor").order_by("-timestamp", "-pk")[:limit])
