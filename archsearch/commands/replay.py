"""`archsearch replay`: run a study's search on a table of curves, with simulated time and no training.

    archsearch replay STUDY.yaml --curves FILE.csv [--json] [--set search.method=grid] [--slots N]

The study's questions and candidates come from its file and space (as `run` resolves them); the seeds are its
`seeds:` pool; the search is its `search:` (a race) or the exhaustive grid. A row the search asks for that the
table lacks, or a malformed row, is a one-line error (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os

HELP = "replay a study's search (race or grid) on tabulated curves, without training"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_file", metavar="STUDY.yaml", help="the study file")
    parser.add_argument("--curves", required=True, metavar="FILE.csv", help="name,seed,epoch,val_error[,seconds]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study key (VALUE parsed as YAML), e.g. search.method=grid")
    parser.add_argument("--slots", type=int, default=None, help="trials at once for the simulated time "
                        "(default: resources.max_concurrent, else this machine's CPUs / resources.cpus)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from archsearch.analysis.curves import read_curves
    from archsearch.analysis.questions import describe
    from archsearch.study.config import load_study

    config = load_study(args.study_file, args.overrides)
    table = read_curves(args.curves)
    out = replay_config(config, table, slots=args.slots)
    if args.json:
        print(json.dumps({"study": config.name, **out.as_json()}, indent=1))
        return 0
    print(f"{config.name}: {out.method} on {args.curves}: {out.epochs_trained} epochs trained of {out.grid_epochs} "
          f"in the table ({out.epochs_trained / out.grid_epochs:.1%}), {len(out.requested)} trials in "
          f"{len(out.rounds)} round(s), simulated {out.simulated_seconds / 60:.1f} min ({out.time_source})")
    for a in out.answers:
        print(f"answer {a.id}: {describe(a)}")
    return 0


def replay_config(config, table, *, slots: int | None = None):  # noqa: ANN001, ANN201 - StudyConfig, CurveTable
    """The study's search replayed on `table` (archsearch.analysis.curves.replay) with its own settings."""
    from archsearch.analysis.curves import NOMINAL_MACS_PER_S, replay
    from archsearch.analysis.race import RaceSettings
    from archsearch.errors import ConfigError
    from archsearch.space.space import grid
    from archsearch.study.asked import study_questions
    from archsearch.study.lifecycle import load_space_of

    space = load_space_of(config)
    points = grid(space)
    questions = study_questions(config, points)
    search = config.search
    method = search.method if search is not None else ("grid" if config.sampler == "grid" else config.sampler)
    if method == "race" and not questions:
        raise ConfigError(f"{config.path}: questions: a race needs at least one question")
    names = list(dict.fromkeys(p.name for p in points))
    settings = RaceSettings(search.min_seeds, search.max_seeds, search.confidence, config.max_epochs) if search \
        else RaceSettings(3, len(config.seed_list), 0.95, config.max_epochs)
    macs = {p.name: float(p.macs or 0) for p in points}
    images = config.train_config.subset or 50000
    if slots is None:
        slots = config.resources.max_concurrent or max(1, int((os.cpu_count() or 1) // config.resources.cpus))
    return replay(questions, names, config.seed_list, method=method, settings=settings, table=table, slots=slots,
                  job_seconds=lambda j: 3 * macs.get(j.name, 0.0) * images * j.epoch / NOMINAL_MACS_PER_S)
