"""The Celery app: settings come from Django settings under the CELERY_ prefix."""

import os
from collections.abc import Callable
from typing import Any

from celery import Celery, Task, bootsteps, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")


def call_with_stack_room(function: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """`function(*args, **kwargs)`, run at the start of ~70 KiB of fresh frame stack (see ReportingTask)."""
    return function(*args, **kwargs)


# CPython 3.11 and 3.12 keep Python frames in 16 KiB chunks and unmap a chunk as soon as the
# frame that opened it returns (python/cpython#142183; later 3.13 and 3.14 releases cache one
# chunk). A loop that calls a function just across a chunk's end then pays an mmap, a page
# fault and a munmap on every call. Where the ends fall depends on how deep the task starts: a
# prefork pool process runs it ~35 frames down (click, billiard, Celery's tracer), and there
# rendering the throughput benchmark's table crossed one on every cell: ~6,500 page faults and
# ~40 ms of kernel time per run, none in one plain process. Declaring a large stack for this
# one frame makes CPython open a chunk for it (it fits in no 16 KiB one) of 128 KiB, ending
# ~70 KiB below it: a task's whole call tree fits in that one chunk whatever depth it starts
# at. The room is reserved address space; only the pages the frames use are touched.
# 7,300 words (57 KiB) and the 1,000 CPython adds to a new chunk's size just pass 64 KiB.
_STACK_ROOM_WORDS = 7300
call_with_stack_room.__code__ = call_with_stack_room.__code__.replace(co_stacksize=_STACK_ROOM_WORDS)


class ReportingTask(Task):
    """Every task of this app: run through call_with_stack_room."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return call_with_stack_room(super().__call__, args, kwargs)


app = Celery("project", task_cls=ReportingTask)
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
    """A worker loads what runs use before forking its pool (its children share it); beat does not.

    The rendering stack, and the URLconf: a file too large to attach is linked by its address in
    the admin, and the first `reverse` imports every URL's module (the admin, the API), about
    0.4 s that would otherwise fall on a pool process's first such run.
    """
    from django.urls import reverse

    from reporting.pipeline.render import load_libraries

    load_libraries()
    reverse("admin:index")
