"""Beat imports nothing of the rendering stack: it only reads schedules and publishes messages.

A fresh Python does what `celery -A project beat` does up to its first tick (the app and its
settings, django.setup() with every app's ready(), the task modules, the scheduler built and
beat_init sent) and reports which heavy libraries got imported, and through which modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Charts, spreadsheets, PDF, locales, JSON schemas, imports/exports: the workers' business.
RENDERING_STACK = ("matplotlib", "numpy", "pandas", "PIL", "openpyxl", "babel", "jsonschema", "tablib", "weasyprint")

# Run in the child: a finder that records, for the first import of each heavy package, the
# modules (and the project's functions) being executed at that moment, innermost first.
BEAT_STARTUP = """
import json, os, sys

HEAVY = set(sys.argv[1].split(","))
chains = {}
IMPORT_MACHINERY = {"_call_with_frames_removed", "_find_and_load", "_find_and_load_unlocked",
                    "_load_unlocked", "exec_module", "_gcd_import", "import_module", "_handle_fromlist"}


class RecordChain:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in chains:
            chain, frame = [name], sys._getframe(1)
            while frame is not None:
                module, function = frame.f_globals.get("__name__", "?"), frame.f_code.co_name
                if function == "<module>":
                    step = module
                elif function not in IMPORT_MACHINERY and module.startswith(("reporting", "project", "django.")):
                    step = f"{module}.{function}()"
                else:
                    step = None
                if step and step != chain[-1]:
                    chain.append(step)
                frame = frame.f_back
            chains[top] = chain
        return None


sys.meta_path.insert(0, RecordChain())
os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"

from celery import signals
from celery.apps.beat import Beat

from project.celery import app

beat = Beat(app=app, quiet=True)
beat.init_loader()  # django.setup() and the task modules, as celery beat does
service = beat.Service(app=app, max_interval=beat.max_interval, scheduler_cls=beat.scheduler_cls,
                       schedule_filename=beat.schedule)
scheduler = service.scheduler  # the scheduler class imported and built
signals.beat_init.send(sender=service)
loaded = {top: chains.get(top, [top]) for top in sorted(HEAVY) if top in sys.modules}
print(json.dumps({"scheduler": type(scheduler).__module__ + "." + type(scheduler).__name__, "loaded": loaded}))
"""


def beat_startup_imports() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", BEAT_STARTUP, ",".join(RENDERING_STACK)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_it_starts_beat_without_importing_the_rendering_stack():
    startup = beat_startup_imports()

    assert startup["scheduler"] == "reporting.beat.ReportScheduler"
    chains = "\n".join(" ← ".join(chain) for chain in startup["loaded"].values())
    assert startup["loaded"] == {}, f"beat imported the rendering stack:\n{chains}"
