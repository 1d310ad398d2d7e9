"""The app as another project gets it: a wheel, installed into a fresh virtualenv beside a new Django project.

The wheel is built from a copy of the package's files (pyproject.toml, README, LICENSE, reporting/), so what
runs is what ships: templates and static files included. The fresh virtualenv reuses this interpreter's
installed dependencies through a .pth file (nothing is downloaded); only the wheel is installed into it.
The project defines none of the REPORTING_* settings.
"""

import email
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests import factories

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parent.parent

SETTINGS = """
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "only-for-this-test"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
INSTALLED_APPS = [
    "reporting",  # first: its templates override the admin's history page and django-celery-beat's form
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "auditlog",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "static/"
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = BASE_DIR / "mail"
DEFAULT_FROM_EMAIL = "reports@example.com"
"""

URLS = """
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("reports/", include("reporting.urls")),
]
"""

MANAGE = """
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""

DEFINE_REPORT = """
from reporting.models import DataSource, Recipient, Report

source = DataSource.objects.create(name="Positions API", base_url={base_url!r})
report = Report.objects.create(
    name="Portfolio", slug="portfolio", data_source=source, path="positions", records_path="data.positions",
    period_kind=Report.PeriodKind.DAILY, timezone="Europe/London", template="reports/table.html",
    subject_template="Portfolio — {{{{ period.label }}}}",
)
report.recipients.add(Recipient.objects.create(email="ann@example.com"))
"""

# The admin's pages of the app, from the wheel's templates; its static files, found by staticfiles.
OPEN_THE_ADMIN = """
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.test import Client

client = Client(SERVER_NAME="localhost")
client.force_login(User.objects.create_superuser("kim", "kim@example.com", "pw"))
for page in ["/admin/reporting/report/", "/admin/reporting/report/1/change/", "/admin/reporting/reportrun/1/change/"]:
    print(page, client.get(page).status_code)
print("static", finders.find("reporting/run_progress.js"))
"""


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the package's files: nothing else of the checkout reaches it."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(CHECKOUT / name, source / name)
    shutil.copytree(CHECKOUT / "reporting", source / "reporting", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*command, "--wheel-dir", str(dist), str(source)], check=True, cwd=tmp_path, timeout=120)
    (wheel,) = dist.glob("django_scheduled_reports-*.whl")
    return wheel


def fresh_virtualenv(tmp_path: Path, wheel: Path) -> Path:
    """A new virtualenv that sees this interpreter's dependencies (a .pth file) and has only the wheel installed."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "shared_dependencies.pth").write_text("\n".join(sorted(shared)) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*install, str(wheel)], check=True, cwd=tmp_path, timeout=120)
    return python


def new_project(tmp_path: Path) -> Path:
    """A minimal Django project that adds the app, with none of the REPORTING_* settings."""
    site = tmp_path / "site"
    (site / "mysite").mkdir(parents=True)
    (site / "mysite" / "__init__.py").write_text("")
    (site / "mysite" / "settings.py").write_text(SETTINGS)
    (site / "mysite" / "urls.py").write_text(URLS)
    (site / "manage.py").write_text(MANAGE)
    return site


def test_the_wheel_installs_beside_a_new_project_migrates_and_sends_a_report(tmp_path, httpserver):
    httpserver.expect_request("/api/positions").respond_with_json(factories.POSITIONS)
    python = fresh_virtualenv(tmp_path, build_wheel(tmp_path))
    site = new_project(tmp_path)
    # Only what a shell would have: not pytest's DJANGO_SETTINGS_MODULE, PYTHONPATH or the Makefile's REPORTING_*.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}

    def manage(*args: str) -> str:
        done = subprocess.run(
            [python, "manage.py", *args], cwd=site, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    where = manage("shell", "-c", "import reporting; print(reporting.__file__)").strip().splitlines()[-1]
    assert Path(where).is_relative_to(tmp_path / "venv"), where
    manage("check")
    manage("migrate", "--noinput")
    manage("shell", "-c", textwrap.dedent(DEFINE_REPORT.format(base_url=httpserver.url_for("/api/"))))

    output = manage("run_report", "portfolio", "--period-start", "2026-11-20")

    assert "Run #1 of Portfolio for 20 November 2026: Sent." in output, output
    (sent,) = (site / "mail").glob("*.log")
    message = email.message_from_string(sent.read_text())
    assert message["To"] == "ann@example.com"
    assert "20 November 2026" in str(email.header.make_header(email.header.decode_header(message["Subject"])))
    parts = {part.get_content_type(): part.get_payload(decode=True) for part in message.walk()}
    html = parts["text/html"].decode()
    assert "Globex 4.25% 2032" in html and "Initech ETF" in html
    assert "49,875" in html or "49875" in html
    pages = manage("shell", "-c", OPEN_THE_ADMIN)
    assert "/admin/reporting/report/1/change/ 200" in pages and "/admin/reporting/reportrun/1/change/ 200" in pages
    assert f"static {tmp_path / 'venv'}" in pages, pages
