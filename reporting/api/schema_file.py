"""The OpenAPI schema as the repository keeps it (docs/openapi.json): stable, indented JSON text."""

from __future__ import annotations

import json

from ninja import NinjaAPI

PATH_PREFIX = "/api/v1/"  # where the project mounts it (an installing project may mount it elsewhere)


def schema_text(api: NinjaAPI) -> str:
    schema = api.get_openapi_schema(path_prefix=PATH_PREFIX)
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
