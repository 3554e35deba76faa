"""Best of several options: the best K per branching family and budget, the best WRN width × depth.

Each option's error is its best candidate's mean over seeds; P(best) and the interval come from
the seed bootstrap (`archsearch.analysis.stats`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from archsearch.analysis.candidates import block_of, budget_sort_key, no_data_message, values_by_name
from archsearch.analysis.stats import LEVEL, N_BOOT, bootstrap_means, interval, seeded_rng
from archsearch.study.records import TrialRecord

BEST_K_GROUPS = {  # family asked about → families whose trials enter (the K = 1 baseline included)
    "multiresnet": ("multiresnet", "resnet"),
    "dmrnet": ("dmrnet", "postresnet"),
    "dvanet": ("dvanet", "postresnet"),
    "warpnet": ("warpnet",),
}


@dataclass
class Option:
    """One choice (a K, or a WRN candidate): its best candidate's mean error, CI, P(best)."""

    label: str
    value: Any
    name: str  # the candidate that carries this option (lowest mean among its names)
    names: list[str]
    mean: float
    std: float | None
    n: int
    ci: tuple[float, float]
    p_best: float


@dataclass
class BestResult:
    """The option of lowest mean error, with each option's bootstrap probability of being best."""

    question: str  # "best K" | "WRN width/depth"
    family: str
    budget: str
    status: str  # ok | insufficient
    best: Option | None = None
    options: list[Option] = field(default_factory=list)
    message: str = ""


def best_of(
    options: dict[Any, list[str]], values: dict[str, np.ndarray], *, labels: dict[Any, str] | None = None,
    seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL, stream: tuple[int, ...] = (),
) -> tuple[Option, list[Option]]:
    """Argmin of mean error over options; an option with several names counts its best one.

    P(best) is the share of bootstrap replicates in which the option has the lowest error (the best
    name re-chosen in each). The interval is the chosen option's own replicate distribution.
    """
    rng = seeded_rng(seed, 2, *stream)
    keys = list(options)
    boots = {n: bootstrap_means(values[n], n_boot, rng) for k in keys for n in options[k]}
    opt_boot = np.stack([np.min([boots[n] for n in options[k]], axis=0) for k in keys])
    p = np.bincount(np.argmin(opt_boot, axis=0), minlength=len(keys)) / n_boot
    out = []
    for i, k in enumerate(keys):
        name = min(options[k], key=lambda n: values[n].mean())
        v = values[name]
        ci = interval(opt_boot[i], level, point=float(v.mean()), df=len(v) - 1)
        out.append(Option((labels or {}).get(k, str(k)), k, name, list(options[k]), float(v.mean()),
                          float(v.std(ddof=1)) if len(v) > 1 else None, len(v), ci, float(p[i])))
    return min(out, key=lambda o: o.mean), out


def best_k(
    records: list[TrialRecord], *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL
) -> list[BestResult]:
    """Best K per family (dmrnet, dvanet, multiresnet by block kind, warpnet) and budget.

    The K = 1 baseline (postresnet for dmrnet/dvanet, resnet for multiresnet) joins at budgets where
    the family has trials. Several names with one K (e.g. both of DMRNet Fig. 7's settings) count
    the best of them for that K; the per-name table shows them all.
    """
    results = []
    for f_i, (family, fams) in enumerate(BEST_K_GROUPS.items()):
        present = [r for r in records if r.family == family]
        if not present:
            continue
        group = [r for r in records if r.family in fams and r.usable and block_of(r.name) != "wide"]
        main = [r for r in group if r.family == family]
        if not main:
            msg = no_data_message(family, present)
            results.append(BestResult("best K", family, "all", "insufficient", message=msg))
            continue
        keys = sorted({(r.budget, block_of(r.name)) for r in main},
                      key=lambda k: (k[1], budget_sort_key(k[0])))
        for i, (budget, block) in enumerate(keys):
            rs = [r for r in group if r.budget == budget and block_of(r.name) == block]
            label = family if block == "basic" else f"{family} ({block})"
            results.append(_best_of_records(
                "best K", label, budget, rs, lambda r: r.branches or 1, lambda k: f"K={k}",
                seed=seed, stream=(3, f_i, i), n_boot=n_boot, level=level))
    return results


def wrn_analysis(
    records: list[TrialRecord], *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL
) -> list[BestResult]:
    """Best WRN depth × width per budget; plain basic ResNets join as the deep-and-thin option."""
    present = [r for r in records if r.family == "wrn"]
    if not present:
        return []
    main = [r for r in present if r.usable]
    if not main:
        return [BestResult("WRN width/depth", "wrn", "all", "insufficient", message=no_data_message("wrn", present))]
    deep = [r for r in records if r.family == "resnet" and r.usable and block_of(r.name) == "basic"]
    results = []
    for i, budget in enumerate(sorted({r.budget for r in main}, key=budget_sort_key)):
        rs = [r for r in main + deep if r.budget == budget]
        results.append(_best_of_records(
            "WRN width/depth", "wrn", budget, rs, lambda r: r.name,
            lambda n: n, seed=seed, stream=(4, i), n_boot=n_boot, level=level))
    return results


def _best_of_records(question, family, budget, rs, key_fn, label_fn, *, seed, stream, n_boot, level):
    values = values_by_name(rs)
    options: dict[Any, list[str]] = defaultdict(list)
    for name in values:
        options[key_fn(next(r for r in rs if r.name == name))].append(name)
    options = dict(sorted(options.items(), key=lambda kv: str(kv[0]) if isinstance(kv[0], str) else kv[0]))
    if len(options) < 2:
        only = ", ".join(label_fn(k) for k in options)
        return BestResult(question, family, budget, "insufficient",
                          message=f"only one option measured at full fidelity ({only}): nothing to compare")
    best, opts = best_of(options, values, labels={k: label_fn(k) for k in options},
                         seed=seed, stream=stream, n_boot=n_boot, level=level)
    return BestResult(question, family, budget, "ok", best, opts)
