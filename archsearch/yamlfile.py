"""Reading a YAML file the one way every config reader needs: errors as one-line ConfigErrors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from archsearch.errors import ConfigError


def load_yaml(path: str | Path) -> Any:
    """The parsed file; unreadable or invalid YAML → ConfigError "FILE: line N: invalid YAML: reason"."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise ConfigError(f"{path}: {where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
