"""`archsearch curves` / `archsearch replay`: the CSV table, its one-line errors, and searches replayed on it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_errors import one_error

from archsearch.analysis.curves import read_curves, write_curves
from archsearch.cli import main
from archsearch.study.records import TrialRecord

NAMES = ("multiresnet-8-k2", "resnet-8")


def study_file(tmp_path: Path, **search) -> Path:  # noqa: ANN003
    data = {"name": "replayed", "space": {"candidates": [{"name": n} for n in NAMES]},
            "search": {"method": "race", "min_seeds": 3, "max_seeds": 10, **search},
            "questions": [{"id": "multi_vs_plain", "kind": "compare", "a": {"names": [NAMES[0]]},
                           "b": {"names": [NAMES[1]]}}],
            "train": {"epochs": 2, "subset": 256, "val_size": 128}}
    path = tmp_path / "replayed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def planted_csv(tmp_path: Path, effect: float, seeds: int = 10, seed: int = 0) -> Path:
    """Two epochs per trial; the last epoch carries the planted effect (multi worse by `effect`), noise 1."""
    rng = np.random.default_rng(seed)
    lines = ["name,seed,epoch,val_error,seconds"]
    for s in range(seeds):
        for name, mean in zip(NAMES, (60 + effect, 60.0), strict=True):
            lines += [f"{name},{s},1,{70 + rng.standard_normal():.3f},2.0",
                      f"{name},{s},2,{mean + rng.standard_normal():.3f},2.0"]
    path = tmp_path / "curves.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def replay_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["replay", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_replay_resolves_a_planted_answer_for_less_than_the_grid(tmp_path: Path, capsys) -> None:
    study, curves = study_file(tmp_path), planted_csv(tmp_path, effect=3.0)
    out = replay_json(capsys, str(study), "--curves", str(curves), "--slots", "2")
    (answer,) = out["answers"]
    assert answer["id"] == "multi_vs_plain" and answer["kind"] == "compare"
    assert answer["decision"] == "+" and answer["low"] > 0 and answer["estimate"] == pytest.approx(3, abs=1.2)
    assert out["grid_epochs"] == 2 * 2 * 10 and out["epochs_trained"] < out["grid_epochs"]
    assert out["race"]["looks"][0]["seeds"] == 3 and out["time_source"] == "the table's seconds"
    grid = replay_json(capsys, str(study), "--curves", str(curves), "--set", "search.method=grid")
    assert grid["epochs_trained"] == grid["grid_epochs"] == 40 and grid["rounds"] == 1
    assert grid["answers"][0]["decision"] == "+"
    assert grid["simulated_seconds"] == pytest.approx(10 * 2 * 4.0 / 2)  # 20 trials of 4 s on 2 slots


@pytest.mark.parametrize(("text", "message"), [
    ("name,seed,val_error\nresnet-8,0,50\n", "line 1: expected the header name,seed,epoch,val_error[,seconds]"),
    ("name,seed,epoch,val_error\nresnet-8,x,1,50\n", "line 2: seed: not an integer ('x')"),
    ("name,seed,epoch,val_error\nresnet-8,0,0,50\n", "line 2: epoch: epochs count from 1 (got 0)"),
    ("name,seed,epoch,val_error\nresnet-8,0,1,150\n", "line 2: val_error: a percentage in [0, 100]"),
    ("name,seed,epoch,val_error\nresnet-8,0,1,nan\n", "line 2: val_error: not finite"),
    ("name,seed,epoch,val_error\nresnet-8,0,1\n", "line 2: 3 fields, the header has 4"),
    ("name,seed,epoch,val_error\nresnet-8,0,1,50\nresnet-8,0,1,51\n", "line 3: a second row for name=resnet-8"),
    ("name,seed,epoch,val_error\n", "no rows below the header"),
])
def test_malformed_tables_are_one_line_errors(tmp_path: Path, capsys, text: str, message: str) -> None:
    curves = tmp_path / "bad.csv"
    curves.write_text(text)
    err = one_error(capsys, ["replay", str(study_file(tmp_path)), "--curves", str(curves)])
    assert str(curves) in err and message in err, err


def test_a_missing_row_the_search_asks_for_is_named(tmp_path: Path, capsys) -> None:
    curves = planted_csv(tmp_path, effect=0.0)
    kept = [line for line in curves.read_text().splitlines() if not line.startswith("resnet-8,2,2,")]
    curves.write_text("\n".join(kept) + "\n")
    err = one_error(capsys, ["replay", str(study_file(tmp_path)), "--curves", str(curves)])
    assert err.endswith("no row for name=resnet-8, seed=2, epoch=2 (the search asks for it)"), err


def test_curves_round_trip_from_records(tmp_path: Path) -> None:
    records = [TrialRecord(0, "COMPLETE", 61.0, "resnet-8", "resnet", seed=4, intermediate={1: 70.0, 2: 61.0},
                           train_seconds=6.0),
               TrialRecord(1, "PRUNED", None, "dmrnet-8", "dmrnet", seed=4, intermediate={1: 72.5}, train_seconds=3.0),
               TrialRecord(2, "FAIL", None, "dmrnet-8", "dmrnet", seed=5, intermediate={1: 80.0})]
    buf = io.StringIO()
    assert write_curves(records, buf) == 3
    assert buf.getvalue().splitlines() == ["name,seed,epoch,val_error,seconds", "dmrnet-8,4,1,72.5,3.0000",
                                           "resnet-8,4,1,70.0,3.0000", "resnet-8,4,2,61.0,3.0000"]
    path = tmp_path / "c.csv"
    path.write_text(buf.getvalue())
    table = read_curves(path)
    assert table.grid_epochs() == 3 and table.rows[("resnet-8", 4, 2)] == (61.0, 3.0)
