"""The system's own periodic tasks, kept to superusers.

The sweeps installed by migrations 0005 and 0008 (catch-up, run deadlines, alerts,
retention) are PeriodicTask rows named "Reporting: …". Report editors hold
django_celery_beat's change permission to edit report schedules, but disabling or
re-timing a sweep would silently stop catch-ups, deadlines or retention for everyone:
only a superuser may change or delete those rows, their crontabs, or act on them
through the list's actions.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django_celery_beat.admin import CrontabScheduleAdmin, PeriodicTaskAdmin
from django_celery_beat.models import CrontabSchedule, PeriodicTask

SYSTEM_TASK_PREFIX = "Reporting: "


def system_tasks() -> QuerySet[PeriodicTask]:
    return PeriodicTask.objects.filter(name__startswith=SYSTEM_TASK_PREFIX)


# What SystemTaskGuard is mixed into, for the type checker; at run time the mixin's base is object.
if TYPE_CHECKING:
    _AdminBase = admin.ModelAdmin
else:
    _AdminBase = object


class SystemTaskGuard(_AdminBase):
    """Refuse a non-superuser any change to the system tasks, however it is asked for."""

    def is_system(self, obj: Model) -> bool:
        raise NotImplementedError

    def system_rows(self, queryset: QuerySet) -> QuerySet:
        raise NotImplementedError

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is not None and self.is_system(obj) and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is not None and self.is_system(obj) and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict:
        """Bulk actions (enable, disable, run, delete…) skip the system tasks for a non-superuser."""
        actions = super().get_actions(request)
        if request.user.is_superuser:
            return actions
        return {name: (self._sparing_system(func), name, label) for name, (func, _, label) in actions.items()}  # type: ignore[misc]

    def _sparing_system(self, action: Callable) -> Callable:
        def run(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet):
            spared = self.system_rows(queryset).count()
            if spared:
                self.message_user(
                    request,
                    f"{spared} system task{'s' if spared != 1 else ''} (named “{SYSTEM_TASK_PREFIX}…”) left "
                    "unchanged: only a superuser may change them.",
                    messages.WARNING,
                )
            remaining = queryset.exclude(pk__in=self.system_rows(queryset).values("pk"))
            if remaining.exists():
                return action(modeladmin, request, remaining)
            return None

        return run


admin.site.unregister(PeriodicTask)
admin.site.unregister(CrontabSchedule)


@admin.register(PeriodicTask)
class GuardedPeriodicTaskAdmin(SystemTaskGuard, PeriodicTaskAdmin):
    def is_system(self, obj: PeriodicTask) -> bool:
        return obj.name.startswith(SYSTEM_TASK_PREFIX)

    def system_rows(self, queryset: QuerySet) -> QuerySet:
        return queryset.filter(name__startswith=SYSTEM_TASK_PREFIX)


@admin.register(CrontabSchedule)
class GuardedCrontabScheduleAdmin(SystemTaskGuard, CrontabScheduleAdmin):
    """A crontab a system task runs on is the system task's schedule: the same rule."""

    def is_system(self, obj: CrontabSchedule) -> bool:
        return system_tasks().filter(crontab=obj).exists()

    def system_rows(self, queryset: QuerySet) -> QuerySet:
        return queryset.filter(periodictask__name__startswith=SYSTEM_TASK_PREFIX).distinct()
