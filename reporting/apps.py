from django.apps import AppConfig


class ReportingConfig(AppConfig):
    name = "reporting"
    verbose_name = "Scheduled reports"

    def ready(self) -> None:
        from django.conf import settings

        if settings.SENTRY_DSN:  # errors and scheduled runs' check-ins to Sentry (README "Observability")
            from reporting import observability

            observability.init_sentry(settings.SENTRY_DSN, environment=settings.SENTRY_ENVIRONMENT or None)
        from reporting import (
            signals,  # noqa: F401  (connects the receivers)
            tasks,  # noqa: F401  (registers the tasks that services.enqueue publishes by name)
        )
