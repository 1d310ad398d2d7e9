from django.conf import settings
from django.core.management.base import BaseCommand

from reporting.demo.setup import install_demo


class Command(BaseCommand):
    help = "Create the demo data source, scheduled demo reports (two per client) and a staff user; print the login."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default=settings.REPORTING["SITE_URL"].rstrip("/") + "/demo-api/")
        parser.add_argument("--password", help="Password for the demo user (default: a new random one).")

    def handle(self, *args, base_url: str, password: str | None, **options):
        demo = install_demo(base_url=base_url, password=password)
        site = settings.REPORTING["SITE_URL"].rstrip("/")
        banner = [
            "",
            "=" * 64,
            f"  Scheduled Reports demo: {site}/admin/",
            f"  user: {demo.username}    password: {demo.password}",
            f"  reports: {', '.join(report.name for report in demo.reports)}",
            f"  each client their own: {', '.join(report.name for report in demo.client_reports)}",
            f"  sent emails are written to {settings.EMAIL_FILE_PATH}/*.eml",
            "=" * 64,
            "",
        ]
        self.stdout.write("\n".join(banner))
