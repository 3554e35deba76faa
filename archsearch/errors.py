"""User-facing errors: each becomes one line on stderr and exit code 2 in the CLI."""


class ArchsearchError(Exception):
    """Bad input from the user (a name, a file, a key); the CLI prints it as one line, exit 2."""


class SpecError(ArchsearchError, ValueError):
    """An architecture name or spec that does not describe a valid network."""


class ConfigError(ArchsearchError, ValueError):
    """A search-space or study file that is invalid; the message names file, key and reason."""
