from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from reporting import runs
from reporting.models import ReportRun


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
            deliveries = runs.queue_resend(run_id=run_id, addresses=addresses, requested_by_id=None)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        runs.send_resend(run_id=run_id, delivery_ids=[delivery.pk for delivery in deliveries])
        for delivery in deliveries:
            delivery.refresh_from_db()
            self.stdout.write(f"{delivery.address}: {delivery.get_status_display()} {delivery.error}".rstrip())
        if not any(delivery.status == delivery.Status.SENT for delivery in deliveries):
            raise CommandError("No address got the email.")
