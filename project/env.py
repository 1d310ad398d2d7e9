"""Small strict readers for environment variables: a bad value fails loudly at start-up."""

import os
import re

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    """Return the variable's value, or `default` when it is unset or empty."""
    return os.environ.get(name) or default


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of {sorted(_TRUE | _FALSE)}, not {raw!r}.")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated variable as a list of non-empty, stripped items."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def env_names(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated list of environment variable names; a malformed one fails."""
    names = env_list(name, default)
    for item in names:
        if not _ENV_NAME.match(item):
            raise ImproperlyConfigured(
                f"{name} must list environment variable names (capital letters, digits, underscores), not {item!r}."
            )
    return names


def env_secret_prefix(name: str, default: str) -> str:
    """Return the prefix of the variables that may hold data-source secrets.

    It must be at least 4 characters of a variable name: an empty or one-letter prefix would
    let a data source name almost any variable, Django's SECRET_KEY included.
    """
    prefix = env_str(name, default).strip()
    if len(prefix) < 4 or not _ENV_NAME.match(prefix):
        raise ImproperlyConfigured(
            f"{name} must be the start of an environment variable name, at least 4 capital letters, digits "
            f"or underscores (such as REPORTING_SECRET_), not {prefix!r}."
        )
    return prefix


_DOMAIN = re.compile(r"^\.?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def env_domains(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated list of email domains, lower-cased; ".example.com" is it and its subdomains."""
    domains = [item.lower() for item in env_list(name, default)]
    for item in domains:
        if not _DOMAIN.match(item):
            raise ImproperlyConfigured(
                f"{name} must list email domains (example.com, or .example.com for it and its subdomains), "
                f"not {item!r}."
            )
    return domains


def env_choice(name: str, default: str, choices: list[str]) -> str:
    """Return the variable's value (lower-cased), which must be one of `choices`; `default` when unset or empty."""
    value = env_str(name, default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {choices}, not {value!r}.")
    return value
