"""Ray reserves one GPU per CUDA device a model-parallel trial spreads over; preflight refuses too few."""

from __future__ import annotations

import yaml

from archsearch.cli import main
from archsearch.orchestrate.ray_backend import trial_resources
from archsearch.study.config import Resources


def test_model_parallel_trials_reserve_their_gpus() -> None:
    res = Resources(cpus=2, gpus=0)
    assert trial_resources(res, ["cuda:0", "cuda:1"]) == {"cpu": 2.0, "gpu": 2.0}
    assert trial_resources(Resources(cpus=1, gpus=0.5), ["cuda:0", "cuda:1", "cuda:2"])["gpu"] == 3.0
    assert trial_resources(res, ["cpu", "cpu"]) == {"cpu": 2.0}
    assert trial_resources(res, None) == {"cpu": 2.0}


def test_too_few_gpus_for_model_parallel_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARCHSEARCH_RUNS", raising=False)
    monkeypatch.setattr("archsearch.orchestrate.preflight.local_gpus", lambda: 1)
    study = {"name": "mp", "space": {"candidates": [{"name": "multiresnet-8-k2"}]}, "n_trials": 1,
             "resources": {"cpus": 1, "gpus": 0},
             "train": {"epochs": 1, "subset": 64, "val_size": 64, "model_parallel": ["cuda:0", "cuda:1"]}}
    (tmp_path / "mp.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", "mp.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "train.model_parallel: 2 CUDA devices per trial, but this machine has 1 GPUs" in err[0]
    assert "(--set train.model_parallel=null)" in err[0]
    assert not (tmp_path / "runs").exists()
