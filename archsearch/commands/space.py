"""`archsearch space show|sample|grid SPACE.yaml`: inspect a search space before running a study."""

from __future__ import annotations

import argparse
import json
from typing import Any

from archsearch.commands import positive_int

HELP = "inspect a search space: its axes and budgets (show), seeded samples (sample), the full grid (grid)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="space_command", required=True, metavar="{show,sample,grid}")
    show = sub.add_parser("show", help="axes, budgets, grid size and the range of counts on budget")
    show.add_argument("space", metavar="SPACE.yaml")
    sample = sub.add_parser("sample", help="N seeded samples (as a random sampler draws them)")
    sample.add_argument("space", metavar="SPACE.yaml")
    sample.add_argument("-n", type=positive_int, default=10, help="number of samples (default 10)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--json", action="store_true", help="a JSON list of {name, params, macs, spec, ...}")
    grid = sub.add_parser("grid", help="every feasible candidate (the exhaustive baseline)")
    grid.add_argument("space", metavar="SPACE.yaml")
    grid.add_argument("--json", action="store_true", help="a JSON list of {name, params, macs, spec, ...}")


def _row(c: Any) -> str:
    fitted = " ".join(f"{k}={'.'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in c.fitted.items())
    flag = "" if c.on_budget else "  (off budget: listed as is)"
    return (f"{c.name:<40} {c.family:<12} {c.budget:>6} {c.params:>12,} {c.macs:>15,}  "
            f"{fitted}{flag}")


def _header() -> str:
    return f"{'name':<40} {'family':<12} {'budget':>6} {'params':>12} {'macs':>15}  fitted"


def _print_list(candidates: list[Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps([c.to_dict() for c in candidates], indent=1))
        return
    print(_header())
    for c in candidates:
        print(_row(c))


def run(args: argparse.Namespace) -> int:
    from archsearch.space.space import grid, load_space, random_samples, space_fingerprint

    space = load_space(args.space)
    if args.space_command == "sample":
        if args.n < 1:
            from archsearch.errors import ConfigError

            raise ConfigError(f"-n must be >= 1, got {args.n}")
        _print_list(random_samples(space, args.n, args.seed), args.json)
        return 0
    if args.space_command == "grid":
        _print_list(grid(space), args.json)
        return 0
    _show(space, space_fingerprint(space))
    return 0


def _show(space: Any, fingerprint: str) -> None:
    cfg = space.config
    print(f"space {space.name}  ({space.path}, fingerprint {fingerprint})")
    if cfg.description:
        print(f"  {cfg.description.strip()}")
    for b in cfg.budgets:
        parts = []
        if b.params is not None:
            parts.append(f"params {b.params:,} ±{b.tolerance:.1%}")
        if b.macs is not None:
            tol = b.macs_tolerance if b.macs_tolerance is not None else b.tolerance
            parts.append(f"macs {b.macs:,} ±{tol:.1%}")
        print(f"budget {b.label}: {' and '.join(parts)}, method {b.method}")
    for fam, axes in space.axes.items():
        shown = ", ".join(f"{a}={v if len(v) > 1 else v[0]}" for a, v in axes.items()) or "-"
        fit = space.fit_axes.get(fam) or []
        print(f"family {fam}: {shown}" + (f"; fitted: {fit}" if fit else ""))
    if cfg.candidates:
        print(f"candidates: {', '.join(c.name + (' (fitted)' if c.fit else '') for c in cfg.candidates)}")
    print(f"grid points: {len(space.points)} feasible"
          + (f", {len(space.infeasible)} combinations skipped (cannot meet the budget)" if space.infeasible else ""))
    for label in [b.label for b in cfg.budgets] or [""]:
        group = [c for c in space.points if c.budget == label]
        on = [c for c in group if c.on_budget]
        if not group:
            continue
        p = [c.params for c in on] or [0]
        m = [c.macs for c in on] or [0]
        print(f"  budget {label or '-'}: {len(group)} points ({len(group) - len(on)} listed off budget); on budget "
              f"params {min(p):,}–{max(p):,}, macs {min(m):,}–{max(m):,}")
    params = sorted({k for c in space.points for k in c.trial_params})
    print(f"suggest parameters: {', '.join(params) or '-'}")
