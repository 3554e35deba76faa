"""What a study will cost, before it runs: pure arithmetic over a calibration, testable with a fake one.

expected wall = startup + Σ over trials (expected epochs × epoch seconds + per-trial overhead) ÷ concurrent
slots, where an epoch costs training images × measured seconds per training image plus the validation (and
precise-BN) images × measured seconds per evaluated image. Calibration (`archsearch.train.calibrate`)
times a few steps of one representative per (family, budget); the other candidates of that group scale by
their analytic MACs. The expected fraction of epochs trained comes from the search method: 1 without
ASHA, `asha.expected_epochs` / max_epochs with it (the top 1/rf goes on at every rung).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from archsearch.errors import ConfigError

DAY_S = 24 * 3600.0
# Measured by benchmarks/overhead.py (results/overhead.md, 2 CPUs): Ray start/stop plus the time to the first
# trial ~10 s per session, and ~1.5 slot-seconds per trial held outside the trainable (start, build, latency).
STARTUP_S = 10.0
PER_TRIAL_S = 1.5
# A pessimistic speed (training MAC/s per slot, 6 × forward MACs per image) below which no study trains:
# studies this bound keeps under 24 h skip the calibration in `run` (it cannot change the answer).
SLOWEST_TRAIN_MACS_PER_S = 1.0e9
TRAIN_MAC_FACTOR = 6.0


@dataclass(frozen=True)
class ShapeCost:
    """Measured seconds per image of one candidate shape: a training step's, and an evaluation forward's."""

    train_s_per_image: float
    eval_s_per_image: float


@dataclass(frozen=True)
class TrialShape:
    """One planned trial's candidate: its name, analytic forward MACs, and the group it is calibrated with."""

    name: str
    macs: float
    group: str
    # a trial that trains compiled (decided per candidate: the narrow rule depends on its widths): its steps run
    # `speedup` times its group's eager calibration, and before its first epoch it compiles, cold for the
    # candidate's first trial and warm (inductor's cache) for its later seeds
    speedup: float = 1.0
    cold_start_s: float = 0.0
    warm_start_s: float = 0.0


@dataclass
class Estimate:
    """A study's expected cost on one machine, and the assumptions it rests on (printed with it)."""

    trials: int
    wall_s: float
    work_s: float  # Σ trial seconds: slot-seconds of work
    slots: int
    device: str  # "cpu" or "cuda"
    devices_per_trial: float  # GPUs per trial (cuda) or CPU cores per trial (cpu)
    assumptions: list[str] = field(default_factory=list)

    @property
    def device_hours(self) -> float:
        """GPU-hours on CUDA, CPU core-hours on a CPU: the work times what each trial holds."""
        return self.work_s * self.devices_per_trial / 3600.0

    def lines(self) -> list[str]:
        unit = "GPU-hours" if self.device == "cuda" else "CPU core-hours"
        out = [f"  estimate       ~{fmt_duration(self.wall_s)} wall on this machine ({self.slots} trial(s) at once "
               f"on {self.device}); {self.device_hours:.1f} {unit} ({self.trials} trials)"]
        out += [f"    assumes {a}" for a in self.assumptions]
        return out


def representatives(shapes: Sequence[TrialShape]) -> dict[str, TrialShape]:
    """One shape per group to time: the one of median MACs (ties: the name), so a few steps stand for many."""
    groups: dict[str, list[TrialShape]] = {}
    for s in shapes:
        groups.setdefault(s.group, []).append(s)
    out = {}
    for group, members in groups.items():
        ranked = sorted({m.name: m for m in members}.values(), key=lambda m: (m.macs, m.name))
        out[group] = ranked[(len(ranked) - 1) // 2]
    return out


def scaled_cost(shape: TrialShape, rep: TrialShape, cost: ShapeCost) -> ShapeCost:
    """A shape's cost from its group representative's eager one, in proportion to analytic MACs (÷ its compiled
    speed-up)."""
    ratio = shape.macs / rep.macs if rep.macs > 0 else 1.0
    return ShapeCost(cost.train_s_per_image * ratio / shape.speedup, cost.eval_s_per_image * ratio)


def epoch_seconds(cost: ShapeCost, train_images: int, eval_images: int) -> float:
    """One epoch: its training steps plus the validation (and precise-BN) forwards."""
    return train_images * cost.train_s_per_image + eval_images * cost.eval_s_per_image


def asha_fraction(max_epochs: int, expected: float | None) -> float:
    """The fraction of max_epochs a trial trains on average (1 without ASHA)."""
    return 1.0 if expected is None else min(1.0, expected / max_epochs)


def estimate_study(shapes: Sequence[TrialShape], costs: dict[str, ShapeCost], *, train_images: int,
                   eval_images: int, max_epochs: int, fraction: float, slots: int, device: str,
                   devices_per_trial: float, time_budget: float | None = None, startup_s: float = STARTUP_S,
                   per_trial_s: float = PER_TRIAL_S) -> Estimate:
    """Expected wall and work of running every planned trial (`shapes`, one per trial) with `costs` per group."""
    reps = representatives(shapes)
    work = 0.0
    started: set[str] = set()
    for s in shapes:
        cost = scaled_cost(s, reps[s.group], costs[reps[s.group].name])
        start = s.warm_start_s if s.name in started else s.cold_start_s
        started.add(s.name)
        work += fraction * max_epochs * epoch_seconds(cost, train_images, eval_images) + per_trial_s + start
    slots = max(1, slots)
    wall = startup_s + work / slots
    assumptions = [
        f"{train_images:,} training + {eval_images:,} evaluated images per epoch, at most {max_epochs} epochs",
        f"{fraction:.0%} of the epochs trained on average"
        + (" (ASHA keeps the top 1/rf at each rung)" if fraction < 1 else " (no early stopping)"),
        f"seconds per image timed on this machine for {len(reps)} shape(s) (one per family and budget; the "
        "others scaled by MACs)",
        f"{startup_s:.0f} s to start and {per_trial_s:.1f} s per trial of orchestration (benchmarks/overhead.py)",
    ]
    if time_budget:
        if wall > time_budget:
            assumptions.append(f"stops at the time budget of {fmt_duration(time_budget)} (the work above is cut)")
        wall = min(wall, time_budget)
    return Estimate(len(shapes), wall, work, slots, device, devices_per_trial, assumptions)


def analytic_upper_wall(shapes: Sequence[TrialShape], *, train_images: int, eval_images: int, max_epochs: int,
                        slots: int) -> float:
    """Wall seconds at `SLOWEST_TRAIN_MACS_PER_S`: above any real machine's, so a study under 24 h here is one."""
    macs = sum(s.macs for s in shapes) * max_epochs * (TRAIN_MAC_FACTOR * train_images + eval_images)
    return STARTUP_S + (macs / SLOWEST_TRAIN_MACS_PER_S + PER_TRIAL_S * len(shapes)) / max(1, slots)


def shrink_hint(wall_of: Callable[[int, int, int | None], float], train_images: int, max_epochs: int, *,
                grace_period: int | None = None, asha_max_epochs: bool = False,
                target_s: float = 0.8 * DAY_S) -> str:
    """`--set` values that bring the study under a day: subset and epochs cut together, each by the same
    factor, until `wall_of(subset, epochs, grace)` (the estimate redone) is under `target_s`; under ASHA the
    grace period scales with the epochs (and its max_epochs follows when the study file sets it)."""
    cut = 1.0
    while True:
        subset, epochs = max(1, int(train_images / cut)), max(1, int(max_epochs / cut))
        grace = None if grace_period is None else max(1, min(epochs, round(grace_period * epochs / max_epochs)))
        if wall_of(subset, epochs, grace) <= target_s or (subset == 1 and epochs == 1):
            break
        cut *= 1.1
    hint = f"--set train.subset={subset} --set train.epochs={epochs}"
    if asha_max_epochs:
        hint += f" --set asha.max_epochs={epochs}"
    if grace is not None:
        hint += f" --set asha.grace_period={grace}"
    return hint


def over_a_day_line(where: str, estimate: Estimate, hint: str) -> str:
    """The one line `run` prints for a study expected to run longer than 24 hours."""
    unit = "GPU-hours" if estimate.device == "cuda" else "CPU core-hours"
    return (f"{where}: expected wall time ~{fmt_duration(estimate.wall_s)} on this machine "
            f"({estimate.device_hours:.1f} {unit}) exceeds 24 h; shrink it with {hint} (or fewer candidates/seeds), "
            "or pass --yes to start it anyway")


def confirm_long_run(line: str, *, yes: bool, interactive: bool, ask: Callable[[str], str],
                     say: Callable[[str], Any]) -> bool:
    """True: start. --yes starts; a terminal asks; elsewhere the line is a ConfigError (exit 2, nothing run)."""
    if yes:
        say(line.replace(", or pass --yes to start it anyway", "; starting (--yes)"))
        return True
    if not interactive:
        raise ConfigError(line)
    say(line)
    try:
        answer = ask("start it anyway? [y/N] ")
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def fmt_duration(seconds: float) -> str:
    """3 s, 4 min, 2.5 h, 3.1 days: the unit a reader thinks in."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def remaining_epochs(epoch: int, max_epochs: int, rungs: Sequence[int] = (),
                     reduction_factor: float | None = None) -> float:
    """Epochs a trial at `epoch` still trains on average: the rest, or under ASHA the share that survives each
    rung above it (a new trial: `epoch=0`, which gives `asha.expected_epochs`)."""
    if reduction_factor is None:
        return float(max(0, max_epochs - epoch))
    total, alive, last = 0.0, 1.0, epoch
    for r in sorted(rungs):
        if r <= epoch:
            continue
        total += alive * (r - last)
        alive /= reduction_factor
        last = r
    return total + alive * max(0, max_epochs - last)


def eta_from_epochs(*, trials_left: int, running_epochs: Sequence[int], epoch_s: float, slots: int,
                    max_epochs: int, rungs: Sequence[int] = (), reduction_factor: float | None = None) -> float:
    """Seconds left: the expected epochs of the trials not started and of the running ones' rest, at the
    measured seconds per epoch, spread over the slots."""
    new = trials_left * remaining_epochs(0, max_epochs, rungs, reduction_factor)
    rest = sum(remaining_epochs(e, max_epochs, rungs, reduction_factor) for e in running_epochs)
    return (new + rest) * epoch_s / max(1, slots)
