"""Test-time lesions: each deletion checked against the network written out without that part."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archsearch.nn.build import build
from archsearch.nn.lesion import (
    deletable_parts,
    lesion,
    route_gradient,
    single_functions,
    surviving_paths,
    whole_units,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py



def _trained_like(name: str, strategy: str = "loop") -> nn.Module:
    """A built net with non-trivial BN statistics and affine parameters (as after training), in eval mode."""
    torch.manual_seed(0)
    net = build(name, strategy=strategy)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _x() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _resnet_without(net: nn.Module, x: torch.Tensor, removed: int) -> torch.Tensor:
    """resnet forward written out, with unit `removed` reduced to its shortcut: x_{l+1} = Z(a_l)."""
    h = net.stem(x)
    for i, unit in enumerate(net.body):
        if i == removed:
            a = unit.preact(h) if unit.preact is not None else h
            h = unit.shortcut(a)
        else:
            h = unit(h)
    return net.head(h)


def test_deleting_a_resnet20_unit_equals_the_net_without_its_residual_branch() -> None:
    net = _trained_like("resnet-20")
    x = _x()
    parts = deletable_parts(net)
    assert len(parts) == 9 and all(p.part == "unit" for p in parts)
    with torch.no_grad():
        full = net(x)
        for removed in (1, 3, 8):  # an inner unit, a downsampling unit, the last unit
            part = parts[removed]
            assert part.downsampling == (removed == 3)
            with lesion(net, [part]):
                lesioned = net(x)
            expected = _resnet_without(net, x, removed)
            torch.testing.assert_close(lesioned, expected, rtol=0, atol=0)
            assert not torch.allclose(lesioned, full)
        torch.testing.assert_close(net(x), full, rtol=0, atol=0)  # the lesion is undone


def test_deleting_all_k_functions_equals_deleting_the_unit() -> None:
    for strategy in ("loop", "grouped"):
        net = _trained_like("multiresnet-14-k3", strategy)
        parts = deletable_parts(net)
        unit = next(p for p in parts if p.part == "unit" and p.stage == 2 and p.unit == 2)
        functions = [p for p in parts if (p.stage, p.unit) == (2, 2) and p.part.startswith("function")]
        assert [p.part for p in functions] == ["function 1", "function 2", "function 3"]
        x = _x()
        with torch.no_grad():
            with lesion(net, [unit]):
                by_unit = net(x)
            with lesion(net, functions):
                by_functions = net(x)
            with lesion(net, functions[:1]):
                one = net(x)
        torch.testing.assert_close(by_functions, by_unit, rtol=0, atol=0)
        assert not torch.allclose(one, by_unit)


def test_a_dmrnet_stream_lesion_follows_merge_and_run() -> None:
    """Unit with K=3 streams, stream 2's H deleted: f = (Z_1 x_1 + Z_2 x_2 + Z_3 x_3) / 3,
    y_1 = ReLU(f + H_1 x_1), y_2 = ReLU(f), y_3 = ReLU(f + H_3 x_3)."""
    net = _trained_like("dmrnet-14-K3")
    parts = deletable_parts(net)
    stream = next(p for p in parts if (p.stage, p.unit, p.part) == (2, 2, "stream 2"))
    unit = net.body[stream.index]
    assert not unit.last
    seen: dict[str, object] = {}
    unit.register_forward_hook(lambda m, args, out: seen.update(inputs=args[0], outputs=out))
    with torch.no_grad(), lesion(net, [stream]):
        net(_x())
        xs = seen["inputs"]
        f = sum(z(s) for z, s in zip(unit.shortcuts, xs, strict=True)) / 3
        h = unit.functions.branches
        expected = [torch.relu(f + h[0](xs[0])), torch.relu(f), torch.relu(f + h[2](xs[2]))]
    for got, want in zip(seen["outputs"], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_warp_lesions_drop_the_function_and_its_terms() -> None:
    """K=2, v2: y = x + F1 + F2 + F2'F1. Without F2'F1: x + F1 + F2; without F1: x + F2."""
    net = _trained_like("warpnet-13-1-v2")
    parts = deletable_parts(net)
    op_parts = [p for p in parts if p.index == parts[0].index]
    assert [p.part for p in op_parts] == ["F1", "F2", "F'2·F1"]
    op = net.body[parts[0].index]
    x = torch.randn(2, op.functions[0][0].num_features, 8, 8)
    f1, f2 = op.functions
    with torch.no_grad():
        with lesion(net, [op_parts[2]]):
            torch.testing.assert_close(op(x), x + f1(x) + f2(x))
        with lesion(net, [op_parts[0]]):
            torch.testing.assert_close(op(x), x + f2(x))
    assert [p.part for p in whole_units(net)][:2] == ["F1", "F2"]


def test_surviving_paths_count_what_is_left() -> None:
    net = build("resnet-20")
    units = whole_units(net)
    assert surviving_paths(net) == 2**9
    with lesion(net, units[:3]):
        assert surviving_paths(net) == 2**6
    multi = build("multiresnet-14-k3")
    functions = [p for p in deletable_parts(multi) if p.part == "function 1"][:2]
    with lesion(multi, functions):
        assert surviving_paths(multi) == 4**4 * 3**2


def test_gradient_routing_keeps_the_forward_pass() -> None:
    net = _trained_like("multiresnet-8-k2")
    x = _x()
    with torch.no_grad():
        full = net(x)
    with route_gradient(net, [None, 1, None]):
        routed = net(x)
    torch.testing.assert_close(routed, full, rtol=0, atol=0)
    assert all(not u.functions.detached for u in net.body)


def test_single_functions_are_every_residual_function_once() -> None:
    assert [p.part for p in single_functions(build("resnet-26"))] == ["unit"] * 12
    multi = single_functions(build("multiresnet-14-k2"))
    assert len(multi) == 12 and {p.part for p in multi} == {"function 1", "function 2"}
    warp = single_functions(build("warpnet-19-1-K3-v2"))
    assert [p.part for p in warp] == ["F1", "F2", "F3"] * 3
