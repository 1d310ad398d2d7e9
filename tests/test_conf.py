"""The app's settings have defaults: a project may set none of them, or only those it changes."""

from pathlib import Path

import reporting
from reporting import conf
from reporting.models import report_template_choices

APP_TEMPLATES = Path(reporting.__file__).parent / "templates"


def test_a_project_without_the_reporting_setting_gets_every_default(settings):
    del settings.REPORTING
    settings.DEBUG = False
    settings.DEFAULT_FROM_EMAIL = "Reports <reports@Example.com>"

    assert conf.REPORTING["SITE_URL"] == "http://127.0.0.1:8000"
    assert conf.REPORTING["RUN_LEASE_SECONDS"] == 120
    assert conf.REPORTING["ALLOWED_SOURCE_HOSTS"] == []  # nothing allowed with DEBUG off
    assert conf.REPORTING["SENDER_DOMAINS"] == ["example.com"]
    assert conf.REPORTING["INTERNAL_DOMAINS"] == ["example.com"]
    assert conf.REPORTING.get("NO_SUCH_SETTING", "fallback") == "fallback"
    assert all(conf.REPORTING[key] is not None for key in conf.DEFAULTS)


def test_a_partial_reporting_setting_keeps_the_defaults_of_the_rest(settings):
    settings.REPORTING = {"SITE_URL": "https://reports.example.com", "ALLOWED_SOURCE_HOSTS": [".example.com"]}
    settings.DEBUG = True

    assert conf.REPORTING["SITE_URL"] == "https://reports.example.com"
    assert conf.REPORTING["ALLOWED_SOURCE_HOSTS"] == [".example.com"]
    assert conf.REPORTING["ALLOWED_DESTINATION_HOSTS"] == ["127.0.0.1", "localhost"]  # loopback with DEBUG on
    assert conf.REPORTING["FETCH_MAX_RETRIES"] == 5


def test_settings_of_their_own_name_have_defaults_too(settings):
    del settings.REPORTING_REQUIRE_2FA
    del settings.METRICS_TOKEN

    assert conf.setting("REPORTING_REQUIRE_2FA") is False
    assert conf.setting("METRICS_TOKEN") == ""


def test_without_a_reports_engine_templates_are_found_in_the_first_engines_folders_then_the_apps(settings, tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "our_own.html").write_text('{% extends "reporting/email/base.html" %}')
    settings.TEMPLATES = [
        {"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [tmp_path], "APP_DIRS": True}
    ]

    folders = conf.template_dirs()

    assert folders[0] == tmp_path and APP_TEMPLATES in folders
    choices = dict(report_template_choices())
    assert "reports/our_own.html" in choices and "reports/portfolio_summary.html" in choices
