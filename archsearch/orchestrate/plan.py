"""The `archsearch run --dry-run` plan: candidates, budgets, seeds, ASHA's rungs and the work's upper bound."""

from __future__ import annotations

from collections import Counter
from typing import Any

from archsearch.orchestrate.asha import expected_epochs, rung_epochs
from archsearch.space.space import grid
from archsearch.study.asked import study_questions
from archsearch.study.config import StudyConfig
from archsearch.study.storage import redact


def describe_plan(config: StudyConfig, space: Any, existing: str | None = None, sample_size: int = 12) -> list[str]:
    """The `--dry-run` text: candidates (or a sample), budgets, epochs, and the work's upper bound."""
    points = grid(space)
    seeds = config.seed_list
    lines = [f"study {config.name}  ({config.path})"]
    lines.append(f"  storage        {redact(config.storage_url)}" + (f"  [{existing}]" if existing else "  [new]"))
    lines.append(f"  results        {config.run_dir}/  (from {config.runs_source})")
    space_name = config.space_path if config.space_path is not None else "inline"
    distinct = len({p.name for p in points})
    same = f" ({distinct} distinct architectures: duplicates run once)" if distinct < len(points) else ""
    lines.append(f"  space          {space_name}: {len(points)} candidates{same}")
    by_budget = Counter(getattr(p, "budget", "") or "-" for p in points)
    for label, n in sorted(by_budget.items()):
        members = [p for p in points if (getattr(p, "budget", "") or "-") == label]
        params = [p.params for p in members]
        lines.append(f"    budget {label}: {n} candidates, params {min(params):,}–{max(params):,}")
    shown = points if len(points) <= sample_size else points[:: max(1, len(points) // sample_size)][:sample_size]
    title = "candidates" if len(shown) == len(points) else f"a sample of {len(shown)} candidates"
    lines.append(f"  {title}:")
    for p in shown:
        lines.append(f"    {p.name:32s} params {p.params:>11,}  MACs {p.macs:>14,}  budget {p.budget or '-'}")
    objectives = ", ".join(config.objective_names)
    lines.append(f"  sampler        {config.sampler} (seed {config.sampler_seed}); objectives: {objectives}")
    lines.append(f"  seeds          {seeds} per architecture (enqueued together)")
    race = config.search is not None and config.search.method == "race"
    if race:
        asked = {n for rq in study_questions(config, points) for n in rq.names}
        s = config.search
        n_trials = len(asked) * s.max_seeds
        lines.append(f"  search         race: the {len(asked)} candidates the questions need, {s.min_seeds} seeds "
                     f"each, then more seeds only where a question is open, up to {s.max_seeds} (confidence "
                     f"{s.confidence:g}); seeds drawn in order from the pool")
        lines.append(f"  trials         {len(asked) * s.min_seeds} to {n_trials} (race)")
    elif config.sampler == "grid":
        n_points = distinct if config.n_trials is None else min(distinct, -(-config.n_trials // len(seeds)))
        n_trials = n_points * len(seeds)
        lines.append(f"  trials         {n_trials} (grid: {n_points} points x {len(seeds)} seeds)")
    else:
        n_trials = config.n_trials
        lines.append(f"  trials         {n_trials if n_trials is not None else 'until the time budget'}"
                     " (COMPLETE + PRUNED count)")
    if config.time_budget:
        lines.append(f"  time budget    {config.time_budget:.0f} s (no trial starts after it)")
    E = config.max_epochs
    lines.append(f"  epochs         at most {E} per trial; schedule {config.train_config.schedule}, "
                 f"batch {config.train_config.batch_size}, subset {config.train_config.subset or 'all'}, "
                 f"val_size {config.train_config.val_size}")
    if config.asha is not None:
        rungs = rung_epochs(E, config.asha.grace_period, config.asha.reduction_factor)
        est = expected_epochs(E, rungs, config.asha.reduction_factor)
        rule = "stop below the top" if config.asha.rule == "stop" else "pause at each rung, promote the top"
        lines.append(f"  ASHA           rungs at epochs {rungs or '-'} ({rule} 1/{config.asha.reduction_factor:g}); "
                     f"about {est:.1f} epochs per trial")
    else:
        lines.append("  ASHA           off: every trial trains all epochs")
    if n_trials is not None:
        lines.append(f"  upper bound    {n_trials} trials x {E} epochs = {n_trials * E} trial-epochs")
    r = config.resources
    lines.append(f"  per trial      {r.cpus:g} CPU, {r.gpus:g} GPU"
                 + (f", at most {r.max_concurrent} at once" if r.max_concurrent else ""))
    lines.append(f"  data           {config.data_path or config.train_config.dataset + ' (ARCHSEARCH_DATA unset)'}")
    return lines
