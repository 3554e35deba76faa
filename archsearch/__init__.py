"""archsearch: equal-budget architecture search over residual-network design spaces."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ArchSpec", "parse_name", "build", "count"]

from archsearch.arch.spec import ArchSpec, parse_name


def build(spec_or_name: Any, num_classes: int | None = None, strategy: str = "auto") -> Any:
    """Build a network from a spec or a name (imports torch lazily; see `archsearch.nn.build.build`)."""
    from archsearch.nn.build import build as _build  # lazy: `import archsearch` must not load torch

    return _build(spec_or_name, num_classes=num_classes, strategy=strategy)


def count(spec_or_name: Any, num_classes: int | None = 10) -> dict[str, Any]:
    """params, fvcore MACs, depth, units, path statistics (see `archsearch.nn.complexity.count`)."""
    from archsearch.nn.complexity import count as _count  # lazy: `import archsearch` must not load torch

    return _count(spec_or_name, num_classes=num_classes)
