"""The nested sections of a study file (`asha:`, `resources:`), validated; `archsearch.study.config` uses them."""

from __future__ import annotations

from typing import Literal

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
