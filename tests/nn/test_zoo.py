"""The built networks: exact counts, closed forms, wiring against the papers' equations."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from networks import FAMILY_MEMBERS
from torch import nn

from archsearch.arch.spec import parse_name
from archsearch.nn.blocks import MergeRunUnit, PostSumUnit
from archsearch.nn.build import build
from archsearch.nn.complexity import count, count_params, path_statistics

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden_counts.json").read_text())


@pytest.mark.parametrize("name", sorted(GOLDEN["params"]))
def test_reference_params_exact(name: str) -> None:
    classes = 1000 if name == "warpnet-73-2" else 10
    assert count_params(build(name, num_classes=classes, strategy="loop")) == GOLDEN["params"][name]


def test_resnet110_macs_exact() -> None:
    assert count("resnet-110")["macs"] == GOLDEN["macs"]["resnet-110"] == 254_988_928


def params_of(name: str, classes: int = 10) -> int:
    with torch.device("meta"):
        return count_params(build(name, num_classes=classes, strategy="loop"))


def test_closed_forms_over_many_shapes() -> None:
    rng = random.Random(7)
    for _ in range(40):
        n, c, k = rng.randint(1, 12), rng.choice([10, 100, 1000]), rng.randint(1, 6)
        assert params_of(f"resnet-{6 * n + 2}", c) == 97216 * n - 23264 + 688 + 65 * c
        assert params_of(f"multiresnet-{6 * n + 2}-k{k}", c) == k * (97216 * n - 23264) + 688 + 65 * c
        w, big_n = rng.randint(1, 8), rng.randint(1, 6)
        wrn = 96768 * big_n * w * w + 448 * big_n * w - 22784 * w * w + 2560 * w + 464 + 64 * w * c + c
        assert params_of(f"wrn-{6 * big_n + 4}-{w}", c) == wrn - (256 if w == 1 else 0)
        kw, per_stage = rng.randint(1, 4), rng.choice([2, 4, 6, 12])
        warp = 96768 * per_stage * kw * kw + 672 * per_stage * kw + 128 * kw + 464 + 64 * kw * c + c
        for kk in (1, 2):
            assert params_of(f"warpnet-{6 * per_stage + 1}-{kw}-K{kk}", c) == warp


def test_branch_families_have_equal_function_count_to_postresnet() -> None:
    # dvanet/dmrnet of depth 6m+2 with K branches hold 3mK functions, like postresnet-(6mK+2)
    for m, k in [(2, 2), (4, 2), (2, 4), (1, 8)]:
        functions = sum(len(u.functions) for u in build(f"dvanet-{6 * m + 2}-K{k}").body)
        assert functions == 3 * m * k == len(build(f"postresnet-{6 * m * k + 2}").body)


def copy_and_compare(a: nn.Module, b: nn.Module) -> None:
    b.load_state_dict(a.state_dict(), strict=True)
    a.eval(), b.eval()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize(("a", "b"), [("multiresnet-14-k1", "resnet-14"), ("dmrnet-14-K1", "postresnet-14"),
                                      ("multiresnet-26-k1-w10", "wrn-28-10")])
def test_equivalent_names_build_equivalent_networks(a: str, b: str) -> None:
    if b == "wrn-28-10":  # same construction at a width this CPU evaluates quickly
        a, b = "multiresnet-8-k1-w2", "wrn-10-2"
    torch.manual_seed(0)
    copy_and_compare(build(a), build(b))


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_merge_run_with_one_stream_is_a_post_activation_unit() -> None:
    torch.manual_seed(0)
    merge = MergeRunUnit(16, 32, 2, 1, "proj", (3, 3), False, 0.0, "loop", last=False)
    plain = PostSumUnit(16, 32, 2, 1, "proj", (3, 3), False, 0.0, "loop")
    plain.shortcut.load_state_dict(merge.shortcuts[0].state_dict())
    plain.functions.load_state_dict(merge.functions.state_dict())
    merge.eval(), plain.eval()
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(merge([x])[0], plain(x))


def test_dmrnet_unit_matches_the_merge_and_run_equation() -> None:
    torch.manual_seed(0)
    k = 3
    unit = MergeRunUnit(16, 32, 2, k, "proj", (3, 3), False, 0.0, "loop", last=False).eval()
    randomise_bn(unit)
    xs = [torch.randn(2, 16, 8, 8) for _ in range(k)]
    merged = sum(unit.shortcuts[j](xs[j]) for j in range(k)) / k  # f = 1/K sum_j Z_j(x_j)  (an average)
    expected = [F.relu(merged + unit.functions.branches[i](xs[i])) for i in range(k)]
    for got, want in zip(unit(xs), expected, strict=True):
        torch.testing.assert_close(got, want)
    unit.last = True
    torch.testing.assert_close(unit(xs), F.relu(merged + sum(unit.functions.branches[i](xs[i]) for i in range(k))))


def test_merge_is_idempotent() -> None:
    # M = (1/K) 1 1^T (x) I: merging streams that are already merged changes nothing (M M = M)
    k, streams = 4, [torch.randn(2, 8, 4, 4) for _ in range(4)]
    merge = lambda xs: [sum(xs) / k] * k  # noqa: E731  the merge of MergeRunUnit with identity shortcuts
    once = merge(streams)
    for a, b in zip(merge(once), once, strict=True):
        torch.testing.assert_close(a, b)
    unit = MergeRunUnit(8, 8, 1, k, "proj", (3, 3), False, 0.0, "loop", last=False).eval()
    assert all(isinstance(z, nn.Identity) for z in unit.shortcuts)


def test_dvanet_and_multiresnet_units_match_their_equations() -> None:
    torch.manual_seed(0)
    unit = build("dvanet-8-K3").body[1].eval()  # y = ReLU(Z(x) + sum_i H_i(x)), Z projection with BN
    randomise_bn(unit)
    x = torch.randn(2, 16, 32, 32)
    want = F.relu(unit.shortcut(x) + sum(h(x) for h in unit.functions.branches))
    torch.testing.assert_close(unit(x), want)
    net = build("multiresnet-14-k3").eval()
    randomise_bn(net)
    first, second = net.body[2], net.body[3]  # stage 2: first unit shares its BN-ReLU
    a = F.relu(first.preact[0](x))
    torch.testing.assert_close(first(x), first.shortcut(a) + sum(f(a) for f in first.functions.branches))
    y = torch.randn(2, 32, 16, 16)
    torch.testing.assert_close(second(y), y + sum(f(y) for f in second.functions.branches))
    assert isinstance(second.functions.branches[0][0], nn.BatchNorm2d)  # owns its pre-activation
    assert isinstance(first.functions.branches[0][0], nn.Conv2d)  # shared pre-activation


@pytest.mark.parametrize("name", ["multiresnet-14-k3", "dvanet-8-K3", "dmrnet-8-K3", "dmrnet-11-K2-bottleneck",
                                  "wrn-10-2-b131", "multiresnet-8-k2-w2"])
def test_branch_strategies_agree(name: str) -> None:
    torch.manual_seed(0)
    loop = build(name, strategy="loop")
    grouped = build(name, strategy="grouped")
    grouped.load_state_dict(loop.state_dict())
    x = torch.randn(4, 3, 32, 32)
    for mode in ("train", "eval"):
        loop.train(mode == "train"), grouped.train(mode == "train")
        out_loop, out_grouped = loop(x), grouped(x)
        torch.testing.assert_close(out_grouped, out_loop, rtol=1e-5, atol=1e-5)
        if mode == "train":
            out_loop.square().sum().backward()
            out_grouped.square().sum().backward()
            for (n, p), q in zip(loop.named_parameters(), grouped.parameters(), strict=True):
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=n)
            for (n, b), c in zip(loop.named_buffers(), grouped.buffers(), strict=True):
                torch.testing.assert_close(c, b, rtol=1e-5, atol=1e-6, msg=n)
    assert loop.state_dict().keys() == grouped.state_dict().keys()


def test_auto_strategy_measures_once_and_caches(tmp_path, monkeypatch) -> None:
    from archsearch.nn import branches
    monkeypatch.setenv("ARCHSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(branches, "_CHOICES", {})
    model = build("multiresnet-8-k2", strategy="auto")
    model(torch.randn(2, 3, 32, 32))
    cached = json.loads((tmp_path / "branch_strategy.json").read_text())
    assert cached and set(cached.values()) <= {"loop", "grouped"}
    calls = []
    monkeypatch.setattr(branches.BranchSet, "_measure", lambda *a, **k: calls.append(1) or "loop")
    build("multiresnet-8-k2", strategy="auto")(torch.randn(2, 3, 32, 32))
    assert calls == []


@pytest.mark.parametrize("name, entries", [("multiresnet-8-k2-drop0.3", {"sum_shared"}),
                                           ("dmrnet-8-K2", {"each_shared", "each"})])
def test_auto_strategy_probe_leaves_no_trace(tmp_path, monkeypatch, name: str, entries: set) -> None:
    """The probe times training-mode BN and weight gradients, yet a model's first training step under
    `auto` (probing) sees the same BN statistics, random numbers and gradients as a twin's (choices cached)."""
    from archsearch.nn import branches
    monkeypatch.setenv("ARCHSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(branches, "_CHOICES", {})
    torch.manual_seed(0)
    probing = build(name, strategy="auto")
    cached = build(name, strategy="auto")
    cached.load_state_dict(probing.state_dict())
    x = torch.randn(4, 3, 32, 32)
    results = []
    for model in (probing, cached):
        torch.manual_seed(1)  # dropout draws
        out = model(x)
        out.square().sum().backward()
        results.append((out, torch.get_rng_state(), model.state_dict()))
    (out_p, rng_p, state_p), (out_c, rng_c, state_c) = results
    assert torch.equal(out_p, out_c) and torch.equal(rng_p, rng_c)
    for key in state_p:
        assert torch.equal(state_p[key], state_c[key]), key
    for (n, p), q in zip(probing.named_parameters(), cached.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), n
    assert {key.split("|")[4] for key in branches._CHOICES} == entries  # timed per entry point
    assert all(m.training for m in probing.modules())




@pytest.mark.parametrize("name", FAMILY_MEMBERS)
def test_forward_backward_every_family(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, num_classes=7)
    x = torch.randn(3, 3, 32, 32)
    out = model(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_path_statistics_closed_forms() -> None:
    for n in (1, 3, 18):
        paths, mean, std = path_statistics(build(f"resnet-{6 * n + 2}"))
        units = 3 * n
        assert paths == 2 ** units and mean == pytest.approx(2 + 2 * units / 2)
        assert std == pytest.approx(2 * math.sqrt(units) / 2)
    for m, k in [(1, 2), (3, 2), (2, 4)]:
        units = 3 * m
        paths, mean, std = path_statistics(build(f"dvanet-{6 * m + 2}-K{k}"))
        assert paths == (k + 1) ** units
        assert mean == pytest.approx(2 + units * 2 * k / (k + 1))
        assert std == pytest.approx(2 * math.sqrt(units * k) / (k + 1))
    # paper's example, L = 9, K = 2, B = 2: ResNet of 18 units 20.0 ± 4.24, DVANet 14.0 ± 2.83
    assert path_statistics(build("resnet-38"))[1:] == pytest.approx((20.0, 4.2426), abs=1e-3)
    assert path_statistics(build("dvanet-20"))[1:] == pytest.approx((14.0, 2.8284), abs=1e-3)
    # DMRNet: the closed form 8.0 ± 2.83 holds for identical units ((K + x^B)^L) ...
    closed = [1]
    for _ in range(9):
        closed = [a + b for a, b in zip([2 * c for c in closed] + [0, 0], [0, 0] + closed, strict=True)]
    total = sum(closed)
    mean = sum(i * c for i, c in enumerate(closed)) / total
    assert 2 + mean == pytest.approx(8.0)
    # ... the built network, whose last unit sums all streams, gives 8.33 ± 2.85 exactly
    assert path_statistics(build("dmrnet-20"))[1:] == pytest.approx((8.333, 2.848), abs=1e-3)


def enumerate_dmrnet_paths(units: int, k: int, b: int) -> list[int]:
    """Independent brute force: walk every path through the stream graph of a DMRNet."""
    lengths: list[int] = []

    def walk(unit: int, stream: int, length: int) -> None:
        last = unit == units - 1
        outputs = [0] if last else list(range(k))
        for out in outputs:  # through Z_stream into the merge, which feeds every output stream
            arrive(unit, out, length)
        arrive(unit, 0 if last else stream, length + b)  # through the stream's own branch H

    def arrive(unit: int, stream: int, length: int) -> None:
        if unit == units - 1:
            lengths.append(length + 1)  # the classifier
        else:
            walk(unit + 1, stream, length)

    for stream in range(k):  # every stream of the first unit starts as the stem output
        walk(0, stream, 1)
    return lengths


@pytest.mark.parametrize(("depth", "k"), [(8, 2), (14, 2), (8, 3), (14, 3)])
def test_dmrnet_paths_equal_brute_force_enumeration(depth: int, k: int) -> None:
    lengths = enumerate_dmrnet_paths(3 * (depth - 2) // 6, k, 2)
    paths, mean, std = path_statistics(build(f"dmrnet-{depth}-K{k}"))
    assert paths == len(lengths)
    assert mean == pytest.approx(sum(lengths) / len(lengths))
    assert std == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in lengths) / len(lengths)))


def test_count_api_keys_and_units() -> None:
    result = count("warpnet-37-4")
    assert list(result) == ["name", "params", "macs", "depth", "units", "paths", "path_length_mean",
                            "path_length_std"]
    assert result["units"] == [6, 6, 6] and result["depth"] == 37
    assert count("dmrnet-50-K4-c12")["units"] == [8, 8, 8]
    assert parse_name(count("multiresnet-26-k1-w10", num_classes=100)["name"]).name == "wrn-28-10"


def test_auto_strategy_first_call_under_inference_mode(tmp_path, monkeypatch) -> None:
    from archsearch.nn import branches
    monkeypatch.setenv("ARCHSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(branches, "_CHOICES", {})
    model = build("dmrnet-8-K2", strategy="auto").eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and branches._CHOICES


@pytest.mark.parametrize("name, reason", [("resnet-1000004", "residual functions"),
                                          ("wrn-28-100000", "more than half of this machine")])
def test_networks_too_large_to_build_fail_with_the_reason(name: str, reason: str, capsys) -> None:
    from archsearch.cli import main
    from archsearch.errors import SpecError

    with pytest.raises(SpecError, match=reason):
        build(name)
    assert main(["count", name]) == 2  # at once, not after minutes of building or an allocator traceback
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1
    assert count_params(build("resnet-1202")) == 19_421_274  # the papers' deepest network still builds
