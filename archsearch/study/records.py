"""Trial records: what a stored trial says, which trials count, and which architecture is best.

The one place outside the study lifecycle and orchestration that reads Optuna's trial objects
(`record_of`, `load_records`); everything downstream works on plain `TrialRecord`s. One definition
serves the run's summary line, the report and `export --top`:

- a trial **counts** (`TrialRecord.usable`) when it is COMPLETE, at full fidelity and has a finite
  value. Full fidelity is the user attribute `full_fidelity`, or, for a trial without it, epochs
  reached >= max_epochs;
- trials with the same canonical name are seeds of one architecture; **the best architecture** is
  the one of lowest mean error over its counting seeds, shown with its number of seeds
  (`rank_architectures`, `best_architecture`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

INTERRUPTED = "interrupted"  # fail_reason of a trial whose driver died; a resume continues it
COUNTED_STATES = ("COMPLETE", "PRUNED")  # states that count toward a study's n_trials
RETRY_PREFIX = "retry of trial #"  # `fallback` of the trial retrying a native crash (the crashed one: "native crash")


@dataclass(frozen=True)
class TrialRecord:
    """One Optuna trial as the analysis needs it (see docs/contracts.md, "Optuna trial records")."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None  # final validation error in percent (the first objective)
    name: str
    family: str
    depth: int | None = None
    branches: int | None = None
    width: int | None = None
    params: float | None = None
    macs: float | None = None
    seed: int | None = None
    budget: str = "?"
    on_budget: bool = True
    groups: tuple[str, ...] = ()  # the space's `group:` labels (declared questions select by them)
    epochs: int | None = None
    max_epochs: int | None = None
    full_fidelity: bool = False
    latency_b1_ms: float | None = None
    path_length_mean: float | None = None
    test_error: float | None = None
    precision: str | None = None  # fp32 | bf16 | fp16: what the trainer ran in on its worker
    compiled: bool | None = None  # its training step ran through torch.compile (None: not recorded)
    fail_reason: str | None = None  # why a FAIL trial failed ("interrupted", a worker's native crash, ...)
    train_seconds: float | None = None  # Σ seconds of its training epochs (per-epoch time in curve tables)
    fallback: str | None = None  # "native crash: ...; retried with NCHW + loop" on a crashed trial and its retry
    intermediate: dict[int, float] = field(default_factory=dict, hash=False)

    @property
    def usable(self) -> bool:
        """The one definition of a trial that counts: COMPLETE, full fidelity, finite value.

        Only such trials feed the analysis, the run's "best" line and `export --top`.
        """
        return (
            self.state == "COMPLETE"
            and self.full_fidelity
            and self.value is not None
            and math.isfinite(self.value)
        )


def intermediate_values(trial: Any) -> dict[int, float]:
    """Per-epoch validation errors: Optuna's intermediate values, or the user attr in multi-objective.

    Multi-objective studies keep them in the user attribute `intermediate_values` ({epoch: error})
    because Optuna forbids `trial.report` there.
    """
    values = {int(k): float(v) for k, v in (trial.intermediate_values or {}).items()}
    if not values and isinstance(trial.user_attrs.get("intermediate_values"), dict):
        values = {int(k): float(v) for k, v in trial.user_attrs["intermediate_values"].items()}
    return values


def is_full_fidelity(attrs: dict[str, Any]) -> bool:
    """`full_fidelity`, or (when a trial lacks it) epochs reached >= max_epochs."""
    if attrs.get("full_fidelity") is not None:
        return bool(attrs["full_fidelity"])
    epochs, max_epochs = _int(attrs.get("epochs")), _int(attrs.get("max_epochs"))
    return epochs is not None and max_epochs is not None and epochs >= max_epochs


def record_of(trial: Any) -> TrialRecord:
    """One Optuna trial (frozen or live) as a record."""
    ua = trial.user_attrs
    values = trial.values
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        value=float(values[0]) if values else None,
        name=str(ua.get("name", f"trial-{trial.number}")),
        family=str(ua.get("family", "?")),
        depth=_int(ua.get("depth")),
        branches=_int(ua.get("branches")),
        width=_int(ua.get("width")),
        params=_float(ua.get("params")),
        macs=_float(ua.get("macs")),
        seed=_int(ua.get("seed")),
        budget=str(ua.get("budget", "?")),
        on_budget=bool(ua.get("on_budget", True)),
        groups=tuple(ua.get("groups") or ()),
        epochs=_int(ua.get("epochs")),
        max_epochs=_int(ua.get("max_epochs")),
        full_fidelity=is_full_fidelity(ua),
        latency_b1_ms=_float(ua.get("latency_b1_ms")),
        path_length_mean=_float(ua.get("path_length_mean")),
        test_error=_float(ua.get("test_error")),
        precision=None if ua.get("precision") is None else str(ua["precision"]),
        compiled=None if ua.get("compiled") is None else bool(ua["compiled"]),
        fail_reason=None if ua.get("fail_reason") is None else str(ua["fail_reason"]),
        fallback=None if ua.get("fallback") is None else str(ua["fallback"]),
        train_seconds=_float(ua.get("train_seconds")),
        intermediate=intermediate_values(trial),
    )


def load_records(study: Any) -> list[TrialRecord]:
    """Every trial of an Optuna study as a record, in trial order."""
    return [record_of(t) for t in study.get_trials(deepcopy=False)]


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Architecture:
    """One architecture (canonical name): its counting trials, best first; its error is their mean."""

    name: str
    records: tuple[TrialRecord, ...]

    @property
    def errors(self) -> list[float]:
        return [float(r.value) for r in self.records]  # counting trials always have a value

    @property
    def mean(self) -> float:
        return statistics.fmean(self.errors)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.errors) if len(self.errors) > 1 else None

    @property
    def seeds(self) -> int:
        """How many counting trials (seeds) the mean is over."""
        return len(self.records)

    @property
    def best(self) -> TrialRecord:
        """Its counting trial of lowest error (ties: lower trial number)."""
        return self.records[0]


def rank_architectures(records: Iterable[TrialRecord]) -> list[Architecture]:
    """Architectures of counting trials, lowest seed mean first.

    Seeds are grouped by canonical name; ties go to the lower best error, then the name. Each
    architecture's trials are sorted best first (ties: lower trial number).
    """
    groups: dict[str, list[TrialRecord]] = {}
    for r in records:
        if r.usable:
            groups.setdefault(r.name, []).append(r)
    out = [Architecture(name, tuple(sorted(rs, key=lambda r: (r.value, r.number)))) for name, rs in groups.items()]
    out.sort(key=lambda a: (a.mean, a.errors[0], a.name))
    return out


def best_architecture(records: Iterable[TrialRecord]) -> Architecture | None:
    """The architecture of lowest seed mean over counting trials, or None when no trial counts."""
    ranked = rank_architectures(records)
    return ranked[0] if ranked else None
