"""`archsearch lesion`: the JSON the issue asks for, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from cli_errors import one_error

from archsearch.cli import main
from archsearch.nn.build import build
from tests.conftest import CIFAR10_ARCHIVE


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trainer-style checkpoint of resnet-8 (untrained weights: the mechanics, not the claims)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lesion") / "checkpoint.pt"
    torch.save({"model": build("resnet-8").state_dict(), "name": "resnet-8", "epoch": 1, "history": [],
                "config": {"dataset": "cifar10", "val_size": 200, "split_seed": 3}}, path)
    return path


@pytest.fixture
def data_env(cifar10, monkeypatch: pytest.MonkeyPatch) -> None:
    del cifar10  # decoded once per session into the session cache, which the command then reads
    monkeypatch.setenv("ARCHSEARCH_DATA", os.environ.get("ARCHSEARCH_DATA", CIFAR10_ARCHIVE))


def test_lesion_json(checkpoint: Path, data_env: None, capsys: pytest.CaptureFixture) -> None:
    argv = ["lesion", "resnet-8", "--weights", str(checkpoint), "--subset", "60", "--draws", "2", "--seed", "4",
            "--json", "--paths", "--path-samples", "1", "--threads", "1"]
    threads = torch.get_num_threads()
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["name"] == "resnet-8" and out["images"] == 60 and out["split"] == "validation"
    assert 0 <= out["base_error"] <= 100 and out["bn"] == "trained" and out["paths"] == 8
    assert [(r["stage"], r["unit"], r["part"]) for r in out["single"]] == [(1, 1, "unit"), (2, 1, "unit"),
                                                                         (3, 1, "unit")]
    assert [r["downsampling"] for r in out["single"]] == [False, True, True]
    assert [(r["n"], r["paths"], r["draws"]) for r in out["removed"]] == [(1, 4, 2), (2, 2, 2), (3, 1, 1)]
    assert set(out["removed"][0]) >= {"n", "error_mean", "error_std", "paths"}
    assert out["effective_paths"]["paths"] == [1, 3, 3, 1]
    assert abs(sum(out["effective_paths"]["share"]) - 1) < 1e-9
    assert torch.get_num_threads() == threads  # --threads is this command's, restored afterwards
    assert main(argv) == 0  # seeded: the same draws and errors again
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out


def test_lesion_text_names_each_deletion(checkpoint: Path, data_env: None, capsys: pytest.CaptureFixture) -> None:
    assert main(["lesion", "resnet-8", "--weights", str(checkpoint), "--subset", "20", "--max-removed", "1",
                 "--recalibrate-bn", "32", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "resnet-8: 20 validation images, BN recalibrated" in out
    assert "stage 2 unit 1 unit (downsampling)" in out and "8 paths through 3 units" in out


def test_lesion_errors_are_one_line(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "none.pt"
    line = one_error(capsys, ["lesion", "resnet-8", "--weights", str(missing)])
    assert f"{missing}: no such checkpoint file" in line
    bad_name = one_error(capsys, ["lesion", "resnot-8", "--weights", str(checkpoint)])
    assert bad_name.startswith("archsearch lesion: error:") and "resnot-8" in bad_name
    other = one_error(capsys, ["lesion", "resnet-14", "--weights", str(checkpoint)])
    assert "checkpoint is for resnet-8, not resnet-14" in other
    state = tmp_path / "state.pt"
    torch.save(build("resnet-14").state_dict(), state)
    assert "weights do not fit resnet-8" in one_error(capsys, ["lesion", "resnet-8", "--weights", str(state)])
    assert "give --weights CKPT" in one_error(capsys, ["lesion", "resnet-8"])
    assert checkpoint.exists()


def test_a_studys_best_per_family_is_lesioned_and_kept_for_the_report(
        checkpoint: Path, data_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    import optuna
    import yaml
    from optuna.trial import TrialState, create_trial

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCHSEARCH_RUNS", str(tmp_path / "runs"))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="les")
    other = tmp_path / "other.pt"
    torch.save({"model": build("resnet-8").state_dict(), "name": "resnet-8", "history": [],
                "config": {"val_size": 100}}, other)
    for number, (value, ckpt) in enumerate([(40.0, checkpoint), (45.0, other), (50.0, None)]):
        attrs = {"name": "resnet-8" if number < 2 else "dmrnet-8-K2", "family": "resnet" if number < 2 else "dmrnet",
                 "seed": number, "epochs": 1, "max_epochs": 1, "full_fidelity": True}
        if ckpt is not None:
            attrs["checkpoint"] = str(ckpt)
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, user_attrs=attrs))
    (tmp_path / "les.yaml").write_text(yaml.safe_dump({"name": "les", "storage": storage}))
    argv = ["lesion", "les.yaml", "--per-family", "--subset", "20", "--draws", "1", "--max-removed", "1", "--json",
            "--threads", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # the dmrnet has no checkpoint: only resnet-8 is lesioned, from its best seed
    out = json.loads(lines[0])
    assert out["name"] == "resnet-8" and out["weights"] == str(checkpoint) and out["study"] == "les"
    assert json.loads((tmp_path / "runs" / "les" / "lesion" / "resnet-8.json").read_text()) == out
    line = one_error(capsys, ["lesion", "les.yaml", "--weights", str(checkpoint)])
    assert "--weights applies to one architecture" in line
