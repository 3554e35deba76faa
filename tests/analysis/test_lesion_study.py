"""Lesion studies and effective paths on small built networks (random weights: the mechanics, not the claims)."""

from __future__ import annotations

import math

import pytest
import torch

from archsearch.analysis.lesion import (
    Evaluator,
    draw_deletions,
    effective_paths,
    effective_range,
    lesion_study,
    path_counts,
)
from archsearch.nn.build import build
from archsearch.train.augment import Normalizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py



@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, Normalizer]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (24,), generator=g)
    return images, labels, Normalizer((0.5,) * 3, (0.25,) * 3, torch.device("cpu"))


def test_random_deletion_draws_are_reproducible_by_seed() -> None:
    a = draw_deletions(9, 3, 5, seed=7)
    assert a == draw_deletions(9, 3, 5, seed=7)
    assert a != draw_deletions(9, 3, 5, seed=8)
    assert len(a) == 5 == len(set(a)) and all(len(p) == 3 == len(set(p)) for p in a)
    assert draw_deletions(9, 9, 5, seed=7) == [tuple(range(9))]  # only one set of 9 exists
    assert len(draw_deletions(4, 2, 10, seed=0)) == math.comb(4, 2)


def test_lesion_study_reports_every_deletion_and_the_paths_left(data) -> None:
    images, labels, normalize = data
    torch.manual_seed(0)
    net = build("resnet-20", strategy="loop").eval()
    evaluator = Evaluator(net, images, labels, normalize)
    result = lesion_study(evaluator, draws=3, seed=1, max_removed=4)
    assert result["units"] == 9 and result["paths"] == 2**9 and result["bn"] == "trained"
    assert [(r["stage"], r["unit"]) for r in result["single"]][:4] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert [r["downsampling"] for r in result["single"]].count(True) == 2
    assert [r["n"] for r in result["removed"]] == [1, 2, 3, 4]
    assert [r["paths"] for r in result["removed"]] == [2**8, 2**7, 2**6, 2**5]
    assert all(r["draws"] == 3 for r in result["removed"])
    # n = 1 draws are single deletions: their errors are among the single-deletion errors
    singles = {r["error"] for r in result["single"]}
    assert all(0 <= r["error_mean"] <= 100 for r in result["removed"])
    assert result == lesion_study(Evaluator(net, images, labels, normalize), draws=3, seed=1, max_removed=4)
    assert evaluator.evaluations == 1 + 9 + 3 * 4
    assert min(singles) >= 0


def test_recalibrated_bn_is_restored_after_each_lesion(data) -> None:
    images, labels, normalize = data
    net = build("multiresnet-8-k2", strategy="loop").eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    evaluator = Evaluator(net, images, labels, normalize, recalibrate=images, bn_batch_size=8)
    result = lesion_study(evaluator, draws=2, seed=0, max_removed=1)
    assert result["bn"] == "recalibrated" and len(result["single"]) == 9
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_path_counts_are_the_binomial_law() -> None:
    assert path_counts([1] * 9) == [math.comb(9, n) for n in range(10)]
    assert path_counts([3] * 4) == [math.comb(4, n) * 3**n for n in range(5)]
    assert path_counts([1, 2]) == [1, 3, 2]


def test_effective_path_shares_sum_to_one_over_the_binomial_support(data) -> None:
    images, labels, normalize = data
    torch.manual_seed(0)
    net = build("multiresnet-14-k2", strategy="loop")
    result = effective_paths(net, images, labels, normalize, samples=2, batch_size=8, seed=3)
    n = result["units"]
    assert n == 6 and result["lengths"] == list(range(n + 1))
    assert result["paths"] == [math.comb(n, length) * 2**length for length in range(n + 1)]
    assert sum(result["paths"]) == sum(net.path_polynomial())  # every path of the built network, by units passed
    assert math.isclose(sum(result["share"]), 1.0, rel_tol=1e-9)
    assert all(s > 0 for s in result["share"]) and len(result["share"]) == n + 1  # support: 0..n
    lo, hi = result["range"]
    assert 0 <= lo <= hi <= n
    assert result == effective_paths(net, images, labels, normalize, samples=2, batch_size=8, seed=3)
    assert net.training  # the caller's mode is kept


def test_effective_range_holds_the_central_mass() -> None:
    assert effective_range([0.01, 0.02, 0.5, 0.45, 0.02]) == (2, 3)
    assert effective_range([1.0]) == (0, 0)


def test_random_deletions_of_single_functions(data) -> None:
    images, labels, normalize = data
    net = build("multiresnet-8-k2", strategy="loop").eval()
    result = lesion_study(Evaluator(net, images, labels, normalize), draws=2, seed=0, max_removed=2,
                          remove="functions")
    assert result["units"] == 3 and result["removable"] == 6 and result["remove"] == "functions"
    assert result["removed"][0]["paths"] == 3 * 3 * 2  # one function gone: one unit has 2 ways instead of 3
