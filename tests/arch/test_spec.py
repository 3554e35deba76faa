"""Names <-> specs: every spelling parses, canonical names round-trip, bad names fail clearly."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from archsearch.arch.spec import ArchSpec, as_spec, parse_name
from archsearch.errors import SpecError

SAME_NETWORK = [
    ("dmrnet-14", "dmrnet-14-K2"),
    ("multiresnet-20-k1", "resnet-20"),
    ("dmrnet-20-K1", "postresnet-20"),
    ("dvanet-20-K1", "postresnet-20"),
    ("multiresnet-26-k1-w10", "wrn-28-10"),
    ("dmrnet-50-k2", "dmrnet-50-K2"),
    ("resnet-20-proj", "wrn-22-1"),
    ("resnet-24-u4.4.3", "multiresnet-24-k1-u4.4.3"),
    ("warpnet-37-4", "warpnet-37-4-K2-v1"),
]


@pytest.mark.parametrize(("a", "b"), SAME_NETWORK)
def test_aliases_parse_to_one_spec(a: str, b: str) -> None:
    assert parse_name(a) == parse_name(b)


@pytest.mark.parametrize(("name", "canonical"), [
    ("multiresnet-26-k1-w10", "wrn-28-10"), ("dmrnet-20-K1", "postresnet-20"), ("dmrnet-14-K2", "dmrnet-14"),
    ("multiresnet-20-k1", "resnet-20"), ("warpnet-37-4-K2-v1", "warpnet-37-4"), ("resnet-20-w2", "wrn-22-2"),
    ("wrn-40-2-b131", "wrn-40-2-b131"), ("dmrnet-50-K1-c23", "postresnet-50-c23"),
    ("DMRNET-50-K4-C12", "dmrnet-50-K4-c12"), ("warpnet-37-4-K3-v2-nobn", "warpnet-37-4-K3-v2-nobn"),
])
def test_canonical_spelling(name: str, canonical: str) -> None:
    assert parse_name(name).name == canonical
    assert parse_name(canonical).name == canonical


def test_structure_of_named_families() -> None:
    s = parse_name("resnet-164-bottleneck")
    assert (s.function, s.units, s.shortcut, s.out_widths) == ("bottleneck", (18, 18, 18), "proj", (64, 128, 256))
    s = parse_name("wrn-40-2-b131")
    assert (s.kernels, s.units, s.widths, s.shortcut) == ((1, 3, 1), (6, 6, 6), (32, 64, 128), "proj")
    s = parse_name("dmrnet-50-K4-c12")
    assert (s.unit, s.combine, s.branches, s.widths, s.units) == ("post", "merge", 4, (12, 24, 48), (8, 8, 8))
    s = parse_name("warpnet-73-2")
    assert (s.unit, s.warp_k, s.warp_variant, s.units, s.widths) == ("warp", 2, 1, (12, 12, 12), (32, 64, 128))
    s = parse_name("multiresnet-26-k2-w10")
    assert (s.branches, s.shortcut, s.widths) == (2, "proj", (160, 320, 640))
    assert parse_name("resnet-20").shortcut == "pad"
    assert parse_name("wrn-28-10-drop0.3").dropout == 0.3


def random_spec(rng: random.Random) -> ArchSpec:
    """A random valid point of the unified space, including combinations no paper named."""
    unit = rng.choice(["pre", "post", "warp"])
    units = tuple(rng.randint(1, 6) for _ in range(3))
    if unit == "warp":
        k = rng.randint(1, 3)
        units = tuple(u * k for u in units)
        stem = rng.choice([8, 16, 24])
        kw = rng.randint(1, 4)
        return ArchSpec(unit="warp", units=units, stem=stem, widths=(stem * kw, 2 * stem * kw, 4 * stem * kw),
                        warp_k=k, warp_variant=rng.choice([1, 2]), warp_bn=rng.random() < 0.5,
                        kernels=rng.choice([(3, 3), (3, 3, 3)]), num_classes=10)
    function = rng.choice(["basic", "basic", "bottleneck"])
    kernels = rng.choice([(3, 3), (1, 3, 1), (3,), (3, 1)]) if function == "basic" else (3, 3)
    width_kind = rng.choice(["base", "w", "c", "stages"])
    widths = {"base": (16, 32, 64), "w": tuple(rng.randint(2, 4) * x for x in (16, 32, 64)),
              "c": (lambda c: (c, 2 * c, 4 * c))(rng.randint(4, 30)),
              "stages": tuple(rng.randint(4, 80) for _ in range(3))}[width_kind]
    branches = rng.randint(1, 5)
    combine = rng.choice(["sum", "merge"]) if unit == "post" else "sum"
    shortcut = rng.choice(["pad", "proj"])
    if shortcut == "pad" and (widths[1] < widths[0] or widths[2] < widths[1] or 16 > widths[0] * (
            4 if function == "bottleneck" else 1)):
        shortcut = "proj"
    return ArchSpec(unit=unit, function=function, kernels=kernels, units=units, widths=widths,
                    branches=branches, combine=combine, shortcut=shortcut,
                    dropout=rng.choice([0.0, 0.0, 0.3]), num_classes=10)


def test_round_trip_over_random_specs() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        spec = random_spec(rng)
        name = spec.name
        assert parse_name(name) == spec, name
        assert parse_name(name).name == name
        assert ArchSpec.from_dict(spec.to_dict()) == spec
        assert ArchSpec.from_json(spec.to_json()) == spec


def test_dict_forms_and_classes() -> None:
    assert as_spec({"name": "resnet-20", "num_classes": 100}).num_classes == 100
    assert as_spec("resnet-20", num_classes=100) == parse_name("resnet-20", num_classes=100)
    with pytest.raises(SpecError, match="unknown spec keys"):
        ArchSpec.from_dict({"unit": "pre", "depth": 3})


BAD_NAMES = {
    "resnet-111": "6n\\+2",
    "dmrnet-56-K0": ">= 1",
    "wrn-40-2-b9": "kernels",
    "warpnet-37-4-K4": "divisible",
    "resnet-24-u4.4.4": "disagrees",
    "resnet-20-k2": "multiresnet",
    "multiresnet-20": "function count",
    "wrn-40": "widening factor",
    "resnet-20-v2": "warpnet only",
    "foonet-20": "unknown family",
    "resnet-20-zzz": "unknown suffix",
    "resnet-21-bottleneck": "9n\\+2",
    "dvanet-20-K2-pad-proj": "twice",
    "multiresnet-8-k6-c6": r"-pad shortcuts cannot reduce channels \(16-channel stem → 6\): use -proj or widths ≥ 16",
    "resnet-8-c20.10.40-pad": r"cannot reduce channels \(stage 1's 20 channels → 10\): use -proj or widths ≥ 20",
    "resnet-２０": "architecture names are ASCII",
    "resnet-20-c１６": "architecture names are ASCII",
}


@pytest.mark.parametrize(("name", "reason"), BAD_NAMES.items())
def test_bad_names_name_the_reason_and_valid_forms(name: str, reason: str) -> None:
    with pytest.raises(SpecError, match=reason) as info:
        parse_name(name)
    assert "valid forms" in str(info.value)
    assert "\n" not in str(info.value)


def test_every_name_the_parser_accepts_builds() -> None:
    """The parser refuses what the builder would: -proj of the same widths builds."""
    import torch

    from archsearch.nn.build import build

    net = build("multiresnet-8-k6-c6-proj", strategy="loop")
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(SpecError, match="cannot reduce channels"):
        ArchSpec(unit="pre", widths=(6, 12, 24), shortcut="pad")  # the dict/spec form is checked too


@pytest.mark.parametrize("name", ["resnet-111", "dmrnet-56-K0", "wrn-40-2-b9", "warpnet-37-4-K4",
                                  "multiresnet-8-k6-c6", "resnet-２０"])
def test_count_cli_bad_name_exit_2_one_line(name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "archsearch.cli", "count", name], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert name in lines[0] and "valid forms" in lines[0]
