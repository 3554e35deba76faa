"""Search spaces: every sample sits on its budget, fits are the closest feasible point, bad files fail well."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from itertools import product
from pathlib import Path

import optuna
import pytest
import yaml

from archsearch.arch import cost as fastcount
from archsearch.arch.fit import Target, buildable_widths, fit_depth, fit_stem, fit_widths
from archsearch.arch.spec import parse_name
from archsearch.errors import ConfigError
from archsearch.space.fitting import fit_spec
from archsearch.space.schema import Budget
from archsearch.space.space import (
    grid,
    grid_params,
    load_space,
    random_samples,
    sample,
    space_fingerprint,
    space_from_dict,
)

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
SHIPPED = {"cifar10_budget1.7M", "n0_threshold", "merge_and_run_K", "wrn_depth_width", "warp", "quickstart"}
CONTRACT_ATTRS = {"name", "spec", "family", "depth", "branches", "width", "params", "macs", "budget",
                  "path_length_mean"}
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def spaces():
    return {p.stem: load_space(p) for p in SPACES}


def within(space, label: str, params: int, macs: int) -> bool:
    b = space.budget(label)
    ok = True
    if b.params is not None:
        ok &= abs(params - b.params) <= b.tolerance * b.params
    if b.macs is not None:
        tol = b.macs_tolerance if b.macs_tolerance is not None else b.tolerance
        ok &= abs(macs - b.macs) <= tol * b.macs
    return ok


# ------------------------------------------------------------------ shipped spaces
def test_all_spaces_shipped(spaces):
    assert SHIPPED <= set(spaces)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_200_seeded_samples_land_inside_their_budget(path, spaces):
    space = spaces[path.stem]
    samples = random_samples(space, 200, seed=123)
    assert len({c.name for c in samples}) > 1
    for c in samples:
        params, macs = fastcount.params_macs(c.spec)
        assert (params, macs) == (c.params, c.macs)
        if c.source == "candidate" and c.fit is None:  # a paper network listed as published
            assert c.on_budget == within(space, c.budget, params, macs)
            assert c.spec == parse_name(c.axes["name"], num_classes=c.spec.num_classes)
        else:
            assert c.on_budget and within(space, c.budget, params, macs), c.name


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_optuna_samples_land_inside_and_record_attrs(path, spaces):
    space = spaces[path.stem]
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=5))
    for i in range(25):
        trial = study.ask()
        spec = sample(trial, space)
        attrs = trial.user_attrs
        assert CONTRACT_ATTRS <= set(attrs)
        assert attrs["name"] == spec.name and json.loads(attrs["spec"]) == spec.to_dict()
        assert attrs["params"] == fastcount.cost(spec).params
        assert attrs["branches"] == spec.k and attrs["width"] == spec.widths[0]
        if attrs["on_budget"]:
            assert within(space, attrs["budget"], attrs["params"], attrs["macs"])
        study.tell(trial, float(i % 7))


def test_fvcore_cross_check_on_a_subset(spaces):
    from archsearch.nn.complexity import count

    for name in ("quickstart", "wrn_depth_width", "warp"):
        c = min(random_samples(spaces[name], 20, seed=5), key=lambda c: (c.spec.total_units * c.spec.k, c.macs))
        slow = count(c.spec)
        assert (slow["params"], slow["macs"]) == (c.params, c.macs)
        assert math.isclose(slow["path_length_mean"], c.path_length_mean, rel_tol=1e-12)


def test_same_seed_same_samples(spaces):
    space = spaces["cifar10_budget1.7M"]
    a = [c.name for c in random_samples(space, 50, seed=9)]
    assert a == [c.name for c in random_samples(load_space(space.path), 50, seed=9)]
    assert a != [c.name for c in random_samples(space, 50, seed=10)]
    names = []
    for _ in range(2):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
        names.append([sample(study.ask(), space).name for _ in range(30)])
    assert names[0] == names[1]


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_enqueued_grid_params_reproduce_the_grid(path, spaces):
    space = spaces[path.stem]
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for params in grid_params(space):
        study.enqueue_trial(params)
    for candidate in grid(space):
        trial = study.ask()
        assert sample(trial, space) == candidate.spec
        assert trial.user_attrs["budget"] == candidate.budget
        study.tell(trial, 1.0)
    assert len({tuple(sorted(p.items())) for p in grid_params(space)}) == len(grid(space))


def test_readable_parameter_names(spaces):
    params = {k for c in grid(spaces["cifar10_budget1.7M"]) for k in c.trial_params}
    assert {"family", "resnet.depth", "multiresnet.depth", "dmrnet.K", "warpnet.kw"} <= params
    assert any(p.startswith("multiresnet.k") for p in params)
    assert not any(p.startswith("resnet.k") for p in params)  # k only where it applies


def test_paper_pairs_and_fitted_pairs(spaces):
    n0 = {(c.name, c.budget, c.fit is not None): c for c in grid(spaces["n0_threshold"])}
    for name, label in [("resnet-110", "1.7M"), ("multiresnet-8-k23", "1.7M"), ("multiresnet-14-k10", "1.7M"),
                        ("multiresnet-8-k4", "0.29M"), ("resnet-24-u4.4.3", "0.29M"), ("resnet-68", "1.0M"),
                        ("multiresnet-20-k4", "1.0M")]:
        assert (name, label, False) in n0
    assert not n0[("multiresnet-20-k4", "1.0M", False)].on_budget  # the paper's 7.5 % gap
    fitted = [c for c in grid(spaces["n0_threshold"]) if c.source == "candidate" and c.fit is not None]
    assert len(fitted) == 8 and all(c.on_budget for c in fitted)
    mr = {c.axes["name"] for c in grid(spaces["merge_and_run_K"]) if c.source == "candidate" and c.fit is None}
    assert {"dmrnet-98-K1", "dmrnet-50-K2", "dmrnet-26-K4", "dmrnet-14-K8", "dmrnet-50-K1-c23",
            "dmrnet-50-K4-c12", "dmrnet-50-K8-c8"} <= mr


def test_every_family_but_warpnet_within_3_percent_at_1_7M(spaces):
    space = spaces["cifar10_budget1.7M"]
    families = {c.family for c in grid(space)}
    assert {"resnet", "multiresnet", "dvanet", "dmrnet", "wrn", "warpnet"} <= families
    for c in grid(space):
        assert abs(c.params - 1_700_000) <= 0.03 * 1_700_000


def test_macs_budget_and_filter_method():
    macs_space = space_from_dict({"budgets": [{"label": "45M MACs", "macs": "45M", "tolerance": "3%"}],
                                  "families": {"resnet": {"depth": [8, 14, 20]},
                                               "dmrnet": {"depth": [8, 14], "K": [2, 3]}}})
    for c in grid(macs_space):
        assert abs(c.macs - 45_000_000) <= 0.03 * 45_000_000 and c.on_budget
    filtered = space_from_dict({"budgets": [{"label": "0.3M", "params": "0.3M", "tolerance": "25%",
                                             "method": "filter"}],
                                "families": {"multiresnet": {"depth": [8, 14, 20], "k": [1, 2, 3, 4, 5]}}})
    names = {c.name for c in grid(filtered)}
    assert names == {"resnet-20", "multiresnet-8-k4", "multiresnet-8-k5", "multiresnet-14-k2"}
    assert all(c.fit is None and c.on_budget for c in grid(filtered))
    # only depth 8 leaves a choice of k: k is suggested there only
    assert sorted(tuple(p) for p in grid_params(filtered)) == sorted(
        [("multiresnet.depth", "multiresnet.k")] * 2 + [("multiresnet.depth",)] * 2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    assert {sample(study.ask(), filtered).name for _ in range(40)} == names


def test_fingerprint_is_stable_and_sensitive(tmp_path, spaces):
    raw = yaml.safe_load((ROOT / "search_spaces" / "quickstart.yaml").read_text())
    reordered = dict(reversed(list(raw.items())))
    assert space_fingerprint(space_from_dict(reordered)) == space_fingerprint(spaces["quickstart"])
    raw["description"] = "reworded"
    assert space_fingerprint(space_from_dict(raw)) == space_fingerprint(spaces["quickstart"])
    raw["budgets"][0]["tolerance"] = 0.06
    assert space_fingerprint(space_from_dict(raw)) != space_fingerprint(spaces["quickstart"])


# ------------------------------------------------------------------ fitting is exact (brute force)
def _brute_widths(spec, target, nominal, divisor, scale, box):
    best = None
    for widths in product(*box):
        if any(w % divisor for w in widths) or not buildable_widths(spec, widths):
            continue
        lo = max([scale[0]] + [(x - divisor) / w for x, w in zip(widths, nominal, strict=True)])
        hi = min([scale[1]] + [(x + divisor) / w for x, w in zip(widths, nominal, strict=True)])
        if not lo < hi:  # no common scaling rounds to these widths
            continue
        c = fastcount.cost(replace(spec, widths=widths))
        key = (*target.key((c.params, c.macs)), widths)
        best = key if best is None or key < best else best
    return best


@pytest.mark.parametrize("name,metric,value,divisor", [
    ("resnet-8", "params", 120_000, 1),
    ("dmrnet-8-K3", "params", 90_000, 1),
    ("multiresnet-8-k2", "macs", 30_000_000, 1),
    ("wrn-10-1", "params", 110_000, 2),
    ("resnet-11-bottleneck", "params", 40_000, 1),
])
def test_fitted_widths_are_the_closest_feasible(name, metric, value, divisor):
    spec = parse_name(name)
    target = Target(metric, value, 0.03)
    scale = (0.75, 1.5)
    fit = fit_widths(spec, target, divisor=divisor, scale=scale)
    nominal = spec.widths
    box = [range(max(1, int(scale[0] * w) - divisor), int(scale[1] * w) + divisor + 1) for w in nominal]
    best = _brute_widths(spec, target, nominal, divisor, scale, box)
    assert fit.spec.widths == best[2]
    assert target.key(fit.counts) == best[:2]


def test_fitted_uniform_width_depth_and_stem_are_the_closest():
    target = Target("params", 400_000, 0.03)
    spec = parse_name("resnet-20")
    got = fit_widths(spec, target, uniform=True, scale=(0.5, 3.0))
    options = [replace(spec, widths=(c, 2 * c, 4 * c)) for c in range(16, 49)]
    want = min(options, key=lambda s: (*target.key(fastcount.params_macs(s)), s.widths))
    assert got.spec == want

    units = list(range(1, 40))
    got = fit_depth(parse_name("dmrnet-14-K3"), target, units)
    want = min((replace(parse_name("dmrnet-14-K3"), units=(n, n, n)) for n in units),
               key=lambda s: (*target.key(fastcount.params_macs(s)), s.units))
    assert got.spec == want

    warp = parse_name("warpnet-25-2")
    got = fit_stem(warp, target, list(range(4, 40)))
    want = min((replace(warp, stem=c, widths=(2 * c, 4 * c, 8 * c)) for c in range(4, 40)),
               key=lambda s: (*target.key(fastcount.params_macs(s)), s.stem))
    assert got.spec == want


def test_warp_joint_fit_prefers_nominal_stem_inside_tolerance():
    budget = Budget(label="1.7M", params=1_700_000, tolerance=0.03)
    got = fit_spec(parse_name("warpnet-13-2"), [["depth", "stem"]], budget)
    assert abs(got.params - 1_700_000) <= 51_000
    inside = []
    for u in range(2, 130, 2):
        for c in range(4, 65):
            s = replace(parse_name("warpnet-13-2"), units=(u, u, u), stem=c, widths=(2 * c, 4 * c, 8 * c))
            p = fastcount.cost(s).params
            if abs(p - 1_700_000) <= 51_000:
                inside.append(abs(c - 16))
    assert abs(got.spec.stem - 16) == min(inside)


def test_fit_speed_per_candidate(spaces):
    import time

    space = spaces["cifar10_budget1.7M"]
    times = []
    for c in grid(space):
        if c.fit is None:  # listed as published, not fitted
            continue
        start = time.perf_counter()
        fit_spec(c.nominal, c.fit, space.budget(c.budget), c.fit_ranges)
        times.append(time.perf_counter() - start)
    times.sort()
    assert times[len(times) // 2] < 0.02  # median <= 20 ms per fitted candidate


# ------------------------------------------------------------------ bad spaces
BASE = {"budgets": [{"label": "0.15M", "params": "0.15M", "tolerance": "5%"}],
        "families": {"resnet": {"depth": [8, 14]}}}


def _with(**changes):
    raw = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        node = raw
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
        node[keys[-1]] = value
    return raw


@pytest.mark.parametrize("raw,key,reason", [
    (_with(families={"resnext": {"depth": [8]}}), "families.resnext", "unknown family"),
    (_with(families__resnet__k=[2, 4]), "families.resnet.k", "does not apply to resnet"),
    (_with(families__resnet__depth={"low": 20, "high": 8}), "families.resnet.depth", "empty range"),
    (_with(families__resnet__depth=[]), "families.resnet.depth", "empty"),
    (_with(families__resnet__depth=[9]), "families.resnet.depth", "not a resnet depth"),
    (_with(families__resnet__widht=2), "families.resnet.widht", "unknown key"),
    (_with(budget=[]), "budget", "unknown key"),
    (_with(budgets=[{"label": "x", "tolerance": 0.03}]), "budgets.0", "params and/or macs"),
    (_with(budgets=[{"label": "x", "params": "lots"}]), "budgets.0.params", "1.7M"),
    (_with(budgets=[{"label": "x", "params": 1000}]), "families.resnet", "closest achievable"),
    (_with(budgets=[{"label": "x", "params": 150_000, "macs": 1_000_000_000}]), "budgets.0", "contradict"),
    (_with(families__resnet__fit=["k"]), "families.resnet.fit", "cannot fit 'k'"),
    (_with(candidates=[{"name": "resnet-21"}]), "candidates.0.name", "resnet-21"),
    (_with(candidates=[{"name": "resnet-20", "budget": "9M"}]), "candidates.0.budget", "unknown budget"),
])
def test_bad_space_is_one_line_error_naming_key(raw, key, reason):
    with pytest.raises(ConfigError) as info:
        space_from_dict(raw, source="bad.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"bad.yaml: {key}: "), message
    assert reason in message, message


def test_infeasible_budget_names_closest_counts(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_with(budgets=[{"label": "1k", "params": 1000, "tolerance": 0.03}])))
    with pytest.raises(ConfigError, match=r"tiny.yaml: families.resnet: depth=8: cannot meet budget 1k .*closest "
                                          r"achievable is resnet-8-\S+ with params [\d,]+, macs [\d,]+"):
        load_space(path)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgets: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: line"):
        load_space(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_space(tmp_path / "missing.yaml")


# ------------------------------------------------------------------ CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "archsearch.cli", "space", *args], capture_output=True,
                          text=True, cwd=ROOT)


def test_cli_show_sample_grid_and_errors(tmp_path):
    quick = str(ROOT / "search_spaces" / "quickstart.yaml")
    show = _cli("show", quick)
    assert show.returncode == 0 and "grid points" in show.stdout and "0.15M" in show.stdout
    out = _cli("sample", quick, "-n", "5", "--seed", "1", "--json")
    rows = json.loads(out.stdout)
    assert len(rows) == 5 and {"name", "params", "macs", "spec"} <= set(rows[0])
    assert rows == json.loads(_cli("sample", quick, "-n", "5", "--seed", "1", "--json").stdout)
    g = _cli("grid", quick, "--json")
    assert len(json.loads(g.stdout)) == len(load_space(quick).points)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_with(families__resnet__k=[2])))
    err = _cli("show", str(bad))
    assert err.returncode == 2
    assert err.stderr.strip().count("\n") == 0 and "families.resnet.k" in err.stderr
