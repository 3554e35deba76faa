"""What loading a space yields: its candidates, the infeasible combinations and the sampling tree."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archsearch.arch.fit import Fit
from archsearch.arch.spec import ArchSpec
from archsearch.space.schema import Budget, FitConfig, SpaceConfig


@dataclass(frozen=True)
class Candidate:
    """One point of a space: its spec, exact counts and the suggest-parameters that select it."""

    spec: ArchSpec
    family: str
    depth: int
    budget: str
    params: int
    macs: int
    on_budget: bool
    path_length_mean: float
    fitted: dict[str, Any] = field(default_factory=dict)
    trial_params: dict[str, Any] = field(default_factory=dict)
    source: str = "axes"
    axes: dict[str, Any] = field(default_factory=dict)
    nominal: ArchSpec | None = None  # the spec before fitting (its axes at nominal widths/depth)
    fit: FitConfig | None = None  # how it was fitted (None: taken as is)
    fit_ranges: dict[str, list[int]] = field(default_factory=dict)
    groups: tuple[str, ...] = ()  # labels for declared questions (the space's `group:`)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def branches(self) -> int:
        return self.spec.k

    @property
    def width(self) -> int:
        return self.spec.widths[0]

    def user_attrs(self) -> dict[str, Any]:
        """The Optuna user attributes of docs/contracts.md that a sampled trial stores."""
        return {"name": self.name, "spec": self.spec.to_json(), "family": self.family, "depth": self.depth,
                "branches": self.branches, "width": self.width, "params": self.params, "macs": self.macs,
                "budget": self.budget, "path_length_mean": self.path_length_mean, "fitted": dict(self.fitted),
                "on_budget": self.on_budget, **({"groups": list(self.groups)} if self.groups else {})}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "depth": self.depth, "branches": self.branches,
                "width": self.width, "params": self.params, "macs": self.macs, "budget": self.budget,
                "on_budget": self.on_budget, "path_length_mean": self.path_length_mean,
                "fitted": dict(self.fitted), "trial_params": dict(self.trial_params), "source": self.source,
                "spec": self.spec.to_dict()}


@dataclass
class Infeasible:
    """An axis combination no fit puts on its budget, with the closest count achievable."""

    where: str
    what: str
    budget: Budget
    closest: Fit | None
    reason: str = ""


@dataclass
class Node:
    """One decision of the sampling tree: a choice per value, leading to a node or a point index."""

    base: str = ""
    choices: dict[Any, Any] = field(default_factory=dict)  # value -> Node | int (point index)
    prefix: tuple[tuple[str, Any], ...] = ()
    param: str | None = None
    int_range: tuple[int, int, int] | None = None


@dataclass
class SearchSpace:
    """A loaded, validated and fully enumerated search space."""

    config: SpaceConfig
    path: str
    points: list[Candidate]
    infeasible: list[Infeasible]
    axes: dict[str, dict[str, list[Any]]]  # family -> axis -> values (sampled axes only)
    fit_axes: dict[str, list[Any]]
    root: Node = field(default_factory=Node)

    @property
    def name(self) -> str:
        return self.config.name or Path(self.path).stem

    @property
    def fingerprint(self) -> str:
        return config_fingerprint(self.config)

    def budget(self, label: str) -> Budget:
        return next(b for b in self.config.budgets if b.label == label)


def config_fingerprint(config: SpaceConfig) -> str:
    """Stable hash of what the space means (validated config, not comments or key order)."""
    meaning = config.model_dump(mode="json", exclude={"description"})  # the description is cosmetic
    for entry in [*meaning.get("candidates", []), *meaning.get("families", {}).values()]:
        if entry.get("group") is None:  # spaces without groups keep the fingerprints they were stored with
            entry.pop("group", None)
    text = json.dumps({"v": 1, "space": meaning}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
