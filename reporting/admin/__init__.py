"""The Django admin, a module per area: definitions, reports, the archive and its
recipient reports, the system's own tasks."""

from reporting.admin import archive, definitions, destinations, parts, reports, system, tokens  # noqa: F401  (each registers its models)
