from datetime import date

from django.core.management.base import BaseCommand, CommandError

from reporting.models import Report
from reporting.services import runs


class Command(BaseCommand):
    help = "Run a report now, in this process: fetch, render, send and archive it."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="The report's slug.")
        parser.add_argument(
            "--period-start",
            type=date.fromisoformat,
            help="Any day in the period to report on (YYYY-MM-DD); default: the last complete period.",
        )

    def handle(self, *args, slug: str, period_start: date | None, **options):
        report = Report.objects.filter(slug=slug).first()
        if report is None:
            raise CommandError(f"No report with the slug {slug!r}.")
        run = runs.run_now_here(report_id=report.pk, period_day=period_start)
        self.stdout.write(f"Run #{run.pk} of {report.name} for {run.period_label}: {run.get_status_display()}.")
        for delivery in run.deliveries.all():
            self.stdout.write(f"  {delivery.to}: {delivery.get_status_display()} {delivery.error}".rstrip())
        if run.status == run.Status.FAILED:
            raise CommandError(run.error)
