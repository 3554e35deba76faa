"""A race on Ray: the trials it asks for, in order, are the ones its replay on the study's own curves asks for,
and the replay's decisions equal the study's own (report, `run`'s answer lines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from archsearch.analysis.curves import read_curves
from archsearch.analysis.race import answers_of_study
from archsearch.commands.replay import replay_config
from archsearch.study.config import load_study
from archsearch.study.records import load_records

DATA = os.environ.get("ARCHSEARCH_DATA", str(Path(__file__).resolve().parents[3] / "shared/data/cifar10-jpg.tar.gz"))
needs_data = pytest.mark.skipif(not Path(DATA).exists(), reason=f"no CIFAR-10 archive at {DATA} (ARCHSEARCH_DATA)")
STUDY = {
    "name": "race_tiny",
    "space": {"candidates": [{"name": "resnet-8"}, {"name": "multiresnet-8-k2"}, {"name": "dmrnet-8"}]},
    "search": {"method": "race", "min_seeds": 3, "max_seeds": 4},
    "questions": [{"id": "multi_vs_plain", "kind": "compare", "a": {"names": ["multiresnet-8-k2"]},
                   "b": {"names": ["resnet-8"]}}],
    "resources": {"cpus": 1, "gpus": 0},
    "train": {"epochs": 1, "subset": 256, "val_size": 256, "batch_size": 64, "lr": 0.05, "latency": False},
    "report": True, "export_top": 0,
}


def cli(*args: str, cwd: Path) -> tuple[int, str]:
    env = {**os.environ, "ARCHSEARCH_DATA": DATA}
    proc = subprocess.run([sys.executable, "-m", "archsearch.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=540)
    return proc.returncode, proc.stdout + proc.stderr


@needs_data
def test_race_on_ray_and_its_replay_ask_for_the_same_trials_and_decide_alike(tmp_path: Path) -> None:
    path = tmp_path / "race_tiny.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    rc, out = cli("run", str(path), cwd=tmp_path)
    assert rc == 0, out[-3000:]
    study = optuna.load_study(study_name="race_tiny", storage=f"sqlite:///{tmp_path / 'runs/race_tiny/study.db'}")
    records = load_records(study)
    ray_order = [(r.name, r.seed) for r in sorted(records, key=lambda r: r.number)]
    assert all(r.state == "COMPLETE" for r in records) and "dmrnet-8" not in {n for n, _ in ray_order}
    assert ray_order[:6] == [(n, s) for s in (0, 1, 2) for n in ("multiresnet-8-k2", "resnet-8")]

    rc, out_curves = cli("curves", str(path), "--out", str(tmp_path / "curves.csv"), cwd=tmp_path)
    assert rc == 0, out_curves
    config = load_study(path)
    replayed = replay_config(config, read_curves(tmp_path / "curves.csv"), slots=2)
    assert [(j.name, j.seed) for j in replayed.requested] == ray_order
    asked, raced = answers_of_study(dict(study.user_attrs), records)
    assert raced is not None and raced.done and len(raced.rounds) == len(replayed.rounds)
    mine, theirs = replayed.as_json()["answers"], [a for a in asked.answers]
    assert len(mine) == len(theirs) == 1
    assert mine[0]["decision"] == theirs[0].result.decision
    assert mine[0]["low"] == pytest.approx(theirs[0].result.low) and mine[0]["high"] == pytest.approx(
        theirs[0].result.high)
    assert f"answer {theirs[0].line()}" in out  # `run` printed the race's own decision
    report = (tmp_path / "runs/race_tiny/report/report.md").read_text()
    assert "How the race reached these answers" in report
    analysis = json.loads((tmp_path / "runs/race_tiny/report/analysis.json").read_text())
    assert analysis["questions"]["race"]["seeds_per_candidate"] == raced.seeds_used
