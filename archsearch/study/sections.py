"""The nested sections of a study file (`asha:`, `resources:`), validated; `archsearch.study.config` uses them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AshaConfig(Strict):
    """ASHA on the `epoch` axis; `max_epochs` defaults to `train.epochs`.

    `rule: stop` is Ray's ASHAScheduler: a trial arriving at a rung below the rung's top 1/rf so far
    stops at once. `rule: promote` is ASHA as published (Li et al. 2020): a trial pauses at each rung
    (checkpointed) and a free slot resumes the best paused trial in its rung's top ⌊n/rf⌋, highest
    rung first, before it starts a new trial; trials never promoted end PRUNED when nothing is left.
    """

    max_epochs: int | None = Field(None, ge=1)
    grace_period: int | float = Field(1, gt=0)  # epochs, or a fraction (0, 1) of the epochs (0.125 of 200: 25)
    reduction_factor: float = Field(3, gt=1)
    rule: Literal["stop", "promote"] = "stop"

    @field_validator("grace_period")
    @classmethod
    def _grace(cls, v: int | float) -> int | float:
        if v >= 1 and v != int(v):
            raise ValueError(f"whole epochs, or a fraction below 1 of the epochs, got {v}")
        return int(v) if v >= 1 else v


class Resources(Strict):
    """Per trial: CPU cores (also torch threads) and a GPU share; one trial trains on one device."""

    cpus: float = Field(1, gt=0)
    gpus: float = Field(0, ge=0, le=1)
    max_concurrent: int | None = Field(None, ge=1)

    @field_validator("gpus")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if 0 < v < 1 and abs(round(1 / v) - 1 / v) > 1e-6:
            raise ValueError(f"a GPU share must divide one GPU evenly (1/2, 1/3, 1/4, ...), got {v}")
        return v


class SearchConfig(Strict):
    """`search:` — how trials are allocated. `grid`: every candidate x seed to the last epoch; `asha`: the
    per-trial ASHA of `asha:` (its keys may be given here too); `race`: seeds go where a declared question is
    still open (`archsearch.analysis.race`), drawing seeds from `seeds:` in order, min_seeds..max_seeds each."""

    method: Literal["grid", "asha", "race"]
    min_seeds: int = Field(3, ge=3)  # intervals need >= 3 seeds per candidate
    max_seeds: int = Field(10, ge=3)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    max_epochs: int | None = Field(None, ge=1)  # method: asha only (as in asha:)
    grace_period: int | float | None = None
    reduction_factor: float | None = None
    rule: Literal["stop", "promote"] | None = None

    @field_validator("max_seeds")
    @classmethod
    def _range(cls, v: int, info: Any) -> int:
        if v < info.data.get("min_seeds", 3):
            raise ValueError(f"max_seeds {v} is below min_seeds {info.data.get('min_seeds')}")
        return v

    def asha_keys(self) -> dict[str, Any]:
        """The ASHA keys given here (method: asha)."""
        keys = ("max_epochs", "grace_period", "reduction_factor", "rule")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def race_keys_given(self) -> list[str]:
        return [k for k in ("min_seeds", "max_seeds", "confidence") if k in self.model_fields_set]


def apply_search(config: Any) -> None:
    """Make `search:` and the older top-level keys (`sampler`, `asha`, `seeds`) agree; ValueError "KEY: reason".

    `method: grid` and `method: race` enumerate the candidates (sampler grid) and never stop a trial early (asha
    null); `method: asha` takes its ASHA keys here or from `asha:`. Under a race `seeds:` is the pool it draws
    from, in order (default: max_seeds seeds from train.seed on), and must hold at least max_seeds seeds.
    """
    search, given = config.search, config.model_fields_set
    if search is None:
        return
    if "seeds" not in given and (search.method == "race" or "max_seeds" in search.model_fields_set):
        config.seeds = search.max_seeds  # the pool; `--set search.method=grid` on a race file keeps it (and the
        # race keys, which only a race reads), so the grid replays the same seeds
    if search.method != "asha" and search.asha_keys():
        raise ValueError(f"search.{next(iter(search.asha_keys()))}: only for method: asha")
    if search.method == "asha":
        config.asha = AshaConfig(**{**(config.asha.model_dump(exclude_unset=True) if config.asha else {}),
                                    **search.asha_keys()})
        return
    if "sampler" in given and config.sampler != "grid":
        raise ValueError(f"search.method: {search.method} enumerates every candidate; drop sampler: "
                         f"{config.sampler} (or use method: asha)")
    if "asha" in given and config.asha is not None:
        raise ValueError(f"search.method: {search.method} trains every trial it starts to the last epoch; "
                         "drop asha: (or set asha: null)")
    config.sampler, config.asha = "grid", None
    if search.method == "race":
        if config.n_trials is not None:
            raise ValueError("n_trials: a race's trials are bounded by search.max_seeds per candidate a question "
                             "needs; drop n_trials (time_budget still applies)")
        pool = config.seeds if isinstance(config.seeds, int) else len(config.seeds)
        if pool < search.max_seeds:
            raise ValueError(f"seeds: the race draws up to search.max_seeds={search.max_seeds} seeds per candidate "
                             f"from seeds:, which holds {pool}")
