from django.conf import settings
from django.core.management.base import BaseCommand

from reporting import conf
from reporting.demo.setup import install_demo


def where_emails_go() -> str:
    """Where this installation's emails go, in words, as its settings say."""
    backend = settings.EMAIL_BACKEND
    if backend == "reporting.mail.EmlFileBackend":
        return f"sent emails are written to {settings.EMAIL_FILE_PATH}/*.eml"
    if backend == "django.core.mail.backends.smtp.EmailBackend":
        return f"emails are sent through the SMTP server {settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
    if backend.startswith("anymail."):
        return f"emails are sent through {backend.split('.')[2].capitalize()} (django-anymail)"
    return f"emails go through {backend}"


class Command(BaseCommand):
    help = "Create the demo data source, scheduled demo reports (two per client) and a staff user; print the login."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default=conf.REPORTING["SITE_URL"].rstrip("/") + "/demo-api/")
        parser.add_argument("--password", help="Password for the demo user (default: a new random one).")

    def handle(self, *args, base_url: str, password: str | None, **options):
        demo = install_demo(base_url=base_url, password=password)
        site = conf.REPORTING["SITE_URL"].rstrip("/")
        banner = [
            "",
            "=" * 64,
            f"  Scheduled Reports demo: {site}/admin/",
            f"  user: {demo.username}    password: {demo.password}",
            f"  reports: {', '.join(report.name for report in demo.reports)}",
            f"  each client their own: {', '.join(report.name for report in demo.client_reports)}",
            f"  {where_emails_go()}",
            "=" * 64,
            "",
        ]
        self.stdout.write("\n".join(banner))
