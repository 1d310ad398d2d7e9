"""The Celery app: settings come from Django settings under the CELERY_ prefix."""

import os

from celery import Celery, bootsteps, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Each worker writes "worker:<hostname>" on its own timer (reporting.health), for /healthz."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.timer_ref = None

    def start(self, worker) -> None:
        from reporting.health import HEARTBEAT_SECONDS

        name, detail = f"worker:{worker.hostname}", {"pid": os.getpid()}
        _heartbeat(name, detail)
        self.timer_ref = worker.timer.call_repeatedly(HEARTBEAT_SECONDS, _heartbeat, (name, detail))

    def stop(self, worker) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None


def _heartbeat(name: str, detail: dict) -> None:
    """Write the heartbeat, then close the timer thread's connection: nothing else uses it."""
    from django.db import connection

    from reporting.health import record_heartbeat

    record_heartbeat(name, **detail)
    connection.close()


app.steps["worker"].add(WorkerHeartbeat)


@signals.worker_init.connect
def load_rendering_libraries(**_kwargs) -> None:
    """A worker loads the rendering stack before forking its pool (its children share it); beat does not."""
    from reporting.pipeline.render import load_libraries

    load_libraries()
