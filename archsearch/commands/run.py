"""`archsearch run STUDY.yaml`: run or resume an architecture search on Ray Tune + Optuna + ASHA."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archsearch.commands import positive_int

HELP = "run (or --resume) a study: Ray Tune trials, ASHA early stopping, Optuna storage as the record"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="study file (see studies/tiny.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an existing study: keep finished trials, continue interrupted ones")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (candidates, budgets, epochs), run nothing")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study key, e.g. --set train.epochs=2 (value parsed as YAML; repeatable)")
    parser.add_argument("--address", default=None,
                        help="join an existing Ray cluster (HOST:PORT, ray://HOST:PORT or auto) instead of a local one")
    parser.add_argument("--n-trials", type=positive_int, default=None, metavar="N",
                        help="override n_trials (COMPLETE + PRUNED to reach)")
    parser.add_argument("--runs-dir", default=None, metavar="DIR",
                        help="results folder (default: $ARCHSEARCH_RUNS, else runs/ in the working directory)")
    parser.add_argument("--yes", action="store_true",
                        help="start even when the estimate on this machine exceeds 24 hours (no question asked)")


def run(args: argparse.Namespace) -> int:
    from archsearch.errors import ConfigError
    from archsearch.study.config import load_study

    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"{args.study}: --n-trials: must be at least 1, got {args.n_trials}")
    config = load_study(args.study, args.overrides, n_trials=args.n_trials, runs_dir=args.runs_dir)
    if args.dry_run:
        return _dry_run(config, args.address)

    if not args.resume and not args.address and not _may_start(config, args.yes):
        print("not started", file=sys.stderr)
        return 1
    from archsearch.orchestrate.run import run_study  # lazy: imports Ray, which --dry-run and --help never need

    result = run_study(config, resume=args.resume, address=args.address, planner=_planner(config))
    _print_summary(config, result)
    if result.get("session_interrupted"):
        return int(result.get("exit_code") or 130)  # 128 + the signal: SIGINT 130, SIGHUP 129, SIGTERM 143
    _finish(config)
    return 0


def _planner(config):  # noqa: ANN001, ANN202 - a StudyConfig; (questions, records) -> jobs, or None
    """A race's planner: the analysis decides each look's trials, orchestration only runs them."""
    if config.search is None or config.search.method != "race":
        return None
    from archsearch.analysis.race import next_jobs

    return lambda questions, records: next_jobs(config, questions, records)


def _may_start(config, yes: bool) -> bool:  # noqa: ANN001 - a StudyConfig
    """A fresh local run expected to exceed a day starts only when confirmed (terminal) or with --yes."""
    from archsearch.orchestrate.cost import check_long_run
    from archsearch.study.lifecycle import load_space_of

    return check_long_run(config, load_space_of(config), yes=yes)


def _finish(config) -> None:  # noqa: ANN001 - a StudyConfig
    """The answers and the winners, where a researcher expects them when the run ends."""
    from archsearch.analysis.race import answers_of_study
    from archsearch.study.lifecycle import load_existing_study
    from archsearch.study.records import load_records

    study = load_existing_study(config.storage_url, config.name, where=str(config.path))
    asked, raced = answers_of_study(dict(study.user_attrs), load_records(study))
    if raced is not None:
        print(f"race: {len(raced.rounds)} look(s), {raced.epochs_trained} epochs trained, seeds per candidate "
              + ", ".join(f"{n} {k}" for n, k in raced.seeds_used.items()))
    for answer in asked.answers:
        print(f"answer {answer.line()}")
    if config.report:
        from archsearch.analysis.report import write_report

        path = write_report(study, config.run_dir / "report", artifact_dir=config.run_dir / "artifacts")
        print(f"report: {_shown(path)}")
    if config.export_top:
        from archsearch.export.weights import ExportError
        from archsearch.export.writer import export_study

        try:
            exported = export_study(config.storage_url, config.name, config.run_dir / "export", top=config.export_top)
        except ExportError as exc:  # e.g. no full-fidelity trial finished: say so, the study itself is fine
            print(f"export: nothing exported ({exc})")
            return
        for item in exported:
            weights = f" (weights {_shown(item.weights)})" if item.weights else ""
            print(f"exported: {item.name} -> {_shown(item.code)}{weights}")


def _shown(path: str | Path) -> str:
    """A path as the user would type it: relative to the working directory when it lies inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _dry_run(config, address: str | None = None) -> int:  # noqa: ANN001 - a StudyConfig
    from archsearch.errors import ConfigError
    from archsearch.orchestrate.plan import describe_plan
    from archsearch.orchestrate.preflight import problems
    from archsearch.space.space import grid
    from archsearch.study.asked import study_questions
    from archsearch.study.lifecycle import load_existing_study, load_space_of, summary
    from archsearch.study.storage import open_storage, storage_exists, study_id

    space = load_space_of(config)
    existing = None
    url = config.storage_url
    if storage_exists(url) is not False:  # never create a storage for a dry run
        try:
            storage = open_storage(url, where=str(config.path), create=False)
            sid = study_id(storage, config.name)
            if sid is not None:
                s = summary(load_existing_study(url, config.name, where=str(config.path)))
                counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(s["counts"].items())) or "no trials"
                existing = f"study exists: {counts}; continue it with --resume"
        except Exception as exc:  # noqa: BLE001 - the plan is still worth printing
            existing = f"cannot read: {getattr(exc, 'reason', exc)}"  # the line names the storage already
    for line in describe_plan(config, space, existing):
        print(line)
    asked = study_questions(config, grid(space))  # an ambiguous question is a one-line error here too
    source = "declared" if config.questions is not None else "derived"
    print(f"  questions      {len(asked)} ({source})")
    for rq in asked:
        print(f"    {rq.question.id:24s} {rq.question.kind}: {', '.join(sorted(rq.names))}")
    found = problems(config, address=address)
    if found:  # what `run` would refuse, all at once, each with its fix
        raise ConfigError(f"{config.path}: cannot run here: " + "; ".join(found))
    print("  checks         results folder writable, data found, resources fit: ok")
    for line in _estimate_lines(config, space):
        print(line)
    return 0


def _estimate_lines(config, space) -> list[str]:  # noqa: ANN001 - a StudyConfig and its space
    """The expected wall time and device-hours on this machine (calibration progress on stderr)."""
    from archsearch.errors import ArchsearchError
    from archsearch.orchestrate.cost import estimate_cost

    try:
        return estimate_cost(config, space, progress=lambda line: print(line, file=sys.stderr, flush=True)).lines()
    except (ArchsearchError, RuntimeError, OSError) as exc:  # the plan above stands without it
        return [f"  estimate       unavailable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"]


def _print_summary(config, result: dict) -> None:  # noqa: ANN001 - a StudyConfig
    counts = result["counts"]
    order = ["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
    text = ", ".join(f"{counts[k]} {k.lower()}" for k in order if counts.get(k))
    target = config.n_trials if config.n_trials is not None else "-"
    print(f"study {result['study']}: {text or 'no trials'} ({result['counted']} count toward n_trials={target})")
    if result.get("interrupted_trials"):
        print(f"  {result['interrupted_trials']} of the failed trials were interrupted (each is continued, from its "
              "checkpoint, by a later trial with resumed_from)")
    best = result.get("best")
    if best:
        seeds = f"{best['seeds']} seed" + ("s" if best["seeds"] != 1 else "")
        print(f"best: {best['name']} val_error {best['val_error']:.2f}% (mean of {seeds}; "
              f"best trial #{best['number']})")
    else:
        print("best: no full-fidelity COMPLETE trial yet")
    if result.get("continued"):
        print(f"continued interrupted trials {result['continued']} from their checkpoints")
    ray_logs = f"; Ray logs in {_shown(result['ray_dir'])}" if Path(result["ray_dir"]).is_dir() else ""
    print(f"results: {result['storage']} (Optuna); checkpoints in {_shown(Path(result['run_dir']) / 'trials')}"
          + ray_logs)
    print(f"inspect: archsearch dashboard {_shown(config.path)}")
    if result.get("session_interrupted"):
        print(f"interrupted: continue with `archsearch run {_shown(config.path)} --resume`", file=sys.stderr)
