"""Trial records: one Optuna trial as the analysis reads it, and the loader that builds them from a study.

Everything else in `archsearch.analysis` is pure computation on plain `TrialRecord`s, so the same
code runs on an Optuna study, on a synthetic population in a test, or on records from elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


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
    epochs: int | None = None
    max_epochs: int | None = None
    full_fidelity: bool = False
    latency_b1_ms: float | None = None
    path_length_mean: float | None = None
    test_error: float | None = None
    precision: str | None = None  # fp32 | bf16 | fp16: what the trainer ran in on its worker
    intermediate: dict[int, float] = field(default_factory=dict, hash=False)

    @property
    def usable(self) -> bool:
        """True when this trial may feed an answer: COMPLETE, full fidelity, finite value."""
        return (
            self.state == "COMPLETE"
            and self.full_fidelity
            and self.value is not None
            and math.isfinite(self.value)
        )


def load_records(study: Any) -> list[TrialRecord]:
    """Read an Optuna study's trials into records; the only function that knows Optuna's types.

    Multi-objective studies keep per-epoch values in the user attribute `intermediate_values`
    ({epoch: error}) because Optuna forbids `trial.report` there. A trial without the
    `full_fidelity` attribute counts as full fidelity when `epochs >= max_epochs`.
    """
    records = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        inter = {int(k): float(v) for k, v in (t.intermediate_values or {}).items()}
        if not inter and isinstance(ua.get("intermediate_values"), dict):
            inter = {int(k): float(v) for k, v in ua["intermediate_values"].items()}
        epochs, max_epochs = _int(ua.get("epochs")), _int(ua.get("max_epochs"))
        full = ua.get("full_fidelity")
        if full is None:
            full = epochs is not None and max_epochs is not None and epochs >= max_epochs
        values = t.values
        records.append(
            TrialRecord(
                number=t.number,
                state=t.state.name,
                value=float(values[0]) if values else None,
                name=str(ua.get("name", f"trial-{t.number}")),
                family=str(ua.get("family", "?")),
                depth=_int(ua.get("depth")),
                branches=_int(ua.get("branches")),
                width=_int(ua.get("width")),
                params=_float(ua.get("params")),
                macs=_float(ua.get("macs")),
                seed=_int(ua.get("seed")),
                budget=str(ua.get("budget", "?")),
                epochs=epochs,
                max_epochs=max_epochs,
                full_fidelity=bool(full),
                latency_b1_ms=_float(ua.get("latency_b1_ms")),
                path_length_mean=_float(ua.get("path_length_mean")),
                test_error=_float(ua.get("test_error")),
                precision=None if ua.get("precision") is None else str(ua["precision"]),
                intermediate=inter,
            )
        )
    return records


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)
