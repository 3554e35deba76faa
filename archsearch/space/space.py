"""Search spaces: YAML -> every on-budget candidate, and Optuna define-by-run sampling over them.

A space (schema in `archsearch.space.schema`) names families with their axes, explicit candidates
and one or more budgets. Loading enumerates the full grid once and fits each point's free axes
exactly onto its budget (`archsearch.arch.fit`, counts from `archsearch.arch.cost`), so sampling only
ever yields candidates on the budget: nothing is sampled blindly and rejected.

Sampling is a walk down the decision tree budget -> family -> axes (or -> candidate). Each decision
is one `trial.suggest_*` with a readable name (`budget`, `family`, `multiresnet.depth`,
`multiresnet.k`, `candidate`). When the feasible choices of a decision depend on earlier ones
(possible with `infeasible: skip` or a `filter` budget) the name carries the earlier choices, e.g.
`multiresnet.k|depth=110`, because Optuna needs one distribution per parameter name.
`grid_params` gives, for every grid point, the dict that `study.enqueue_trial` needs for `sample` to
reproduce it (Optuna's GridSampler cannot express conditional axes).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archsearch.arch.spec import ArchSpec
from archsearch.errors import ConfigError
from archsearch.space.enumerate import SpaceBuilder
from archsearch.space.results import Candidate, Node, SearchSpace, config_fingerprint
from archsearch.space.schema import SpaceConfig
from archsearch.yamlfile import load_yaml


def load_space(path: str | Path) -> SearchSpace:
    """Read, validate and enumerate a space file; any problem is a one-line ConfigError FILE: KEY: reason."""
    return space_from_dict(load_yaml(path), source=str(path))


def space_from_dict(raw: Any, source: str = "<space>") -> SearchSpace:
    """Validate a parsed space (as `load_space` does for a file)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level: expected a mapping of keys (budgets, families, candidates)")
    try:
        config = SpaceConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[", "list[")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{source}: {loc or 'top level'}: {msg}") from None
    return SpaceBuilder(config, source).build()


def grid(space: SearchSpace) -> list[Candidate]:
    """Every feasible point of the space (the exhaustive baseline), in a stable order."""
    return list(space.points)


def grid_params(space: SearchSpace) -> list[dict[str, Any]]:
    """Per grid point, the params that make `sample` reproduce it when passed to `study.enqueue_trial`."""
    return [dict(c.trial_params) for c in space.points]


def sample_candidate(trial: Any, space: SearchSpace) -> Candidate:
    """Walk the decision tree with `trial.suggest_*` and return the chosen candidate (no attrs set)."""
    node: Any = space.root
    while isinstance(node, Node):
        values = list(node.choices)
        if node.param is None:
            value = values[0]
        elif node.int_range is not None:
            low, high, step = node.int_range
            value = trial.suggest_int(node.param, low, high, step=step)
        else:
            value = trial.suggest_categorical(node.param, values)
        if value not in node.choices:
            raise ConfigError(f"{space.path}: {node.param}: value {value!r} is not one of {values}")
        node = node.choices[value]
    return space.points[node]


def sample(trial: Any, space: SearchSpace) -> ArchSpec:
    """Sample an on-budget spec through `trial.suggest_*` and store its record as user attributes."""
    candidate = sample_candidate(trial, space)
    for key, value in candidate.user_attrs().items():
        trial.set_user_attr(key, value)
    return candidate.spec


def space_fingerprint(space: SearchSpace | SpaceConfig) -> str:
    """Stable hash of what the space means (validated config, not comments or key order)."""
    return config_fingerprint(space.config if isinstance(space, SearchSpace) else space)


class RandomTrial:
    """A minimal seeded stand-in for `optuna.Trial` (uniform choices), for the CLI and tests."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.params: dict[str, Any] = {}
        self.user_attrs: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.params[name] = self.rng.choice(list(choices))
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1) -> int:
        self.params[name] = self.rng.randrange(low, high + 1, step)
        return self.params[name]

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


def random_samples(space: SearchSpace, n: int, seed: int = 0) -> list[Candidate]:
    """n candidates drawn as a uniform random sampler would draw them (same seed, same draws)."""
    rng = random.Random(seed)
    return [sample_candidate(RandomTrial(rng), space) for _ in range(n)]
