"""The Django admin, a module per area: definitions, reports, the archive."""

from reporting.admin import archive, definitions, reports  # noqa: F401  (each registers its models)
