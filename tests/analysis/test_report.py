"""The report renders from a synthetic Optuna study and is attached to it; the CLI finds studies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState, create_trial
from optuna_dashboard import get_note

from archsearch.analysis.answers import analyze
from archsearch.analysis.report import render_markdown, write_report
from archsearch.cli import main
from archsearch.commands.report import study_file_location
from archsearch.study.records import TrialRecord

CANDIDATES = [  # name, family, depth, k, true error, budget, width
    ("resnet-110", "resnet", 110, 1, 6.0, "1.7M", 16),
    ("multiresnet-8-k23", "multiresnet", 8, 23, 7.5, "1.7M", 16),
    ("multiresnet-14-k10", "multiresnet", 14, 10, 6.5, "1.7M", 16),
    ("multiresnet-20-k6", "multiresnet", 20, 6, 5.9, "1.7M", 16),
    ("multiresnet-30-k4", "multiresnet", 30, 4, 5.6, "1.7M", 16),
    ("postresnet-98", "postresnet", 98, 1, 6.1, "1.7M", 16),
    ("dmrnet-50-K2", "dmrnet", 50, 2, 5.5, "1.7M", 16),
    ("dmrnet-26-K4", "dmrnet", 26, 4, 5.8, "1.7M", 16),
    ("wrn-28-2", "wrn", 28, 1, 5.4, "1.7M", 32),
    ("wrn-16-4", "wrn", 16, 1, 5.7, "1.7M", 64),
]


def synthetic_study(storage: str, name: str = "synthetic", seeds: int = 3,
                    test_shift: float | None = None) -> optuna.Study:
    """A finished study as archsearch.orchestrate.searcher records it: seeds per name, rungs at epochs 2 and 4 of 8."""
    rng = np.random.default_rng(0)
    study = optuna.create_study(storage=storage, study_name=name)
    trials = []
    for cname, family, depth, k, err, budget, width in CANDIDATES:
        for seed in range(seeds):
            final = err + rng.normal(0, 0.15)
            curve = {e: final + 30.0 / e + rng.normal(0, 0.2) for e in range(1, 9)}
            curve[8] = final
            attrs = {"name": cname, "family": family, "depth": depth, "branches": k, "width": width,
                     "params": 1.7e6 * (1 + rng.normal(0, 0.01)), "macs": 2.5e8 * depth ** 0.3 / 4,
                     "seed": seed, "budget": budget, "max_epochs": 8, "latency_b1_ms": 1 + depth / 40,
                     "path_length_mean": 2 + depth / 2 / (k + 1)}
            tested = {} if test_shift is None else {"test_error": final + test_shift}
            trials.append(create_trial(state=TrialState.COMPLETE, value=final, intermediate_values=curve,
                                       user_attrs={**attrs, "epochs": 8, "full_fidelity": True, **tested}))
        stop = 2 if err > 6 else 4  # ASHA stopped a fourth seed early
        trials.append(create_trial(
            state=TrialState.PRUNED, intermediate_values={e: 1.0 for e in range(1, stop + 1)},
            user_attrs={**attrs, "seed": seeds, "epochs": stop, "full_fidelity": False}))
    study.add_trials(trials)
    return study


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("study") / "study.db"
    synthetic_study(f"sqlite:///{path}")
    return f"sqlite:///{path}"


def test_report_renders_and_is_attached_to_the_study(study_db, tmp_path):
    study = optuna.load_study(study_name="synthetic", storage=study_db)
    out = tmp_path / "report"
    path = write_report(study, out, seed=0, n_boot=300, artifact_dir=tmp_path / "artifacts")
    text = path.read_text(encoding="utf-8")
    answers = text.index("## Answers")
    assert answers < text.index("## Trials by architecture") < text.index("## Figures")
    assert "n₀ = " in text and "**K=2**" in text and "wrn-28-2" in text
    assert "`multiresnet-30-k4`" in text and "| 3 |" in text  # table row with 3 full-fidelity seeds
    for key in ("n0", "best_k", "wrn", "edf", "pareto", "path_length", "fidelity"):
        assert (out / "figures" / f"{key}.png").stat().st_size > 1000
        assert (out / "figures" / f"{key}.html").stat().st_size > 1000
        assert f"](figures/{key}.png)" in text and f"](figures/{key}.html)" in text
    assert (out / "figures" / "plotly.min.js").is_file()  # the HTML works offline
    data = json.loads((out / "analysis.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["n0"][0]["status"] == "crossed"

    fresh = optuna.load_study(study_name="synthetic", storage=study_db)
    assert fresh.user_attrs["report_path"] == str(path.resolve())
    metas = get_all_artifact_meta(fresh)
    assert {m.filename for m in metas} == {"report.md", "synthetic-report.zip"}
    assert (tmp_path / "artifacts" / fresh.user_attrs["report_artifact_id"]).read_text(encoding="utf-8") == text
    assert "## Answers" in get_note(fresh) and str(path.resolve()) in get_note(fresh)


def test_report_of_a_study_without_full_fidelity_trials(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}", study_name="early")
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={1: 50.0},
                                 user_attrs={"name": "dmrnet-50-K2", "family": "dmrnet", "branches": 2,
                                             "budget": "1.7M", "epochs": 1, "max_epochs": 8}))
    text = write_report(study, tmp_path / "r", n_boot=100).read_text(encoding="utf-8")
    assert "insufficient data: no full-fidelity COMPLETE dmrnet trial (1 pruned)" in text
    assert "No Multi-ResNet/ResNet trials" in text


def test_cli_storage_form(study_db, tmp_path, capsys):
    out = tmp_path / "cli-report"
    assert main(["report", "--storage", study_db, "--study", "synthetic", "--out", str(out), "--n-boot", "200"]) == 0
    assert f"report written to {out / 'report.md'}" in capsys.readouterr().out
    assert (out / "report.md").is_file() and (out / "artifacts").is_dir()


def test_cli_study_file_form_defaults_to_runs_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    synthetic_study("sqlite:///runs/tiny/study.db", name="tiny", seeds=2)
    (tmp_path / "tiny.yaml").write_text("name: tiny\nspace: whatever.yaml\n")
    assert main(["report", "tiny.yaml", "--n-boot", "100"]) == 0
    assert "report written to runs/tiny/report/report.md" in capsys.readouterr().out
    assert (tmp_path / "runs" / "tiny" / "artifacts").is_dir()


def test_study_file_is_read_by_the_study_loader(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[2]
    name, url = study_file_location(root / "studies" / "quickstart.yaml")
    assert name == "quickstart" and url == f"sqlite:///{tmp_path / 'runs' / 'quickstart' / 'study.db'}"


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--study", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no study database" in err
    assert main(["report"]) == 2
    assert "--storage" in capsys.readouterr().err


def test_report_names_the_training_precision_and_warns_when_mixed(tmp_path):

    def rec(n, precision, compiled=None):
        return TrialRecord(number=n, state="COMPLETE", value=10.0 + n, name=f"resnet-{8 + 6 * (n % 2)}",
                           family="resnet", depth=8, seed=n, epochs=4, max_epochs=4, full_fidelity=True,
                           precision=precision, compiled=compiled)

    same = analyze([rec(i, "bf16") for i in range(4)], n_boot=50)
    assert same.precisions == {"bf16": 4} and not same.mixed_precision
    assert "Training precision: bf16 4 trials; training step: unrecorded 4" in render_markdown("s", same, [], tmp_path)
    steps = analyze([rec(i, "fp32", compiled=i < 3) for i in range(4)], n_boot=50)
    assert steps.compiled == {"compiled": 3, "eager": 1}
    assert "training step: compiled 3, eager 1 (`train.compile`)." in render_markdown("s", steps, [], tmp_path)
    mixed = analyze([rec(i, "bf16" if i < 2 else "fp32") for i in range(4)], n_boot=50)
    assert mixed.mixed_precision
    assert "Warning: the answers mix training precisions (bf16 2, fp32 2 trials)" in render_markdown(
        "s", mixed, [], tmp_path)


def test_report_opens_with_the_studys_questions(study_db, tmp_path):
    """Without stored questions the report derives them per budget (one plain reference: n₀; best K per family;
    best network) and answers each from its own candidates, before the exploratory views."""
    study = optuna.load_study(study_name="synthetic", storage=study_db)
    path = write_report(study, tmp_path / "report", seed=0, n_boot=300, artifact_dir=tmp_path / "artifacts")
    text = path.read_text(encoding="utf-8")
    assert text.index("## The study's questions") < text.index("## Answers") < text.index("## Trials by architecture")
    assert "derived from the trials" in text
    assert "stopped early by per-trial ASHA: the answers rest on the seeds that survived" in text  # 4th seeds
    for qid in ("`n0_1.7M`", "`best_K_dmrnet_1.7M`", "`best_K_multiresnet_1.7M`", "`best_1.7M`"):
        assert qid in text
    data = json.loads((tmp_path / "report" / "analysis.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    n0 = next(q for q in data["questions"]["validation"] if q["id"] == "n0_1.7M")
    assert n0["seeds"] == {"multiresnet-14-k10": 3, "multiresnet-20-k6": 3, "multiresnet-30-k4": 3,
                           "multiresnet-8-k23": 3, "resnet-110": 3}  # the pruned fourth seeds never count
    assert n0["signs"]["8"] == "+" and n0["signs"]["30"] == "-"  # planted: 7.5 vs 6.0 and 5.6 vs 6.0
    assert data["questions"]["test"] is None  # no trial was evaluated on the test split


def test_report_answers_the_stored_questions(tmp_path):
    """Questions stored when the run started are what the report answers (not re-derived), and a test-split
    answer sits beside the validation one when trials were tested."""
    from archsearch.study.asked import QUESTIONS_ATTR, to_json
    from archsearch.study.questions import CandidateInfo, Question, resolve

    storage = f"sqlite:///{tmp_path / 'q.db'}"
    study = synthetic_study(storage, name="asked", test_shift=0.5)
    infos = [CandidateInfo(c[0], c[1], c[5], True, (), c[2], c[3], c[6]) for c in CANDIDATES]
    asked = resolve([Question(id="wide_vs_deep", kind="compare", a={"names": ["wrn-28-2"]},
                              b={"names": ["resnet-110"]})], infos)
    study.set_user_attr(QUESTIONS_ATTR, to_json(asked))
    path = write_report(study, tmp_path / "report", seed=0, n_boot=300, artifact_dir=tmp_path / "artifacts")
    text = path.read_text(encoding="utf-8")
    assert "as stored when the run started" in text and "`wide_vs_deep`" in text and "`n0_1.7M`" not in text
    data = json.loads((tmp_path / "report" / "analysis.json").read_text())
    [val], [test] = data["questions"]["validation"], data["questions"]["test"]
    assert val["decision"] == "-" and test["decision"] == "-"  # planted 5.4 vs 6.0, 3 seeds of sd 0.15
    assert abs(test["estimate"] - val["estimate"]) < 1e-9  # the same +0.5 shift on both sides
