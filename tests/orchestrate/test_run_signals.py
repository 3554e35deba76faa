"""Real runs under faults (Ray, in a subprocess): SIGTERM mid-trial then --resume, and a worker's native crash.

Shares test_tune.py's helpers (a tiny study on a CIFAR-10 subset, `archsearch run` as a subprocess).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from test_tune import (
    TRAIN,
    _study_created,
    cli,
    finish,
    load,
    needs_data,
    reap_group,
    study_dict,
    write_study,
)

from archsearch.study.records import INTERRUPTED


@needs_data
def test_sigterm_mid_trial_then_resume_loses_nothing(tmp_path: Path) -> None:
    epochs = 3
    data = study_dict("term", n_trials=2, asha=None, report=False, export_top=0,
                      resources={"cpus": 1, "gpus": 0, "max_concurrent": 1}, train={**TRAIN, "epochs": epochs})
    study_file = write_study(tmp_path, data)
    url, db = f"sqlite:///{tmp_path}/runs/term/study.db", tmp_path / "runs" / "term" / "study.db"
    proc = cli("run", str(study_file), cwd=tmp_path)
    try:
        deadline = time.time() + 300
        while not (_study_created(db) and any(
                t.state.name == "RUNNING" and t.user_attrs.get("epochs", 0) >= 1
                for t in load(url, "term").get_trials(deepcopy=False))):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.time() < deadline, "no trial reached epoch 1 within 300 s"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)  # what Slurm, Kubernetes and systemd send
        rc, out = finish(proc, 180)
    finally:
        reap_group(proc.pid)
    assert rc == 143, out[-4000:]
    assert "continue with `archsearch run" in out and "--resume`" in out and "study term:" in out
    assert "Traceback" not in out and "Token authentication" not in out
    before = {t.number: t for t in load(url, "term").get_trials()}
    stopped = [n for n, t in before.items() if t.state.name == "FAIL" and t.user_attrs["fail_reason"] == INTERRUPTED]
    assert stopped and not [t for t in before.values() if t.state.name == "RUNNING"]
    assert all(Path(before[n].user_attrs["checkpoint"]).is_file() for n in stopped)  # checkpoints kept

    rc, out = finish(cli("run", str(study_file), "--resume", cwd=tmp_path))
    assert rc == 0, out[-4000:]
    after = {t.number: t for t in load(url, "term").get_trials()}
    assert not [t for t in after.values() if t.state.name in ("RUNNING", "WAITING")]
    for n, t in before.items():  # nothing stored is lost or changed
        assert (after[n].state, after[n].values, after[n].intermediate_values) == (t.state, t.values,
                                                                                   t.intermediate_values)
    for n in stopped:
        (cont,) = [t for t in after.values() if t.user_attrs.get("resumed_from") == n]
        assert cont.state.name == "COMPLETE" and cont.user_attrs["resumed_from_epoch"] >= 1
        for e, v in before[n].intermediate_values.items():
            assert cont.intermediate_values[e] == v  # the epochs before SIGTERM, carried over
    assert sum(t.state.name == "COMPLETE" for t in after.values()) == 2

    rc, out = finish(cli("run", str(study_file), "--resume", cwd=tmp_path), 180)  # a finished study: quiet
    assert rc == 0 and "Traceback" not in out and "ERROR" not in out, out[-4000:]
    assert {t.number: t.state for t in load(url, "term").get_trials()} == {n: t.state for n, t in after.items()}


@needs_data
def test_a_native_crash_is_retried_once_with_the_safe_fallback(tmp_path: Path) -> None:
    data = study_dict("crash", n_trials=1, asha=None, resources={"cpus": 1, "gpus": 0, "max_concurrent": 1},
                      space={"candidates": [{"name": "resnet-8"}]}, export_top=0,
                      train={**TRAIN, "epochs": 1, "latency": False})
    study_file = write_study(tmp_path, data)
    rc, out = finish(cli("run", str(study_file), cwd=tmp_path, env={"ARCHSEARCH_INJECT_ABORT": "0"}), 400)
    assert rc == 0, out[-4000:]
    trials = load(f"sqlite:///{tmp_path}/runs/crash/study.db", "crash").get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"], out[-4000:]
    crashed, retried = trials
    assert crashed.user_attrs["fallback"].startswith("native crash: worker process died (Worker unexpectedly exits")
    assert crashed.user_attrs["fallback"].endswith("; retried with NCHW + loop")
    assert retried.user_attrs["retry_of"] == 0 and retried.params == crashed.params
    assert retried.user_attrs["seed"] == crashed.user_attrs["seed"]
    assert retried.user_attrs["train_overrides"] == {"channels_last": False, "branch_strategy": "loop"}
    assert retried.user_attrs["fallback"].startswith("retry of trial #0 after a native crash")
    report = (tmp_path / "runs" / "crash" / "report" / "report.md").read_text()
    head = report.splitlines()[:4]
    assert any(line.startswith("**Native crash: 1 trial(s) died in their worker** (`resnet-8`") for line in head), head
