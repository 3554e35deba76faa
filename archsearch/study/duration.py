"""Time budgets as seconds: 3600, "90m", "1h30m", "2h", "45s"."""

from __future__ import annotations

import re
from typing import Any

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """3600, "90m", "1h30m", "2h", "45s" → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected seconds or a duration such as 2h or 90m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = _DURATION_RE.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"expected seconds or a duration such as 2h or 90m, got {value!r}")
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not seconds > 0:
        raise ValueError(f"a time budget must be positive, got {value!r}")
    return seconds
