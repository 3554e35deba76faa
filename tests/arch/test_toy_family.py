"""A new family registered inside this test only: every stage picks it up from the registries.

"maxnet" is a post-activation K-branch unit whose functions are joined by an element-wise max
instead of a sum: y = ReLU(Z(x) + max_i H_i(x)). Declaring it takes one `Family` (arch), one unit
class (nn) and one unit template (export); the layer plan, the fast count, the search space and
the exporter need no change. The fixture takes all three away again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archsearch.arch import cost as fastcount
from archsearch.arch.families import Family, family_names, register
from archsearch.arch.spec import parse_name
from archsearch.export import templates
from archsearch.export.templates import UnitTemplate, block, expanded_width
from archsearch.export.verify import load_module
from archsearch.export.writer import export_architecture
from archsearch.nn import build as builder
from archsearch.nn.blocks import PostSumUnit
from archsearch.nn.complexity import count
from archsearch.space.space import random_samples, space_from_dict

TOY = Family("maxnet", "post", combine="max", depth_letter="m", name_form="maxnet-<6m+2>[-K<K>]",
             branch_token="K", default_branches=2, default_shortcut="proj",
             axes=("depth", "K", "w", "kernels", "shortcut", "dropout"), fit_axes=("depth", "K", "widths", "width"),
             title="max-merge toy network", class_name="MaxNet", colour="#000000")


class MaxUnit(PostSumUnit):
    """y = ReLU(Z(x) + max_i H_i(x)); layout, parameters and paths as a post-activation sum unit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.functions.each_shared(x)
        top = outs[0]
        for h in outs[1:]:
            top = torch.maximum(top, h)
        return F.relu(self.shortcut(x) + top)


def max_unit_template(spec) -> str:
    return block(f'''
class MaxUnit(nn.Module):
    """y = ReLU(Z(x) + max_i H_i(x)) over {spec.branches} functions."""

    def __init__(self, in_c: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.shortcut = shortcut(in_c, {expanded_width(spec)}, stride)
        self.functions = Functions([residual_function(in_c, width, stride) for _ in range({spec.branches})])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.functions.branches[0](x)
        for f in self.functions.branches[1:]:
            top = torch.maximum(top, f(x))
        return F.relu(self.shortcut(x) + top)
''')


@pytest.fixture
def toy_family() -> Iterator[Family]:
    unregister = register(TOY)
    builder.UNIT_CLASSES[("post", "max")] = MaxUnit
    templates.UNIT_TEMPLATES[("post", "max")] = UnitTemplate(max_unit_template, "MaxUnit")
    try:
        yield TOY
    finally:
        unregister()
        del builder.UNIT_CLASSES[("post", "max")]
        del templates.UNIT_TEMPLATES[("post", "max")]


def test_the_toy_is_unknown_outside_its_fixture() -> None:
    assert "maxnet" not in family_names()
    with pytest.raises(Exception, match="unknown family 'maxnet'"):
        parse_name("maxnet-14-K3")


def test_build_and_count(toy_family: Family) -> None:
    spec = parse_name("maxnet-14-K3-c8")
    assert (spec.unit, spec.combine, spec.branches, spec.name) == ("post", "max", 3, "maxnet-14-K3-c8")
    net = builder.build(spec)
    assert all(isinstance(unit, MaxUnit) for unit in net.body)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    fast, slow = fastcount.count(spec), count(spec)  # the layer plan's count equals fvcore's on the net
    for key in ("name", "params", "macs", "depth", "units", "paths"):
        assert fast[key] == slow[key], key
    assert fast["path_length_mean"] == pytest.approx(slow["path_length_mean"], rel=1e-12)
    assert fast["path_length_std"] == pytest.approx(slow["path_length_std"], rel=1e-12)


def test_sample_from_a_space(toy_family: Family) -> None:
    space = space_from_dict({"budgets": [{"label": "small", "params": "120k", "tolerance": "5%"}],
                             "families": {"maxnet": {"depth": [8, 14], "K": [2, 3]}}})
    assert len(space.points) == 4
    samples = random_samples(space, 3, seed=1)
    for candidate in samples:
        assert candidate.family == "maxnet" and candidate.spec.combine == "max"
        assert abs(candidate.params - 120_000) <= 0.05 * 120_000
        assert fastcount.cost(candidate.spec).params == candidate.params


def test_export_round_trip(toy_family: Family, tmp_path: Path) -> None:
    spec = parse_name("maxnet-8-K3-c8")
    torch.manual_seed(3)
    net = builder.build(spec).eval()
    result = export_architecture(spec, tmp_path)  # verified: strict state_dict load, same outputs
    exported = load_module(result.code).MaxNet()
    exported.load_state_dict(net.state_dict(), strict=True)
    exported.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(exported(x), net(x), atol=1e-5)
    assert "max-merge toy network" in result.card.read_text()
