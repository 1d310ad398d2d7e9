from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from reporting.services import reports_as_code


class Command(BaseCommand):
    help = (
        "Write the report definitions (data sources, recipients, lists, destinations, reports and their schedules) "
        "as YAML or JSON, in a stable order, secrets only as the names of their variables."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", help="The file to write (default: standard output).")
        parser.add_argument(
            "--format", choices=reports_as_code.FORMATS, help="yaml or json (default: by the file's extension, yaml)."
        )
        parser.add_argument(
            "--report", dest="slugs", action="append", metavar="SLUG", help="Only this report (repeatable)."
        )

    def handle(self, *args, output: str | None, format: str | None, slugs: list[str] | None, **options):
        file_format = reports_as_code.format_for(output or "", format)
        try:
            text = reports_as_code.export_text(file_format=file_format, report_slugs=slugs)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote {output}.")
        else:
            self.stdout.write(text, ending="")
