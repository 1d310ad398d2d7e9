from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from reporting.models import ReportRun
from reporting.services import archive


class Command(BaseCommand):
    help = "Send an archived run's email again (nothing is fetched again), in this process."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int)
        parser.add_argument(
            "--to", dest="addresses", action="append", metavar="ADDRESS", help="Send only to this address (repeatable)."
        )

    def handle(self, *args, run_id: int, addresses: list[str] | None, **options):
        if not ReportRun.objects.filter(pk=run_id).exists():
            raise CommandError(f"No run #{run_id}.")
        try:
            deliveries = archive.resend_here(run_id=run_id, addresses=addresses)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        for delivery in deliveries:
            self.stdout.write(f"{delivery.address}: {delivery.get_status_display()} {delivery.error}".rstrip())
        if not any(delivery.status == delivery.Status.SENT for delivery in deliveries):
            raise CommandError("No address got the email.")
