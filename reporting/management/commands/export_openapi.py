"""Write the REST API's OpenAPI schema (as served at api/v1/openapi.json) to a file, for the repository.

manage.py export_openapi            writes docs/openapi.json
manage.py export_openapi --stdout   prints it
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand

from reporting.api.app import api
from reporting.api.schema_file import schema_text

DEFAULT_PATH = Path("docs") / "openapi.json"


class Command(BaseCommand):
    help = "Write the REST API's OpenAPI schema to docs/openapi.json (or another file)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--output", default=str(DEFAULT_PATH), help="Where to write it.")
        parser.add_argument("--stdout", action="store_true", help="Print it instead.")

    def handle(self, *args: Any, output: str, stdout: bool, **options: Any) -> None:
        text = schema_text(api)
        if stdout:
            self.stdout.write(text, ending="")
            return
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
        self.stdout.write(f"Wrote {output}.")
