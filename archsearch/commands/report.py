"""`archsearch report`: write a study's answers (n₀, best K, WRN, fidelity) and attach them to it.

    archsearch report STUDY.yaml [--out DIR]
    archsearch report --storage URL --study NAME [--out DIR]

The study file is read with `archsearch.study.config.load_study` (its name and storage URL).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from archsearch.commands import positive_int
from archsearch.errors import ConfigError
from archsearch.study.runs import resolve_runs_dir

HELP = "write a study's report (n0, best K, WRN width/depth, EDFs, Pareto fronts, fidelity checks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", nargs="?", metavar="STUDY.yaml", help="study file (or --storage/--study)")
    parser.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///runs/NAME/study.db")
    parser.add_argument("--study", dest="study_name", metavar="NAME", help="study name in --storage")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="report folder (default runs/<study>/report/; artifacts in runs/<study>/artifacts/, "
                             "or DIR/artifacts/ with --out)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--n-boot", type=positive_int, default=2000, help="bootstrap resamples (default 2000)")


def run(args: argparse.Namespace) -> int:
    from archsearch.analysis.report import write_report  # lazy: plotly and matplotlib load only for this command

    name, storage = study_location(args)
    study = load_study(name, storage)
    runs = resolve_runs_dir()[0]  # the folder `archsearch run` wrote (ARCHSEARCH_RUNS), shown as typed
    run_dir = (runs.relative_to(Path.cwd().resolve()) if runs.is_relative_to(Path.cwd().resolve()) else runs) / name
    out = args.out if args.out is not None else run_dir / "report"
    artifacts = out / "artifacts" if args.out is not None else run_dir / "artifacts"
    path = write_report(study, out, seed=args.seed, n_boot=args.n_boot, artifact_dir=artifacts)
    print(f"report written to {path}")
    print(f"attached to study {name!r}: user attribute report_path, artifacts in {artifacts}, dashboard note")
    return 0


def study_location(args: argparse.Namespace) -> tuple[str, str]:
    """(study name, storage URL) from a study file or from --storage/--study."""
    if args.study_file:
        if args.storage or args.study_name:
            raise ConfigError("give either STUDY.yaml or --storage/--study, not both")
        return study_file_location(Path(args.study_file))
    if not (args.storage and args.study_name):
        raise ConfigError("give STUDY.yaml, or both --storage URL and --study NAME")
    return args.study_name, args.storage


def study_file_location(path: Path) -> tuple[str, str]:
    """Name and storage URL of a study file (the same reading `archsearch export` uses)."""
    from archsearch.export.writer import study_location

    return study_location(path)


def load_study(name: str, storage: str) -> Any:
    """Open an existing study; a missing database or study is a one-line ConfigError, not a new study."""
    from archsearch.study.lifecycle import load_existing_study

    return load_existing_study(storage, name, where="report")
