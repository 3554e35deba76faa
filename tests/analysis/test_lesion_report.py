"""The report draws what `archsearch lesion` wrote into runs/<study>/lesion/: curves, single deletions, paths."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState, create_trial

from archsearch.analysis.lesion_plots import (
    CURVES_CAPTION,
    PATHS_CAPTION,
    SINGLE_CAPTION,
    lesion_figures,
    load_lesions,
)
from archsearch.analysis.report import write_report


def _result(name: str, family: str, base: float, units: int, paths: bool) -> dict:
    out = {"name": name, "family": family, "base_error": base, "units": units, "paths": 2**units, "bn": "trained",
           "single": [{"stage": 1, "unit": i + 1, "part": "unit", "downsampling": i == 1, "error": base + i}
                      for i in range(units)],
           "removed": [{"n": n, "error_mean": base + 3 * n, "error_std": 0.5, "paths": 2 ** (units - n), "draws": 3}
                       for n in range(1, units + 1)]}
    if paths:
        out["effective_paths"] = {"units": units, "lengths": list(range(units + 1)), "range": [1, 2],
                                  "share": [1 / (units + 1)] * (units + 1)}
    return out


def _write(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "resnet-26.json").write_text(json.dumps(_result("resnet-26", "resnet", 30.0, 4, True)))
    (folder / "resnet-20.json").write_text(json.dumps(_result("resnet-20", "resnet", 33.0, 3, True)))
    (folder / "multiresnet-14-k2.json").write_text(json.dumps(_result("multiresnet-14-k2", "multiresnet", 31.0, 2,
                                                                      False)))
    (folder / "broken.json").write_text("{not json")


def test_the_best_lesioned_network_of_each_family_is_drawn(tmp_path: Path) -> None:
    _write(tmp_path / "lesion")
    assert [r["name"] for r in load_lesions(tmp_path / "lesion")] == ["resnet-26", "multiresnet-14-k2"]
    figs = lesion_figures(tmp_path / "lesion", tmp_path / "figures")
    assert [f.key for f in figs] == ["lesion_curves", "lesion_single", "effective_paths"]
    assert [f.caption for f in figs] == [CURVES_CAPTION, SINGLE_CAPTION, PATHS_CAPTION]
    assert all(f.png.stat().st_size > 0 and f.html.stat().st_size > 0 for f in figs)
    assert lesion_figures(tmp_path / "none", tmp_path / "figures") == []


def test_the_report_shows_the_lesion_figures_with_their_sentence(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHSEARCH_RUNS", str(tmp_path / "runs"))
    _write(tmp_path / "runs" / "early" / "lesion")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}", study_name="early")
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={1: 50.0},
                                 user_attrs={"name": "resnet-26", "family": "resnet", "branches": 1,
                                             "budget": "0.4M", "epochs": 1, "max_epochs": 8}))
    text = write_report(study, tmp_path / "r", n_boot=100).read_text(encoding="utf-8")
    assert CURVES_CAPTION in text and PATHS_CAPTION in text
    assert "![Lesions: error vs residual units deleted at test time](figures/lesion_curves.png)" in text
    assert (tmp_path / "r" / "figures" / "effective_paths.html").exists()
