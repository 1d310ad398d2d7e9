"""Shared fixtures: files under tmp_path, and a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from tests import factories


@pytest.fixture(autouse=True)
def _files_under_tmp_path(settings, tmp_path):
    """Archived files and `.eml` mail go to the test's own folder, never under var/."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.EMAIL_FILE_PATH = str(tmp_path / "mail")


class SmtpServer:
    """An aiosmtpd handler that keeps what it receives, and can refuse or slow down.

    `messages` holds each received message parsed as an `email.message.EmailMessage`;
    `recipients_of(message)` gives its envelope recipients. `refuse(address, code=…)`
    makes RCPT TO for that address fail; `delay` (seconds) slows down each DATA.
    """

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port(self.host)
        self.messages: list[EmailMessage] = []
        self.delay: float = 0.0
        self.connections = 0  # SMTP sessions that said EHLO/HELO
        self._recipients: dict[int, list[str]] = {}
        self._refusals: dict[str, str] = {}
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._running = False

    # --- control, from the test -----------------------------------------------------

    def start(self) -> None:
        self._controller.start()
        self._running = True

    def stop(self) -> None:
        """Stop listening (idempotent): later connections are refused."""
        if self._running:
            self._running = False
            self._controller.stop()

    def refuse(self, address: str, *, code: int = 550, message: str = "No such user") -> None:
        """Refuse RCPT TO `address` with `code` (5xx: permanent, 4xx: temporary)."""
        self._refusals[address.lower()] = f"{code} {message}"

    # --- what arrived -------------------------------------------------------------------

    def recipients_of(self, message: EmailMessage) -> list[str]:
        return self._recipients[id(message)]

    def messages_to(self, address: str) -> list[EmailMessage]:
        wanted = address.lower()
        return [m for m in self.messages if wanted in (r.lower() for r in self.recipients_of(m))]

    # --- aiosmtpd handler hooks ---------------------------------------------------------

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self._lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        with self._lock:
            self.connections += 1
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal = self._refusals.get(address.lower())
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self._recipients[id(message)] = list(envelope.rcpt_tos)
            self.messages.append(message)
        return "250 Message accepted for delivery"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1 and a free port, for this test only."""
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def use_smtp(settings, smtp_server):
    """Send Django's email through Django's SMTP backend to `smtp_server`; return the server."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = smtp_server.host
    settings.EMAIL_PORT = smtp_server.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 5
    return smtp_server


def pytest_report_header(config):
    from django.conf import settings

    database = settings.DATABASES["default"]
    return f"database: {database['ENGINE'].rsplit('.', 1)[-1]} {database.get('HOST') or ''} (tests use a test_ copy)"


@pytest.fixture
def source(httpserver):
    """A data source on a real HTTP server on loopback, serving `factories.POSITIONS`."""
    httpserver.expect_request("/api/positions").respond_with_json(factories.POSITIONS)
    return factories.data_source(httpserver.url_for("/api/"))


@pytest.fixture
def report(source):
    """A daily report of `source` for ann@ and bob@example.com."""
    return factories.report(source)


@pytest.fixture
def eager_celery():
    """Tasks queued by the admin (on commit) run in-process, in the test's own thread."""
    from project.celery import app as celery_app

    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def staff(django_user_model):
    """A superuser, kim."""
    return django_user_model.objects.create_superuser("kim", "kim@example.com", "pw")


@pytest.fixture
def staff_client(client, staff):
    """The test client, logged in as `staff`."""
    client.force_login(staff)
    return client


@pytest.fixture(autouse=True)
def _fresh_content_type_cache():
    """Forget cached content types before each test.

    A transactional test (a worker thread, the live server) ends with a flush that deletes
    and recreates the content types under new ids; the audit log writes a content type on
    every change, and a cached one from before the flush would point nowhere.
    """
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()


@pytest.fixture
def permission_groups():
    """The groups of migration 0006, made again when a transactional test before this one flushed them."""
    import importlib

    from django.contrib.auth.models import Group
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    migration = importlib.import_module("reporting.migrations.0006_permission_groups")
    if Group.objects.filter(name__in=migration.GROUPS).count() < len(migration.GROUPS):
        loader = MigrationExecutor(connection).loader
        migration.install_groups(loader.project_state(("reporting", "0006_permission_groups")).apps, None)
        # And the permissions later migrations gave the groups.
        destinations = importlib.import_module("reporting.migrations.0016_destinations")
        destinations.grant_destination_permissions(loader.project_state(("reporting", "0016_destinations")).apps, None)


STATEMENT_TEMPLATE = (
    '{% extends "reporting/email/base.html" %}{% block content %}'
    "<p>Dear {{ recipient.name }} ({{ recipient.client_id }})</p>"
    '<p>Total {% firstof totals.market_value "0" %} over {{ row_count }} positions</p>'
    '{% include "reporting/email/_table.html" %}{% endblock %}'
)


def add_templates(settings, folder, templates: dict[str, str]) -> None:
    """Report templates in `folder`, found before the project's own (which stay: the email layout)."""
    for name, text in templates.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    settings.TEMPLATES = [{**engine, "DIRS": [folder, *engine.get("DIRS", [])]} for engine in settings.TEMPLATES]


@pytest.fixture
def statement_template(settings, tmp_path):
    add_templates(settings, tmp_path / "templates", {"reports/statement.html": STATEMENT_TEMPLATE})
    return "reports/statement.html"
