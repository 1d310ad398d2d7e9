"""The Django admin, a module per area: definitions, reports, the archive, the system's own tasks."""

from reporting.admin import archive, definitions, reports, system  # noqa: F401  (each registers its models)
