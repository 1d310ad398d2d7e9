from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from reporting.services import two_factor


class Command(BaseCommand):
    help = (
        "Enrol a user's authenticator app for two-factor login (REPORTING_REQUIRE_2FA): prints the "
        "provisioning URI to turn into a QR code or type into the app."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--replace", action="store_true", help="Replace the user's existing authenticator.")

    def handle(self, *args, username: str, replace: bool, **options):
        try:
            device = two_factor.enrol_totp(username=username, replace=replace)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(f"Authenticator enrolled for {username}. Add it to their app with this URI")
        self.stdout.write("(as a QR code, e.g. `qrencode -t ansiutf8 'URI'`, or typed in):")
        self.stdout.write(device.config_url)
