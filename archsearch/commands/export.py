"""`archsearch export`: architectures as standalone PyTorch code (+ weights and a model card).

    archsearch export STUDY.yaml --top N [--out DIR]          best N of a study (runs/<study>/export/)
    archsearch export --storage URL --study NAME --top N      the same, storage given directly
    archsearch export NAME|SPEC.yaml [--weights CKPT] [--out DIR]   one architecture (exports/)

A study file is told from a spec file by its keys: a spec file holds ArchSpec fields or
{name: <architecture>}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsearch.commands import positive_int
from archsearch.errors import ArchsearchError
from archsearch.study.runs import resolve_runs_dir

if TYPE_CHECKING:
    from archsearch.export.writer import ExportResult

HELP = "export architectures (a study's best, or one by name/spec file) as standalone PyTorch code"
DEFAULT_TOP = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", metavar="STUDY.yaml|NAME|SPEC.yaml",
                        help="a study file, an architecture name (e.g. dmrnet-50-K2) or a spec file")
    parser.add_argument("--top", type=positive_int, default=None,
                        help=f"how many of the study's best architectures to export (default {DEFAULT_TOP})")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default runs/<study>/export/ for a study, exports/ otherwise)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="checkpoint of one architecture: a state_dict or a trainer checkpoint")
    parser.add_argument("--num-classes", type=positive_int, default=None,
                        help="classes of a named architecture (default: from --weights, else 10)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL of the study (with --study)")
    parser.add_argument("--study", default=None, help="study name in --storage")
    parser.add_argument("--no-verify", action="store_true", help="skip the round-trip check of the written code")


def run(args: argparse.Namespace) -> int:
    from archsearch.export.writer import export_architecture, is_spec_mapping, read_yaml, study_location
    verify = not args.no_verify
    if args.storage is not None or args.study is not None:
        if args.storage is None or args.study is None:
            raise ArchsearchError("--storage and --study go together")
        if args.target is not None:
            raise ArchsearchError("give either a target or --storage/--study, not both")
        return _study(args.storage, args.study, args, verify)
    if args.target is None:
        raise ArchsearchError("nothing to export: give a study file, an architecture name or a spec file")
    target = Path(args.target)
    spec: str | dict[str, Any] = args.target
    if target.suffix.lower() in (".yaml", ".yml") or target.is_file():
        data = read_yaml(target)
        if not is_spec_mapping(data):
            if args.weights is not None or args.num_classes is not None:
                raise ArchsearchError("--weights/--num-classes apply to one architecture, not a study file")
            name, storage = study_location(target)
            return _study(storage, name, args, verify)
        spec = data  # a dict: as_spec reads it, and the class count may come from --weights
    if args.top is not None:
        raise ArchsearchError("--top applies to studies; give a study file or --storage/--study")
    result = export_architecture(spec, args.out or Path("exports"), weights=args.weights,
                                 num_classes=args.num_classes, verify=verify)
    _print_result(result)
    return 0


def _study(storage: str, name: str, args: argparse.Namespace, verify: bool) -> int:
    from archsearch.export.writer import export_study

    runs = resolve_runs_dir()[0]  # beside the study (ARCHSEARCH_RUNS), shown as typed
    runs = runs.relative_to(Path.cwd().resolve()) if runs.is_relative_to(Path.cwd().resolve()) else runs
    out = args.out or runs / name / "export"
    results = export_study(storage, name, out, top=DEFAULT_TOP if args.top is None else args.top, verify=verify)
    for rank, result in enumerate(results, start=1):
        _print_result(result, rank)
    print(f"ranking: {out / 'ranking.md'}")
    return 0


def _print_result(result: ExportResult, rank: int | None = None) -> None:
    m = result.metrics
    bits = [f"{m['params']:,} params", f"{m['macs']:,} MACs"]
    if m.get("val_error") is not None:
        bits.append(f"val error {m['val_error']:.2f} %" + (f" (seed {m['seed']})" if m.get("seed") is not None else ""))
    if m.get("test_error") is not None:
        bits.append(f"test error {m['test_error']:.2f} %")
    prefix = f"{rank}. " if rank is not None else ""
    untrained = "" if result.weights is not None else " [no weights]"
    print(f"{prefix}{result.name}: {', '.join(bits)}{untrained}")
    for path in result.paths:
        print(f"    wrote {path}")
