"""The cost of a study before it runs (estimate arithmetic, the >24 h gate) and while it runs (ETA, whole-study
best after a resume). Unit-level: a fake calibration, an in-memory Optuna study, no Ray."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from rich.console import Console

from archsearch.cli import main
from archsearch.errors import ConfigError
from archsearch.orchestrate import cost
from archsearch.orchestrate.asha import expected_epochs
from archsearch.orchestrate.estimate import (
    DAY_S,
    ShapeCost,
    TrialShape,
    estimate_study,
    eta_from_epochs,
    remaining_epochs,
    representatives,
)
from archsearch.orchestrate.progress import StudyProgress
from archsearch.study.config import load_study
from archsearch.study.lifecycle import load_space_of
from archsearch.study.records import load_records

SPACE = {"candidates": [{"name": "resnet-8"}, {"name": "multiresnet-8-k2"}, {"name": "dmrnet-8"}]}


def _study_file(tmp_path: Path, **train: Any) -> Path:
    data = {"name": "big", "space": SPACE, "sampler": "grid", "seeds": 2, "asha": None,
            "resources": {"cpus": 1, "gpus": 0, "max_concurrent": 2},
            "train": {"epochs": 200, "val_size": 5000, "batch_size": 64, **train}}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------------------ the estimate's arithmetic


def test_estimate_arithmetic_on_a_fake_calibration() -> None:
    shapes = [TrialShape("a", 100.0, "g1"), TrialShape("a", 100.0, "g1"), TrialShape("b", 300.0, "g1"),
              TrialShape("c", 50.0, "g2")]
    reps = representatives(shapes)
    assert reps["g1"].name == "a" and reps["g2"].name == "c"  # median MACs of the distinct members
    costs = {"a": ShapeCost(0.01, 0.002), "c": ShapeCost(0.004, 0.001)}
    est = estimate_study(shapes, costs, train_images=1000, eval_images=500, max_epochs=10, fraction=0.5, slots=2,
                         device="cpu", devices_per_trial=2, startup_s=10, per_trial_s=1)
    epoch_a = 1000 * 0.01 + 500 * 0.002  # 11 s
    epoch_b = 3 * epoch_a  # scaled by MACs from its group's representative
    epoch_c = 1000 * 0.004 + 500 * 0.001  # 4.5 s
    work = 0.5 * 10 * (2 * epoch_a + epoch_b + epoch_c) + 4 * 1
    assert est.work_s == pytest.approx(work)
    assert est.wall_s == pytest.approx(10 + work / 2)
    assert est.device_hours == pytest.approx(work * 2 / 3600)
    assert est.trials == 4
    text = "\n".join(est.lines())
    assert "50% of the epochs trained" in text and "1,000 training + 500 evaluated images" in text
    capped = estimate_study(shapes, costs, train_images=1000, eval_images=500, max_epochs=10, fraction=0.5,
                            slots=2, device="cpu", devices_per_trial=1, time_budget=60)
    assert capped.wall_s == 60 and any("time budget" in a for a in capped.assumptions)


def test_a_compile_costs_its_first_trial_cold_and_later_seeds_warm() -> None:
    compiled = {"speedup": 2.0, "cold_start_s": 60.0, "warm_start_s": 5.0}
    shapes = [TrialShape("a", 100.0, "g", **compiled), TrialShape("a", 100.0, "g", **compiled),
              TrialShape("b", 200.0, "g", **compiled), TrialShape("c", 50.0, "g")]  # representative: a
    costs = {"a": ShapeCost(0.01, 0.0)}
    est = estimate_study(shapes, costs, train_images=100, eval_images=0, max_epochs=1, fraction=1.0, slots=1,
                         device="cpu", devices_per_trial=1, startup_s=0, per_trial_s=0)
    # b is a new candidate: compiles cold; c (eager, say a narrow network of the group) neither speeds up nor compiles
    assert est.work_s == pytest.approx((0.5 + 0.5 + 1 + 0.5) + 60 + 5 + 60)


def test_compiled_trials_are_estimated_at_the_measured_compiled_speed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archsearch.train.compiling import COLD_COMPILE_S, COMPILED_FAMILIES

    monkeypatch.setenv("ARCHSEARCH_DATA", "/nowhere/cifar10-jpg.tar.gz")
    _fake_calibration(monkeypatch, 0.01)
    long = load_study(_study_file(tmp_path, subset=None))  # 200 epochs of 45,000 images: compiles (fp32 CPU)
    work = cost._with_compile(long, cost.study_work(long, load_space_of(long)))
    shape = {s.name: s for s in work.shapes}
    assert shape["resnet-8"].speedup == COMPILED_FAMILIES["resnet"]
    assert shape["resnet-8"].cold_start_s == COLD_COMPILE_S
    assert shape["dmrnet-8"].speedup == 1.0 and shape["dmrnet-8"].cold_start_s == 0  # stays eager
    note = cost._compile_assumption(work)
    assert note is not None and "multiresnet" in note and "resnet 1.38x" in note and "dmrnet" not in note
    assert note in cost.estimate_cost(long, load_space_of(long)).assumptions
    short = load_study(_study_file(tmp_path, subset=640, epochs=2))  # 20 steps: eager
    work = cost._with_compile(short, cost.study_work(short, load_space_of(short)))
    assert all(s.speedup == 1.0 and s.cold_start_s == 0 for s in work.shapes)
    assert cost._compile_assumption(work) is None
    off = load_study(_study_file(tmp_path, subset=None, compile=False))
    assert cost._compile_assumption(cost._with_compile(off, cost.study_work(off, load_space_of(off)))) is None


def test_the_compile_decision_is_per_candidate_not_per_calibration_group(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHSEARCH_DATA", "/nowhere/cifar10-jpg.tar.gz")
    path = _study_file(tmp_path, subset=None)
    data = yaml.safe_load(path.read_text())
    data["space"] = {"candidates": [{"name": "resnet-20"}, {"name": "resnet-56-c7.13.27-proj"}]}  # one group
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load_study(path)
    work = cost._with_compile(config, cost.study_work(config, load_space_of(config)))
    speed = {s.name: s.speedup for s in work.shapes}
    assert speed["resnet-20"] > 1.0 and speed["resnet-56-c7.13.27-proj"] == 1.0  # narrow 7-channel projection


def test_study_work_plans_grid_trials_images_and_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHSEARCH_DATA", "/nowhere/cifar10-jpg.tar.gz")  # known by name: not loaded
    config = load_study(_study_file(tmp_path, subset=None))
    work = cost.study_work(config, load_space_of(config))
    assert len(work.shapes) == 6 and {s.name for s in work.shapes} == {"resnet-8", "multiresnet-8-k2", "dmrnet-8"}
    assert work.train_images == 45_000 and work.eval_images == 5000
    assert work.slots <= 2 and work.device.type == "cpu"


# ------------------------------------------------------------------------------ more than a day: ask or refuse


def _fake_calibration(monkeypatch: pytest.MonkeyPatch, seconds_per_image: float) -> list[int]:
    calls: list[int] = []

    def fake(specs, config, device, *, threads, num_classes=10, progress=None):  # noqa: ANN001, ANN202
        calls.append(len(specs))
        return {s.name: {"train_s_per_image": seconds_per_image, "eval_s_per_image": seconds_per_image / 3}
                for s in specs}

    monkeypatch.setattr(cost, "calibrate", fake)
    return calls


def test_over_a_day_non_interactive_without_yes_exits_2_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCHSEARCH_DATA", "/nowhere/cifar10-jpg.tar.gz")
    calls = _fake_calibration(monkeypatch, 0.01)  # 6 trials x 200 epochs x 45,000 images: days
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    path = _study_file(tmp_path, subset=None)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and calls, err
    line = err[0]
    assert str(path) in line and "exceeds 24 h" in line and "--set train.subset=" in line
    assert "--set train.epochs=" in line and "--yes" in line and "days" in line
    assert not (tmp_path / "runs").exists()  # nothing started, nothing stored


def test_over_a_day_with_yes_or_a_confirmation_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHSEARCH_DATA", "/nowhere/cifar10-jpg.tar.gz")
    _fake_calibration(monkeypatch, 0.01)
    config = load_study(_study_file(tmp_path, subset=None))
    space = load_space_of(config)
    said: list[str] = []
    assert cost.check_long_run(config, space, yes=True, interactive=False, say=said.append) is True
    assert "starting (--yes)" in said[-1]
    assert cost.check_long_run(config, space, yes=False, interactive=True, ask=lambda _: "y", say=said.append)
    assert not cost.check_long_run(config, space, yes=False, interactive=True, ask=lambda _: "", say=said.append)
    with pytest.raises(ConfigError, match="exceeds 24 h") as refused:
        cost.check_long_run(config, space, yes=False, interactive=False, say=said.append)
    # the hint's --set values do bring the study under a day
    hint = str(refused.value).split("shrink it with ")[1].split(" (or fewer")[0].split()
    overrides = [v for k, v in zip(hint, hint[1:], strict=False) if k == "--set"]
    assert [o.split("=")[0] for o in overrides] == ["train.subset", "train.epochs"]
    shrunk = load_study(_study_file(tmp_path, subset=None), overrides)
    assert cost.estimate_cost(shrunk, load_space_of(shrunk)).wall_s <= DAY_S


def test_a_small_study_is_not_calibrated_before_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHSEARCH_DATA", "/nowhere/cifar10-jpg.tar.gz")
    calls = _fake_calibration(monkeypatch, 10.0)  # absurdly slow: would exceed a day if asked
    config = load_study(_study_file(tmp_path, subset=256, epochs=2))
    assert cost.check_long_run(config, load_space_of(config), yes=False, interactive=False) is True
    assert calls == []  # even 1 GMAC/s finishes it within a day: no calibration
    slow = cost.estimate_cost(config, load_space_of(config))
    assert slow.wall_s > DAY_S  # ... which the dry-run's estimate does calibrate


# ------------------------------------------------------------------------------ ETA


def test_eta_arithmetic() -> None:
    assert remaining_epochs(0, 200, [25, 75], 3) == pytest.approx(expected_epochs(200, [25, 75], 3))
    assert remaining_epochs(30, 200, [25, 75], 3) == pytest.approx(45 + 125 / 3)  # survived rung 25
    assert remaining_epochs(7, 10) == 3
    eta = eta_from_epochs(trials_left=4, running_epochs=[2, 9], epoch_s=5.0, slots=2, max_epochs=10)
    assert eta == pytest.approx((4 * 10 + 8 + 1) * 5.0 / 2)


def test_progress_eta_and_epochs_from_measured_epoch_times() -> None:
    p = StudyProgress("s", n_trials=4, max_epochs=3, slots=2, console=Console(file=io.StringIO()))
    assert p.eta_seconds() is None
    p.trial_started(0, "resnet-8", 0)
    p.trial_started(1, "resnet-14", 0)
    p.trial_epoch(0, 1, 50.0, seconds=4.0)
    p.trial_epoch(1, 1, 40.0, seconds=6.0)
    p.trial_epoch(1, 1, 40.0, seconds=6.0)  # told twice: counted once
    assert p.epochs_done == 2
    # 2 trials not started x 3 epochs + the running ones' 2 + 2, at 5 s per epoch, over 2 slots
    assert p.eta_seconds() == pytest.approx((2 * 3 + 2 + 2) * 5.0 / 2)
    head = p.headline()
    assert head.startswith("0/4 done · 2 running") and "epochs 2/12" in head and "ETA ~25s" in head
    assert "elapsed " in head
    screen = io.StringIO()  # on a terminal: the headline, a bar of trial-epochs, the running trials
    Console(file=screen, force_terminal=True, width=200).print(p)
    assert "epochs 2/12" in screen.getvalue() and "━" in screen.getvalue() and "resnet-14" in screen.getvalue()


# ------------------------------------------------------------------------------ whole-study best after a resume


def _previous_trial(study: optuna.Study, name: str, seed: int, value: float | None, state: str = "COMPLETE") -> None:
    attrs = {"name": name, "family": name.split("-")[0], "seed": seed, "epochs": 3 if state == "COMPLETE" else 1,
             "max_epochs": 3, "full_fidelity": state == "COMPLETE"}
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState[state], value=value, user_attrs=attrs,
                                      intermediate_values={1: value or 60.0})
    study.add_trial(trial)


def test_live_best_and_counts_cover_the_whole_study_after_a_resume() -> None:
    study = optuna.create_study()  # what earlier invocations left
    _previous_trial(study, "resnet-8", 0, 30.0)
    _previous_trial(study, "resnet-8", 1, 20.0)  # resnet-8: mean 25 % over 2 seeds
    _previous_trial(study, "dmrnet-8", 0, 24.0)  # dmrnet-8: 24 % over 1 seed
    _previous_trial(study, "dmrnet-8", 1, None, state="PRUNED")
    out = io.StringIO()
    p = StudyProgress("s", n_trials=6, max_epochs=3, console=Console(file=out, width=300),
                      records=load_records(study))
    assert p.counts == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 0} and p.epochs_done == 3 * 3 + 1
    assert "best 24.00% dmrnet-8 (1 seed, #2)" in p.headline() and p.headline().startswith("4/6 done")
    # this invocation: dmrnet-8's second seed makes its mean 27 %: the seed-mean best is resnet-8 now
    p.trial_started(4, "dmrnet-8", 2)
    p.trial_epoch(4, 3, 30.0, seconds=1.0)
    p.trial_ended(4, "COMPLETE", 30.0)
    head = p.headline()
    assert "best 25.00% resnet-8 (2 seeds, #1)" in head, head
    assert head.startswith("5/6 done") and "4 complete · 1 pruned" in head and "epochs 11/18" in head
    assert "complete #4 dmrnet-8" in out.getvalue()
