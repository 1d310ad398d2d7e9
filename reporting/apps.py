from django.apps import AppConfig


class ReportingConfig(AppConfig):
    name = "reporting"
    verbose_name = "Scheduled reports"

    def ready(self) -> None:
        from reporting import (
            signals,  # noqa: F401  (connects the receivers)
            tasks,  # noqa: F401  (registers the tasks that services.enqueue publishes by name)
        )
