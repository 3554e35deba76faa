"""A study's expected cost on this machine: its planned trials, this machine's slots, a cached calibration.

`estimate`'s arithmetic is pure; this module gathers its inputs (the grid, the images per epoch, the
device and slots a local run would get, the calibration of `archsearch.train.calibrate`) and gates `run`
on studies expected to take more than a day.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from archsearch.nn.build import build
from archsearch.orchestrate.asha import expected_epochs, rung_epochs
from archsearch.orchestrate.estimate import (
    DAY_S,
    Estimate,
    ShapeCost,
    TrialShape,
    analytic_upper_wall,
    asha_fraction,
    confirm_long_run,
    estimate_study,
    over_a_day_line,
    representatives,
    shrink_hint,
)
from archsearch.space.space import grid
from archsearch.study.asked import study_questions
from archsearch.study.config import StudyConfig
from archsearch.train.calibrate import calibrate
from archsearch.train.compiling import (
    COLD_COMPILE_S,
    WARM_COMPILE_S,
    compiled_speedup,
    narrow_strided_pointwise,
    resolve_compile,
)
from archsearch.train.data import load_dataset
from archsearch.train.precision import resolve_precision
from archsearch.train.sources import dataset_key

TRAIN_SPLIT_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257}  # images in each train split
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}


@dataclass
class StudyWork:
    """What a study will train: one shape per planned trial, images per epoch, and this machine's slots."""

    shapes: list[TrialShape]
    specs: dict[str, Any]  # representative name -> spec to time
    train_images: int
    eval_images: int
    num_classes: int
    slots: int
    device: torch.device
    devices_per_trial: float
    threads: int
    note: str | None = None


def _dataset_size(config: StudyConfig) -> tuple[int, int]:
    """(train split size, classes): known datasets by name, anything else by loading it (cached decode)."""
    source = config.data_path or config.train_config.dataset
    key = dataset_key(os.path.basename(str(source))) or dataset_key(config.train_config.dataset)
    if key in TRAIN_SPLIT_SIZES:
        return TRAIN_SPLIT_SIZES[key], NUM_CLASSES[key]
    data = load_dataset(source, progress=False)
    return len(data.train_x), data.num_classes


def _local_slots(config: StudyConfig) -> tuple[int, torch.device, str | None]:
    """Trials at once on this machine, as a local Ray would fit them, and the device they train on."""
    r = config.resources
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    slots = max(1, int(cores // r.cpus))
    note = None
    if r.gpus > 0 and torch.cuda.is_available():
        device = torch.device("cuda")
        slots = min(slots, max(1, int(round(torch.cuda.device_count() / r.gpus))))
    else:
        device = torch.device("cpu")
        if r.gpus > 0:
            note = "no GPU here: the study asks for GPUs, so this is what its trials would cost on this CPU"
    if r.max_concurrent:
        slots = min(slots, r.max_concurrent)
    return slots, device, note


def study_work(config: StudyConfig, space: Any) -> StudyWork:
    """The planned trials of a study (grid: every distinct point × seeds; samplers: n_trials spread evenly)."""
    points = list({p.name: p for p in grid(space)}.values())
    seeds = len(config.seed_list)
    if config.search is not None and config.search.method == "race":  # upper bound: every needed one, max seeds
        asked = {n for rq in study_questions(config, points) for n in rq.names}
        planned = [p for p in points if p.name in asked for _ in range(config.search.max_seeds)]
    elif config.sampler == "grid":
        n_points = len(points) if config.n_trials is None else min(len(points), -(-config.n_trials // seeds))
        planned = [p for p in points[:n_points] for _ in range(seeds)]
    else:
        n = config.n_trials if config.n_trials is not None else len(points) * seeds
        planned = [points[i % len(points)] for i in range(n)]
    shapes = [TrialShape(p.name, float(p.macs), f"{p.family}|{p.budget or '-'}") for p in planned]
    specs = {p.name: p.spec for p in points}
    train_size, classes = _dataset_size(config)
    tc = config.train_config
    train_images = tc.subset or max(1, train_size - tc.val_size)
    slots, device, note = _local_slots(config)
    per_trial = config.resources.gpus if device.type == "cuda" else config.resources.cpus
    return StudyWork(shapes, specs, train_images, tc.val_size + tc.precise_bn, classes, slots, device,
                     per_trial, max(1, int(config.resources.cpus)), note)


def _fraction(config: StudyConfig, epochs: int | None = None, grace: int | None = None) -> float:
    """The expected share of `epochs` (default the study's) trained under its ASHA (1 without)."""
    if config.asha is None:
        return 1.0
    E = epochs or config.max_epochs
    rf = config.asha.reduction_factor
    rungs = rung_epochs(E, grace or config.asha.grace_period, rf)
    return asha_fraction(E, expected_epochs(E, rungs, rf))


def _costs(config: StudyConfig, work: StudyWork, progress: Callable[[str], None] | None) -> dict[str, ShapeCost]:
    """Seconds per image of one representative per (family, budget), timed here (or read from the cache)."""
    reps = representatives(work.shapes)
    timed = calibrate([work.specs[r.name] for r in reps.values()], config.train_config, work.device,
                      threads=work.threads, num_classes=work.num_classes, progress=progress)
    return {name: ShapeCost(t["train_s_per_image"], t["eval_s_per_image"]) for name, t in timed.items()}


def _compiles(config: StudyConfig, work: StudyWork, spec: Any) -> bool:
    """Whether a full trial of `spec` will train compiled (`train.compile`), as the trainer decides it."""
    tc = config.train_config
    amp, _ = resolve_precision(tc, work.device)
    steps = config.max_epochs * (work.train_images // tc.batch_size)
    compiled, _ = resolve_compile(tc.compile, work.device, amp, steps, spec.family)
    if compiled and tc.compile == "auto" and work.device.type == "cpu":  # the trainer's last check needs the net
        narrow = narrow_strided_pointwise(build(spec, num_classes=work.num_classes))
        compiled, _ = resolve_compile(tc.compile, work.device, amp, steps, spec.family, narrow)
    return compiled


def _with_compile(config: StudyConfig, work: StudyWork) -> StudyWork:
    """`work` with each compiled trial's speed-up and compile seconds: decided once per candidate, after the
    analytic bound (building a network to read its widths is not start-up work for small studies)."""
    compiled = {n: _compiles(config, work, work.specs[n]) for n in dict.fromkeys(s.name for s in work.shapes)}
    shapes = [replace(s, speedup=compiled_speedup(work.specs[s.name].family), cold_start_s=COLD_COMPILE_S,
                      warm_start_s=WARM_COMPILE_S) if compiled[s.name] else s for s in work.shapes]
    return replace(work, shapes=shapes)


def _compile_assumption(work: StudyWork) -> str | None:
    """The assumption behind compiled trials' times: calibration times eager steps, the trainer compiles."""
    compiled = sorted({work.specs[s.name].family for s in work.shapes if s.cold_start_s > 0})
    if not compiled:
        return None
    speeds = ", ".join(f"{f} {compiled_speedup(f):.2f}x" for f in compiled)
    return (f"compiled trials ({', '.join(compiled)}): eager steps timed here ÷ the measured compiled speed-up "
            f"({speeds}; train/compiling.py), plus {COLD_COMPILE_S:.0f} s to compile each candidate's first "
            f"trial and {WARM_COMPILE_S:.0f} s its later seeds (inductor's cache)")


def _estimate(config: StudyConfig, work: StudyWork, costs: dict[str, ShapeCost], train_images: int | None = None,
              epochs: int | None = None, grace: int | None = None) -> Estimate:
    return estimate_study(work.shapes, costs, train_images=train_images or work.train_images,
                          eval_images=work.eval_images, max_epochs=epochs or config.max_epochs,
                          fraction=_fraction(config, epochs, grace), slots=work.slots, device=work.device.type,
                          devices_per_trial=work.devices_per_trial, time_budget=config.time_budget)


def estimate_cost(config: StudyConfig, space: Any, work: StudyWork | None = None,
                  progress: Callable[[str], None] | None = None) -> Estimate:
    """Calibrate one representative per (family, budget) on this machine (cached) and estimate the study."""
    work = _with_compile(config, work or study_work(config, space))
    est = _estimate(config, work, _costs(config, work, progress))
    if config.asha is not None and config.asha.rule == "stop":
        est.assumptions.append("ASHA's share is a lower bound under rule `stop`: the first trials at a rung are never "
                               "stopped (0.29 of the grid's epochs measured where 0.16 was expected, "
                               "benchmarks/answer_cost)")
    if config.search is not None and config.search.method == "race":
        s = config.search
        est.assumptions.append(f"race: every candidate a question needs trains max_seeds={s.max_seeds} seeds (an upper "
                               f"bound; it stops at {s.min_seeds} to {s.max_seeds} seeds as its questions resolve)")
    compile_note = _compile_assumption(work)
    if compile_note:
        est.assumptions.append(compile_note)
    if config.sampler != "grid":
        est.assumptions.append(f"{config.sampler} spreads its {len(work.shapes)} trials evenly over the candidates")
    if work.note:
        est.assumptions.append(work.note)
    return est


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_long_run(config: StudyConfig, space: Any, *, yes: bool, interactive: bool | None = None,
                   ask: Callable[[str], str] = input, say: Callable[[str], Any] = _stderr) -> bool:
    """True when the study may start: under a day here, or confirmed (terminal) / --yes; else ConfigError.

    A study that even `SLOWEST_TRAIN_MACS_PER_S` would finish in a day is not calibrated at all.
    """
    work = study_work(config, space)
    bound = analytic_upper_wall(work.shapes, train_images=work.train_images, eval_images=work.eval_images,
                                max_epochs=config.max_epochs, slots=work.slots)
    if bound <= DAY_S:
        return True
    work = _with_compile(config, work)
    costs = _costs(config, work, say)
    est = _estimate(config, work, costs)
    if est.wall_s <= DAY_S:
        return True
    asha = config.asha
    hint = shrink_hint(lambda subset, epochs, grace: _estimate(config, work, costs, subset, epochs, grace).wall_s,
                       work.train_images, config.max_epochs,
                       grace_period=None if asha is None else asha.grace_period,
                       asha_max_epochs=asha is not None and asha.max_epochs is not None)
    line = over_a_day_line(str(config.path), est, hint)
    if interactive is None:
        interactive = sys.stdin.isatty()
    return confirm_long_run(line, yes=yes, interactive=interactive, ask=ask, say=say)
