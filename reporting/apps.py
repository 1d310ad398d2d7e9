from django.apps import AppConfig


class ReportingConfig(AppConfig):
    name = "reporting"
    verbose_name = "Scheduled reports"

    def ready(self) -> None:
        from reporting import conf

        if conf.setting("SENTRY_DSN"):  # errors and scheduled runs' check-ins to Sentry (README "Observability")
            from reporting import observability

            observability.init_sentry(
                conf.setting("SENTRY_DSN"), environment=conf.setting("SENTRY_ENVIRONMENT") or None
            )
        from reporting import (
            signals,  # noqa: F401  (connects the receivers)
            tasks,  # noqa: F401  (registers the tasks that services.enqueue publishes by name)
        )
