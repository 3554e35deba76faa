"""Export round trip: standalone code loads archsearch's weights and computes the same network.

The exported modules are run in a fresh interpreter that cannot import archsearch (`python -I -S`
with only site-packages' directory on sys.path, so the editable install's hook never runs), on
weights that were trained a few steps and had their BN statistics randomised.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from networks import EXPORT_MEMBERS
from torch import nn

from archsearch.arch.spec import parse_name
from archsearch.cli import main
from archsearch.errors import ArchsearchError
from archsearch.export.model_card import reproduce_command
from archsearch.export.templates import module_name
from archsearch.export.verify import foreign_imports, load_module, verify_export
from archsearch.export.writer import (
    export_architecture,
    export_study,
    is_spec_mapping,
    rank_trials,
    study_location,
)
from archsearch.nn.build import build
from archsearch.nn.complexity import count, warp_macs

SEED_INIT = 123
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # torch's own fwAD setup


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """These networks are tiny: one thread is fastest, and far faster on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _is_warp(name: str) -> bool:
    spec = parse_name(name)
    return spec.unit == "warp" and spec.warp_k > 1


def _perturb(model: nn.Module, seed: int) -> None:
    """An SGD step in train mode (small images keep it cheap), then random BN affine and statistics."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(1):
        x = torch.randn(4, 3, 16, 16, generator=g)
        y = torch.randint(0, model.spec.num_classes, (4,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.add_(0.1 * torch.randn(c, generator=g))
                m.bias.add_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))


DRIVER = textwrap.dedent('''
    import importlib.util
    import json
    import sys
    import warnings

    job = json.load(open(sys.argv[1]))
    sys.path.append(job["site_packages"])  # torch and fvcore; no .pth hook, so no editable archsearch
    assert importlib.util.find_spec("archsearch") is None, "archsearch must not be importable here"
    try:
        import archsearch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("archsearch imported")
    import torch
    from fvcore.nn import FlopCountAnalysis

    x = torch.load(job["input"])
    results = {}
    for item in job["members"]:
        spec = importlib.util.spec_from_file_location(item["module"], item["code"])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        model = mod.build_model(weights=item["weights"]).eval()  # load_state_dict is strict
        res = {"doc": mod.__doc__, "params": sum(p.numel() for p in model.parameters()),
               "keys": list(model.state_dict())}
        with torch.no_grad():
            res["out"] = model(x)
        if item["fvcore"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fca = FlopCountAnalysis(model, torch.zeros(1, 3, 32, 32))
                fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                res["macs"] = int(fca.total())
        torch.manual_seed(0)
        model.train()
        res["train_out"] = model(x).detach()
        res["train_state"] = model.state_dict()
        torch.manual_seed(job["seed_init"])
        res["init_state"] = mod.build_model().state_dict()
        results[item["name"]] = res
    results["modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "archsearch")
    torch.save(results, job["out"])
''')


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Export every member with perturbed weights; run all exported files in one fresh process."""
    tmp = tmp_path_factory.mktemp("export")
    out_dir = tmp / "exports"
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    torch.save(x, tmp / "input.pt")
    members, ours = [], {}
    for i, name in enumerate(EXPORT_MEMBERS):
        model = build(name, strategy="loop")
        _perturb(model, seed=i)
        state = model.state_dict()
        ckpt = tmp / f"ckpt-{i}.pt"
        if i % 3 == 0:  # a trainer checkpoint
            torch.save({"version": 1, "name": name, "epoch": 2, "model": state,
                        "config": {"seed": 7, "epochs": 3, "lr": 0.05}}, ckpt)
        elif i % 3 == 1:  # a raw state_dict
            torch.save(state, ckpt)
        else:  # a torch.compile'd model's state_dict
            torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, ckpt)
        result = export_architecture(name, out_dir, weights=ckpt, metrics={"val_error": 12.5, "seed": 7},
                                     provenance={"study": "unit", "trial": i, "trial_id": 100 + i})
        model.eval()
        with torch.no_grad():
            out = model(x)
        train_model = build(name, strategy="loop")
        train_model.load_state_dict(state)
        torch.manual_seed(0)
        train_out = train_model.train()(x).detach()
        torch.manual_seed(SEED_INIT)
        init_state = build(name, strategy="loop").state_dict()
        macs = None if _is_warp(name) else count(name)["macs"]  # fvcore_macs of a fresh build
        ours[name] = {"result": result, "out": out, "state": state, "macs": macs, "train_out": train_out,
                      "train_state": train_model.state_dict(), "init_state": init_state,
                      "params": sum(p.numel() for p in model.parameters())}
        members.append({"name": name, "module": module_name(result.name), "code": str(result.code),
                        "weights": str(result.weights), "fvcore": not _is_warp(name)})
    job = {"site_packages": str(Path(torch.__file__).resolve().parents[1]), "members": members,
           "input": str(tmp / "input.pt"), "out": str(tmp / "results.pt"), "seed_init": SEED_INIT}
    (tmp / "job.json").write_text(json.dumps(job))
    (tmp / "driver.py").write_text(DRIVER)
    env = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}  # nothing that could reach archsearch
    proc = subprocess.run([sys.executable, "-I", "-S", str(tmp / "driver.py"), str(tmp / "job.json")],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = torch.load(tmp / "results.pt", weights_only=False)
    return {"ours": ours, "theirs": theirs, "out_dir": out_dir}


def test_fresh_process_cannot_import_archsearch(round_trip: dict[str, Any]) -> None:
    assert round_trip["theirs"]["modules"] == []


@pytest.mark.parametrize("name", EXPORT_MEMBERS)
def test_exported_network_equals_archsearch(round_trip: dict[str, Any], name: str) -> None:
    ours, theirs = round_trip["ours"][name], round_trip["theirs"][name]
    assert theirs["keys"] == list(ours["state"])  # same names, same order: strict loads both ways
    build(name, strategy="loop").load_state_dict(theirs["train_state"], strict=True)
    assert theirs["params"] == ours["params"] == count(name)["params"]
    assert not torch.equal(ours["out"][0], ours["out"][1])  # a real input, not a degenerate one
    # warp: archsearch computes the derivative terms with BN's fused kernels (nn/warp_jvp), the export writes the
    # same equations in plain torch, so they agree to reassociation (decisions.md), not to the last bit
    tol = {"rtol": 1e-5, "atol": 1e-5} if name.startswith("warpnet") else {"rtol": 0, "atol": 1e-6}
    torch.testing.assert_close(theirs["out"], ours["out"], **tol)
    # train mode (batch statistics, running-stat updates, dropout masks in the same order) agrees too
    torch.testing.assert_close(theirs["train_out"], ours["train_out"], rtol=0, atol=1e-6)
    for key, value in ours["train_state"].items():
        torch.testing.assert_close(theirs["train_state"][key], value, rtol=0, atol=1e-6, msg=key)
    # and a fresh build_model() under a seed is archsearch's initialisation under that seed
    for key, value in ours["init_state"].items():
        assert torch.equal(theirs["init_state"][key], value), key


@pytest.mark.parametrize("name", EXPORT_MEMBERS)
def test_exported_macs_and_docstring(round_trip: dict[str, Any], name: str) -> None:
    ours, theirs = round_trip["ours"][name], round_trip["theirs"][name]
    spec = parse_name(name)
    macs = count(name)["macs"]
    if _is_warp(name):  # fvcore cannot trace forward-mode AD: archsearch's warp rule
        assert macs == warp_macs(spec)
    else:
        assert theirs["macs"] == ours["macs"] == macs
    doc = theirs["doc"]
    for text in (spec.name, f"{ours['params']:,}", f"{macs:,}", "12.50 %", "seed 7",
                 f"unit, trial {EXPORT_MEMBERS.index(name)} (trial id {100 + EXPORT_MEMBERS.index(name)})"):
        assert text in doc, text


def test_exported_code_passes_ruff(round_trip: dict[str, Any]) -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    files = sorted(str(p) for p in round_trip["out_dir"].glob("*.py"))
    assert len(files) == len(EXPORT_MEMBERS)
    for extra in ([], ["--select", "E,F,W,I,B,UP", "--line-length", "120", "--target-version", "py310"]):
        proc = subprocess.run([ruff, "check", "--isolated", "--no-cache", *extra, *files],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("name", "present", "absent"), [
    ("resnet-14", ["PadShortcut", "PreActUnit"],
     ["MergeRunUnit", "PostUnit", "WarpOperator", "Dropout", "fwAD", "conv(width, 4 * width"]),
    ("resnet-11-bottleneck", ["conv(width, 4 * width, 1)", "nn.Conv2d(in_c, out_c, 1, stride=stride"],
     ["PadShortcut", "import torch.nn.functional"]),
    ("wrn-10-2-b131-drop0.3", ["nn.Dropout(0.3)", "conv(in_c, width, 1, stride)", "conv(width, width, 3)"],
     ["PadShortcut", "MergeRunUnit"]),
    ("multiresnet-8-k3", ["for _ in range(3)"], ["MergeRunUnit"]),
    ("dmrnet-8-K3", ["MergeRunUnit", "last=True", "merged / 3"], ["PreActUnit", "PostUnit", "sum_shared"]),
    ("dvanet-8-K3", ["PostUnit", "for _ in range(3)", "nn.BatchNorm2d(out_c)"], ["MergeRunUnit", "preact"]),
    ("warpnet-13-1", ["fwAD", "return x + f1 + f2 + d2x"], ["FrozenBNStatistics", "PreActUnit"]),
    ("warpnet-13-1-v2", ["return x + f1 + f2 + d21"], ["FrozenBNStatistics"]),
    ("warpnet-19-1-K3-v2", ["FrozenBNStatistics", "x + f1 + f2 + f3 + d21 + d31 + d32"], ["Dropout"]),
    ("warpnet-13-1-nobn", ["F.conv2d(t, layer.weight"], ["fwAD"]),
    ("warpnet-13-1-K1", ["return x + self.functions[0](x)"], ["fwAD", "value_and_jvps"]),
])
def test_only_the_blocks_the_network_uses(round_trip: dict[str, Any], name: str, present: list[str],
                                          absent: list[str]) -> None:
    source = round_trip["ours"][name]["result"].code.read_text()
    assert foreign_imports(source) == []
    assert "import archsearch" not in source and "from archsearch" not in source
    for text in present:
        assert text in source, text
    for text in absent:
        assert text not in source, text


def test_untrained_export_and_class_count(tmp_path: Path) -> None:
    result = export_architecture("resnet-8", tmp_path, num_classes=100)
    assert result.weights is None and result.paths == [result.code, result.card]
    mod = load_module(result.code)
    assert mod.NUM_CLASSES == 100 and mod.build_model().head[-1].out_features == 100
    assert "untrained" in result.card.read_text()
    # a bare name takes its classes from the checkpoint's head
    model = build("resnet-8", num_classes=7, strategy="loop")
    torch.save({"model": model.state_dict()}, tmp_path / "c.pt")
    result = export_architecture("resnet-8", tmp_path / "seven", weights=tmp_path / "c.pt")
    assert load_module(result.code).NUM_CLASSES == 7
    with pytest.raises(ArchsearchError, match="do not fit"):
        export_architecture("resnet-14", tmp_path / "bad", weights=tmp_path / "c.pt")


def test_verification_catches_a_wrong_export(tmp_path: Path) -> None:
    model = build("resnet-8", strategy="loop")
    result = export_architecture("resnet-8", tmp_path)
    source = result.code.read_text()
    wrong = source.replace("return self.shortcut(a) + self.functions.sum_shared(a)",
                           "return self.functions.sum_shared(a)")
    assert wrong != source
    result.code.write_text(wrong)
    with pytest.raises(ArchsearchError, match="outputs differ"):
        verify_export(result.code, model)
    result.code.write_text("import numpy\n" + source)
    with pytest.raises(ArchsearchError, match="imports \\['numpy'\\]"):
        verify_export(result.code, model)


# ------------------------------------------------------------------------------- studies
def _trial(optuna: Any, value: float | None, name: str, seed: int, state: str = "COMPLETE",
           full: bool = True, checkpoint: str | None = None, test_error: float | None = None) -> Any:
    spec = parse_name(name)
    c = count(name)
    attrs = {"name": spec.name, "spec": spec.to_json(), "family": spec.family, "params": c["params"],
             "macs": c["macs"], "seed": seed, "epochs": 3 if full else 1, "max_epochs": 3, "full_fidelity": full,
             "budget": "tiny"}
    if checkpoint is not None:
        attrs["checkpoint"] = checkpoint
    if test_error is not None:
        attrs["test_error"] = test_error
    return optuna.trial.create_trial(
        state=getattr(optuna.trial.TrialState, state), value=value if state == "COMPLETE" else None,
        params={"depth": spec.depth}, distributions={"depth": optuna.distributions.IntDistribution(8, 20)},
        user_attrs=attrs, intermediate_values={1: 50.0, 3: value} if value is not None else {})


@pytest.fixture
def study(tmp_path: Path) -> tuple[str, str, dict[str, Any]]:
    """A small sqlite study: 4 architectures, seeds, a pruned and a low-fidelity trial, 2 checkpoints."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}"
    (tmp_path / "runs" / "tiny" / "trials").mkdir(parents=True)
    models = {}
    for name, seed in (("resnet-8", 0), ("dmrnet-8", 1)):
        model = build(name, strategy="loop")
        _perturb(model, seed)
        models[name] = model
        ckpt_dir = tmp_path / "runs" / "tiny" / "trials" / f"{name}-s{seed}"
        ckpt_dir.mkdir()
        torch.save({"version": 1, "name": name, "epoch": 3, "model": model.state_dict(),
                    "config": {"seed": seed, "epochs": 3, "lr": 0.05, "dataset": "cifar10"}},
                   ckpt_dir / "checkpoint.pt")
    s = optuna.create_study(study_name="tiny", storage=url, direction="minimize")
    s.add_trials([
        _trial(optuna, 10.0, "resnet-8", 0, checkpoint="runs/tiny/trials/resnet-8-s0", test_error=11.0),
        _trial(optuna, 12.0, "resnet-8", 1, checkpoint="runs/tiny/trials/missing"),
        _trial(optuna, 9.0, "multiresnet-8-k2", 0),  # mean 11.5, no checkpoint at all
        _trial(optuna, 14.0, "multiresnet-8-k2", 1),
        _trial(optuna, 6.0, "dmrnet-8", 0, checkpoint="runs/tiny/trials/gone"),  # best seed, lost file
        _trial(optuna, 7.0, "dmrnet-8", 1, checkpoint=str(tmp_path / "runs/tiny/trials/dmrnet-8-s1")),
        _trial(optuna, 1.0, "postresnet-8", 0, full=False),  # low fidelity: not ranked
        _trial(optuna, None, "dvanet-8", 0, state="PRUNED"),
        _trial(optuna, None, "dvanet-8", 1, state="FAIL"),
    ])
    return url, "tiny", models


def test_rank_trials_groups_seeds(study: tuple[str, str, dict[str, Any]]) -> None:
    import optuna

    url, name, _ = study
    ranked = rank_trials(optuna.load_study(study_name=name, storage=url).get_trials())
    assert [c.spec.name for c in ranked] == ["dmrnet-8", "resnet-8", "multiresnet-8-k2"]
    assert [c.mean for c in ranked] == [6.5, 11.0, 11.5]
    assert [t.user_attrs["seed"] for t in ranked[1].trials] == [0, 1]


def test_export_study_top_trials(study: tuple[str, str, dict[str, Any]], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url, name, models = study
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    results = export_study(url, name, out, top=2)
    assert [r.name for r in results] == ["dmrnet-8", "resnet-8"]
    dmr, res = results
    # dmrnet-8's best seed lost its checkpoint: the next seed's is exported, and the card says so
    assert dmr.metrics["seed"] == 1 and dmr.metrics["val_error"] == 7.0
    assert "was missing" in dmr.card.read_text()
    assert res.metrics["seed"] == 0 and res.metrics["test_error"] == 11.0
    for result in results:
        state = torch.load(result.weights, weights_only=True)
        for key, value in models[result.name].state_dict().items():
            assert torch.equal(state[key], value), key
        mod = load_module(result.code)
        assert "Study:            tiny (study id" in mod.__doc__
        net = mod.build_model(weights=str(result.weights)).eval()
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(net(x), models[result.name].eval()(x), rtol=0, atol=1e-6)
    card = res.card.read_text()
    command = "archsearch train resnet-8 --config resnet-8.train.yaml --seed 0 --epochs 3 --test"
    assert command in card
    settings = yaml.safe_load(res.train_config.read_text())
    assert settings == {"dataset": "cifar10", "epochs": 3, "lr": 0.05}  # the seed is on the command line
    train_cli = pytest.importorskip("archsearch.commands.train")
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(shlex.split(command)[2:])
    assert (args.arch, args.config, args.seed, args.epochs, args.test) == (
        "resnet-8", "resnet-8.train.yaml", 0, 3, True)
    assert pytest.importorskip("archsearch.train.config").make_config(settings).lr == 0.05
    assert "11.00 %" in card and "10.00 %" in card and "mean of 2 seeds 11.00" in card
    assert "| depth | 8 |" in card  # the sampled Optuna parameters
    ranking = (out / "ranking.md").read_text()
    assert "`dmrnet-8`" in ranking and "`resnet-8`" in ranking and "multiresnet" not in ranking
    # top beyond the ranked architectures: all three, the last one untrained
    results = export_study(url, name, tmp_path / "all", top=10)
    assert [r.name for r in results][-1] == "multiresnet-8-k2" and results[-1].weights is None


def test_cli_exports_study_and_architectures(study: tuple[str, str, dict[str, Any]], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    url, name, _ = study
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--storage", url, "--study", name, "--top", "1", "--out", "direct"]) == 0
    assert (tmp_path / "direct" / "dmrnet_8.py").is_file()
    printed = capsys.readouterr().out
    assert "1. dmrnet-8" in printed and "wrote direct/dmrnet-8.pt" in printed
    # a study file: default storage sqlite:///runs/<name>/study.db and out dir runs/<name>/export/
    (tmp_path / "tiny.yaml").write_text(
        "name: tiny\nspace:\n  candidates:\n    - {name: resnet-8}\n"
        "asha: {max_epochs: 3, grace_period: 1, reduction_factor: 2}\ntrain: {subset: 64, val_size: 32}\n")
    # a file the study loader rejects (its space is elsewhere) still names its study and storage
    (tmp_path / "loose.yaml").write_text("name: tiny\nspace: not-here.yaml\n")
    for file in ("tiny.yaml", "loose.yaml"):
        found_name, found_url = study_location(tmp_path / file)
        assert found_name == "tiny" and found_url.endswith("runs/tiny/study.db")
    assert main(["export", "tiny.yaml", "--top", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny" / "export").iterdir()) == [
        "dmrnet-8.md", "dmrnet-8.pt", "dmrnet-8.train.yaml", "dmrnet_8.py", "ranking.md", "resnet-8.md",
        "resnet-8.pt", "resnet-8.train.yaml", "resnet_8.py"]
    # one architecture by name, by spec file (name form and field form), with weights
    assert main(["export", "postresnet-8"]) == 0
    assert (tmp_path / "exports" / "postresnet_8.py").is_file()
    (tmp_path / "a.yaml").write_text("name: dmrnet-14-K2\n")
    (tmp_path / "b.yaml").write_text("unit: post\nunits: [1, 1, 1]\nbranches: 2\ncombine: merge\nshortcut: proj\n")
    assert is_spec_mapping({"name": "dmrnet-14"}) and not is_spec_mapping({"name": "tiny"})
    assert main(["export", "a.yaml", "--out", "a"]) == 0 and (tmp_path / "a" / "dmrnet_14.py").is_file()
    assert main(["export", "b.yaml", "--out", "b", "--weights", "runs/tiny/trials/dmrnet-8-s1"]) == 0
    assert (tmp_path / "b" / "dmrnet-8.pt").is_file()
    # weights of another network are refused with a one-line reason
    capsys.readouterr()
    assert main(["export", "dmrnet-8-K3", "--weights", "runs/tiny/trials/dmrnet-8-s1"]) == 2
    assert "checkpoint is for dmrnet-8, not dmrnet-8-K3" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("name: nosuch\n")
    cases = [["export", "s.yaml"], ["export", "resnet-13"], ["export", "--study", "x"],
             ["export", "resnet-8", "--top", "2"], ["export", "resnet-8", "--weights", "none.pt"]]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("archsearch export: error:") and "\n" not in err, err


def test_reproduce_command() -> None:
    cmd = reproduce_command(parse_name("wrn-16-4"), seed=3, epochs=200, config_file="wrn-16-4.train.yaml", test=True)
    assert cmd == "archsearch train wrn-16-4 --config wrn-16-4.train.yaml --seed 3 --epochs 200 --test"
    assert reproduce_command(parse_name("resnet-20")) == "archsearch train resnet-20"
