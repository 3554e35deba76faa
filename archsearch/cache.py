"""Where decoded datasets and measured choices are cached: one answer for every module."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$ARCHSEARCH_CACHE` (an empty value counts as unset) or ~/.cache/archsearch, with `~` expanded."""
    return Path(os.environ.get("ARCHSEARCH_CACHE") or "~/.cache/archsearch").expanduser()
