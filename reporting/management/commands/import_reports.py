from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from reporting.services import reports_as_code


class Command(BaseCommand):
    help = (
        "Create or change the report definitions a YAML or JSON file holds (as export_reports writes it), "
        "all in one transaction; --dry-run prints what would change and writes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--format", choices=reports_as_code.FORMATS, help="default: by the file's extension")
        parser.add_argument("--dry-run", action="store_true", help="Print what would change; write nothing.")

    def handle(self, *args, file: str, format: str | None, dry_run: bool, **options):
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from exc
        try:
            result = reports_as_code.import_text(
                text=text, file_format=reports_as_code.format_for(file, format), dry_run=dry_run
            )
        except reports_as_code.ImportRefused as exc:
            raise CommandError(f"{file} was not imported, nothing was written:\n" + "\n".join(exc.problems)) from exc
        self.stdout.write("\n".join(result.in_words()))
