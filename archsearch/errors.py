"""User-facing errors: each becomes one line on stderr and exit code 2 in the CLI."""


class ArchsearchError(Exception):
    """Bad input from the user (a name, a file, a key); the CLI prints it as one line, exit 2."""


class SpecError(ArchsearchError, ValueError):
    """An architecture name or spec that does not describe a valid network."""


class ConfigError(ArchsearchError, ValueError):
    """A search-space or study file that is invalid; the message names file, key and reason."""


_BOUNDS = {"greater_than_equal": ("ge", "≥"), "greater_than": ("gt", ">"), "less_than_equal": ("le", "≤"),
           "less_than": ("lt", "<")}


def bound_reason(err: dict) -> str | None:
    """"must be ≥ 1" for a pydantic bound error (its own text says "Input should be greater than or equal to 1")."""
    if err.get("type") not in _BOUNDS:
        return None
    bound, sign = _BOUNDS[err["type"]]
    return f"must be {sign} {err.get('ctx', {}).get(bound)}"
