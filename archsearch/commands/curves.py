"""`archsearch curves`: a study's per-epoch validation errors as a CSV table (the input `archsearch replay` reads).

    archsearch curves STUDY.yaml [--out FILE.csv]      # header name,seed,epoch,val_error[,seconds]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write every stored trial's per-epoch validation errors as CSV (name,seed,epoch,val_error[,seconds])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", metavar="STUDY.yaml", help="the study file")
    parser.add_argument("--out", type=Path, metavar="FILE.csv", help="write here (default: standard output)")
    parser.add_argument("--runs-dir", metavar="DIR", help="the folder the study ran in (as for run)")


def run(args: argparse.Namespace) -> int:
    from archsearch.analysis.curves import write_curves
    from archsearch.study.config import load_study
    from archsearch.study.lifecycle import load_existing_study
    from archsearch.study.records import load_records

    config = load_study(args.study_file, runs_dir=args.runs_dir)
    study = load_existing_study(config.storage_url, config.name, where=str(config.path))
    records = load_records(study)
    if args.out is None:
        write_curves(records, sys.stdout)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with tmp.open("w", newline="") as f:
        n = write_curves(records, f)
    tmp.replace(args.out)
    print(f"{n} rows ({len({(r.name, r.seed) for r in records if r.intermediate})} trials) written to {args.out}")
    return 0
