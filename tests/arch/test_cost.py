"""The analytic count (archsearch.arch.cost) equals fvcore (archsearch.nn.complexity.count) exactly.

fvcore traces the network (0.3-5 s per spec on 2 cores), so its counts are kept in pytest's cache
(`.pytest_cache`, key `archsearch/fvcore_counts/<hash>`), where the hash covers the sources that
define the networks and the count (everything under arch/ and nn/) and the
torch/fvcore versions: any change to them recomputes every count with fvcore
(`pytest --cache-clear` forces it too).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest

import archsearch
from archsearch.arch import cost as fastcount
from archsearch.arch.plan import derivative_terms
from archsearch.arch.spec import ArchSpec, parse_name
from archsearch.nn.complexity import count
from archsearch.space.space import load_space, random_samples

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))

# architectures.md, "Reference counts" (C = 10 unless said)
REFERENCE = {
    "resnet-110": 1_727_962, "resnet-68": 1_047_450, "resnet-164-bottleneck": 1_703_258,
    "multiresnet-8-k23": 1_702_234, "multiresnet-14-k10": 1_713_018, "multiresnet-8-k4": 297_146,
    "multiresnet-20-k4": 1_074_874, "multiresnet-26-k2-w10": 72_690_714, "dvanet-14": 346_650,
    "postresnet-110": 1_730_714, "dmrnet-56": 1_710_426, "dmrnet-50-K2": 1_515_994, "dmrnet-98-K1": 1_536_282,
    "dmrnet-50-K1-c23": 1_564_401, "dmrnet-50-K8-c8": 1_522_994, "wrn-40-1": 563_930, "wrn-40-2": 2_243_546,
    "wrn-40-4": 8_949_210, "wrn-28-10": 36_479_194, "wrn-16-8": 10_961_370, "wrn-40-2-b131": 1_429_082,
    "wrn-28-2": 1_467_610, "postresnet-26": 369_690, "dmrnet-14": 349_402, "dvanet-56": 1_707_674,
    "warpnet-37-4": 9_309_402, "dmrnet-50-K4-c12": 1_707_910, "resnet-20": 269_722,
    "resnet-24-u4.4.3": 292_954, "wrn-76-2-b3": 2_243_546, "wrn-28-2-b333": 2_243_546, "wrn-22-2-b3333": 2_243_546,
}
REFERENCE_C1000 = {"warpnet-73-2": 4_790_712}
RANDOM_PER_SPACE = 34  # ~200 random specs over the six shipped spaces


def _cache_key() -> str:
    import fvcore
    import torch

    digest = hashlib.sha256()
    package = Path(archsearch.__file__).parent
    for source in sorted([*package.glob("arch/*.py"), *package.glob("nn/*.py")]):
        digest.update(source.read_bytes())
    digest.update(f"{torch.__version__}|{getattr(fvcore, '__version__', '?')}".encode())
    return f"archsearch/fvcore_counts/{digest.hexdigest()[:16]}"


class FvcoreCounts:
    """budget.count results by spec JSON, computed once per source version."""

    def __init__(self, cache) -> None:
        self.cache = cache
        self.key = _cache_key()
        self.data: dict[str, dict] = dict(cache.get(self.key, {}) or {})
        self.dirty = False

    def __call__(self, spec: ArchSpec) -> dict:
        key = spec.to_json()
        if key not in self.data:
            self.data[key] = count(spec, num_classes=spec.num_classes)
            self.dirty = True
        return self.data[key]

    def save(self) -> None:
        if self.dirty:
            self.cache.set(self.key, self.data)


class _NoCache:
    def get(self, key: str, default: dict) -> dict:
        return default

    def set(self, key: str, value: dict) -> None:
        pass


@pytest.fixture(scope="module")
def fvcore_counts(request):
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    counts = FvcoreCounts(cache if cache is not None else _NoCache())
    yield counts
    counts.save()


def assert_same(fast: dict, slow: dict) -> None:
    for key in ("name", "params", "macs", "depth", "units", "paths"):
        assert fast[key] == slow[key], (key, fast[key], slow[key])
    for key in ("path_length_mean", "path_length_std"):
        assert math.isclose(fast[key], slow[key], rel_tol=1e-12, abs_tol=1e-12), (key, fast[key], slow[key])


def test_reference_params_match_design_table():
    for name, params in REFERENCE.items():
        assert fastcount.cost(name).params == params, name
    for name, params in REFERENCE_C1000.items():
        assert fastcount.cost(parse_name(name, num_classes=1000)).params == params, name
    assert fastcount.cost("resnet-110").macs == 254_988_928


@pytest.mark.parametrize("name", sorted(REFERENCE) + sorted(REFERENCE_C1000))
def test_reference_names_equal_fvcore(name, fvcore_counts):
    spec = parse_name(name, num_classes=1000 if name in REFERENCE_C1000 else 10)
    assert_same(fastcount.count(spec), fvcore_counts(spec))


def shrink(spec: ArchSpec, rng: random.Random) -> ArchSpec:
    """A small random relative of a space's candidate: same structure, few units, narrow widths.

    Keeps family, k/K, merge, shortcut, kernels, bottleneck, warp factor/variant/BN and dropout;
    draws non-uniform units per stage and independent stage widths (so every layer-shape rule is
    exercised) small enough for fvcore to trace quickly.
    """
    if spec.unit == "warp":
        k = spec.warp_k
        units = tuple(k * rng.randint(1, 2) for _ in range(3))
        stem = rng.randint(2, 6)
        kw = rng.randint(1, 3)
        return replace(spec, units=units, stem=stem, widths=(stem * kw, 2 * stem * kw, 4 * stem * kw),
                       num_classes=rng.choice([10, 100]))
    units = tuple(rng.randint(1, 2) for _ in range(3))
    branches = min(spec.branches, 4)
    if spec.unit == "pre" and spec.shortcut == "pad":
        first = rng.randint(16, 18) if spec.function == "basic" else rng.randint(4, 6)
        widths = (first, first + rng.randint(0, 5), first + rng.randint(5, 12))
    else:
        widths = tuple(rng.randint(3, 12) for _ in range(3))
        if spec.shortcut == "pad":
            widths = tuple(sorted(widths))
    return replace(spec, units=units, widths=widths, branches=branches, num_classes=rng.choice([10, 100]))


def _random_specs() -> list[ArchSpec]:
    specs: list[ArchSpec] = []
    for path in SPACES:
        space = load_space(path)
        rng = random.Random(f"fastcount:{path.stem}")
        for candidate in random_samples(space, RANDOM_PER_SPACE, seed=7):
            specs.append(shrink(candidate.spec, rng))
    return specs


def test_random_specs_from_every_space_equal_fvcore(fvcore_counts):
    specs = _random_specs()
    assert len(specs) >= 200
    kinds = {(s.unit, s.combine, s.function, s.shortcut, s.warp_variant, s.warp_bn, s.warp_k > 1) for s in specs}
    assert len(kinds) >= 8  # the spaces' structural variety is covered
    for spec in specs:
        assert_same(fastcount.count(spec), fvcore_counts(spec))


def test_smallest_real_grid_point_of_every_space_equals_fvcore(fvcore_counts):
    for path in SPACES:
        space = load_space(path)
        smallest = min(space.points, key=lambda c: (c.spec.total_units * c.spec.k, c.macs))
        assert_same(fastcount.count(smallest.spec), fvcore_counts(smallest.spec))


def test_warp_derivative_terms():
    for k in (1, 2, 3, 4):
        assert len(derivative_terms(k, 1)) == k - 1  # F'_j x, j >= 2
        assert len(derivative_terms(k, 2)) == k * (k - 1) // 2  # F'_j F_i, i < j
