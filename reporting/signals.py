"""Keep a report and its PeriodicTask in step, whichever admin page edits them."""

from anymail.signals import tracking
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django_celery_beat.models import PeriodicTask

from reporting import schedules
from reporting.models import Report
from reporting.tracking import record_esp_event


@receiver(post_delete, sender=Report)
def delete_report_schedule(sender, instance: Report, **kwargs) -> None:
    """Deleting a report deletes its task and crontab, also on bulk deletes in the admin."""
    if instance.periodic_task_id:
        task = PeriodicTask.objects.filter(pk=instance.periodic_task_id).select_related("crontab").first()
        if task is not None:
            instance.periodic_task = task
            schedules.delete_schedule(instance)


@receiver(post_save, sender=PeriodicTask)
def follow_task_enabled(sender, instance: PeriodicTask, **kwargs) -> None:
    """A task disabled or enabled on django-celery-beat's pages does the same to its report."""
    Report.objects.filter(periodic_task=instance).exclude(enabled=instance.enabled).update(enabled=instance.enabled)


@receiver(tracking)
def follow_esp_tracking(sender, event, esp_name: str, **kwargs) -> None:
    """An ESP's delivered / bounced webhook updates the delivery in the archive."""
    record_esp_event(
        message_id=str(event.message_id or ""),
        recipient=event.recipient or "",
        event_type=event.event_type,
        description=event.description or event.mta_response or "",
    )
