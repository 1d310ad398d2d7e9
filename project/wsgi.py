"""WSGI entry point for gunicorn and Django's runserver."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()

from reporting.pipeline.render import load_libraries  # noqa: E402  (after Django is set up)

load_libraries()  # at start, as before, not at the first preview (beat alone goes without them)
