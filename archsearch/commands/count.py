"""`archsearch count NAME`: parameters, MACs and path statistics of one architecture."""

from __future__ import annotations

import argparse
import json

from archsearch.commands import positive_int

HELP = "count params, MACs (fvcore, eval, 1x3x32x32), depth, units and path statistics of a network"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="architecture name, e.g. dmrnet-50-K2")
    parser.add_argument("--num-classes", type=positive_int, default=10)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace) -> int:
    from archsearch.arch.spec import parse_name
    from archsearch.nn.complexity import count

    specs = [parse_name(name, num_classes=args.num_classes) for name in args.names]  # fail before counting
    for spec in specs:
        result = count(spec, num_classes=args.num_classes)
        if spec.unit == "warp" and spec.warp_k > 1:
            result_note = ("macs: fvcore count of the sequential -K1 twin plus one F pass per "
                           "derivative term (fvcore cannot trace forward-mode AD)")
        else:
            result_note = ""
        if args.json:
            out = dict(result)
            if result_note:
                out["macs_method"] = result_note
            print(json.dumps(out))
            continue
        print(f"{result['name']}")
        print(f"  params            {result['params']:,}")
        print(f"  macs              {result['macs']:,}")
        if result_note:
            print(f"                    ({result_note})")
        print(f"  depth             {result['depth']}")
        print(f"  units per stage   {'/'.join(map(str, result['units']))}")
        print(f"  paths             {result['paths']:,}")
        print(f"  path length       {result['path_length_mean']:.2f} ± {result['path_length_std']:.2f}")
    return 0
