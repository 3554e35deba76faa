"""Budget engine speed: one sampled-and-fitted candidate vs one fvcore count of the same model.

For seeded samples of every shipped space this times (a) the sampler's work for one candidate:
the define-by-run walk plus fitting the candidate's free axes from its nominal spec onto the budget
and the exact analytic count (params, MACs, path statistics), and (b) one uncached
`archsearch.nn.complexity.count` (fvcore trace) of the fitted model. Target: (a) <= 20 ms.

    .venv/bin/python benchmarks/budget.py [--per-space 4] [--out benchmarks/results/budget.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archsearch.arch import cost as fastcount  # noqa: E402
from archsearch.nn import complexity as budget  # noqa: E402
from archsearch.space.fitting import fit_spec  # noqa: E402
from archsearch.space.space import RandomTrial, load_space, sample_candidate  # noqa: E402

TARGET_MS = 20.0


def time_candidate(space, rng: random.Random, repeats: int = 5):
    """Median seconds of sample + fit + exact count for one random candidate, and the candidate."""
    state = rng.getstate()
    timings = []
    for _ in range(repeats):
        rng.setstate(state)
        start = time.perf_counter()
        c = sample_candidate(RandomTrial(rng), space)
        if c.fit is not None:
            fitted = fit_spec(c.nominal, c.fit, space.budget(c.budget), c.fit_ranges)
            assert fitted.spec == c.spec
        fastcount.count(c.spec)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings), c


def time_fvcore(spec) -> float:
    budget._count_cached.cache_clear()
    start = time.perf_counter()
    budget.count(spec)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-space", type=int, default=4, help="fvcore-timed candidates per space")
    parser.add_argument("--fit-samples", type=int, default=200, help="fit-timed candidates per space")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "budget.json"))
    args = parser.parse_args(argv)

    rows, spaces = [], {}
    all_fit_ms = []
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        start = time.perf_counter()
        space = load_space(path)
        load_s = time.perf_counter() - start
        rng = random.Random(f"{args.seed}:{path.stem}")
        fit_ms = []
        for _ in range(args.fit_samples):
            seconds, _ = time_candidate(space, rng, repeats=1)
            fit_ms.append(seconds * 1e3)
        all_fit_ms += fit_ms
        for _ in range(args.per_space):
            for _ in range(20):  # prefer fitted candidates (paper networks listed as is need no fit)
                seconds, c = time_candidate(space, rng)
                if c.fit is not None:
                    break
            fv = time_fvcore(c.spec)
            rows.append({"space": path.stem, "name": c.name, "fitted": bool(c.fit), "params": c.params,
                         "macs": c.macs, "sample_fit_ms": round(seconds * 1e3, 3), "fvcore_s": round(fv, 3),
                         "ratio": round(fv / seconds, 1)})
            print(f"{path.stem:<20} {c.name:<36} fit {seconds * 1e3:7.2f} ms   fvcore {fv:6.2f} s   "
                  f"x{fv / seconds:,.0f}", flush=True)
        spaces[path.stem] = {"grid_points": len(space.points), "load_s": round(load_s, 3),
                             "load_ms_per_grid_point": round(load_s * 1e3 / len(space.points), 2),
                             "sample_fit_ms_median": round(statistics.median(fit_ms), 3),
                             "sample_fit_ms_p95": round(sorted(fit_ms)[int(0.95 * len(fit_ms))], 3),
                             "sample_fit_ms_max": round(max(fit_ms), 3)}
    median_fit = statistics.median(r["sample_fit_ms"] for r in rows)
    median_fv = statistics.median(r["fvcore_s"] for r in rows)
    result = {
        "what": "median time per sampled-and-fitted candidate (define-by-run walk + fit of the free axes from "
                "the nominal spec + exact analytic count) vs one uncached fvcore count "
                "(archsearch.nn.complexity.count) of the same model",
        "target_ms": TARGET_MS,
        "sample_fit_ms_median": round(median_fit, 3),
        "sample_fit_ms_median_all_samples": round(statistics.median(all_fit_ms), 3),
        "sample_fit_ms_p95_all_samples": round(sorted(all_fit_ms)[int(0.95 * len(all_fit_ms))], 3),
        "sample_fit_ms_max_all_samples": round(max(all_fit_ms), 3),
        "fvcore_s_median": round(median_fv, 3),
        "ratio_median": round(statistics.median(r["ratio"] for r in rows), 1),
        "meets_target": median_fit <= TARGET_MS,
        "spaces": spaces,
        "candidates": rows,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": __import__("os").cpu_count()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"median sample+fit {median_fit:.2f} ms (target <= {TARGET_MS} ms), fvcore {median_fv:.2f} s, "
          f"ratio x{result['ratio_median']:,.0f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
