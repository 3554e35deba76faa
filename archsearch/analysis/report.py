"""A study's answers as a Markdown report, attached to the study so the dashboard reaches it.

`write_report` reads the study once (`study.records.load_records`), computes every answer
(`answers.analyze`), draws the figures (`plots.draw_all`) and writes, under `out_dir`:
`report.md` (answers first, then the per-architecture table, figures, method), `analysis.json`
(the same numbers for scripts) and `figures/` (PNG + interactive HTML). It then records the report
on the study: user attributes `report_path`, `report_artifact_id`, `artifact_dir`; an Optuna
artifact (the Markdown, plus a zip of the whole report folder); and the answers as the study's
dashboard note (`optuna_dashboard.save_note`). Start the dashboard with
`--artifact-dir <artifact_dir>` to open the artifacts from it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from archsearch.analysis.answers import StudyAnalysis, analyze
from archsearch.analysis.best import BestResult
from archsearch.analysis.lesion_plots import lesion_figures
from archsearch.analysis.plots import FigureFiles, draw_all
from archsearch.analysis.questions import StudyAnswers, as_json, describe
from archsearch.analysis.race import answers_of_study, race_json, race_markdown
from archsearch.analysis.stats import LEVEL, N_BOOT
from archsearch.study.attachments import attach_report
from archsearch.study.records import load_records
from archsearch.study.runs import resolve_runs_dir


def write_report(
    study: Any, out_dir: str | Path, *, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL,
    artifact_dir: str | Path | None = None,
) -> Path:
    """Write the report of `study` under `out_dir`, attach it to the study, return report.md's path.

    `artifact_dir` (default `out_dir/artifacts`) is the FileSystemArtifactStore's folder.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = load_records(study)
    result = analyze(records, seed=seed, n_boot=n_boot, level=level)
    asked, raced = answers_of_study(dict(study.user_attrs), records, level=level, seed=seed)
    figures = draw_all(result, out_dir / "figures")
    figures += lesion_figures(resolve_runs_dir()[0] / study.study_name / "lesion", out_dir / "figures")
    path = out_dir / "report.md"
    declared = declared_markdown(asked) + ("\n" + race_markdown(raced) if raced is not None else "")
    text = render_markdown(study.study_name, result, figures, out_dir)
    head, sep, rest = text.partition("## Answers")
    path.write_text(head + declared + "\n" + sep + rest, encoding="utf-8")
    payload = {**_jsonable(asdict(result)), "questions": {
        "source": asked.source, "validation": [as_json(a) for a in asked.answers],
        "test": None if asked.test_answers is None else [as_json(a) for a in asked.test_answers],
        "race": None if raced is None else race_json(raced)}}
    (out_dir / "analysis.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    attach_report(study, path, declared + "\n" + answers_markdown(result),
                  Path(artifact_dir) if artifact_dir else out_dir / "artifacts")
    return path


# ----------------------------------------------------------------------------------- Markdown
def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(v: float | None, fmt: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, fmt)


def _count(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1e6:.3f}M" if v >= 1e5 else f"{v:,.0f}"


def _verdict(p: float) -> str:
    return "clear" if p >= 0.95 else "likely" if p >= 0.75 else "no clear winner"


def declared_markdown(asked: StudyAnswers) -> str:
    """The study's own questions first: one row each, validation answer beside the test-split one."""
    out = ["## The study's questions", "",
           f"Questions {asked.source}. Each answer rests only on its own candidates' full-fidelity seeds; search "
           "decisions use the validation split, the test split is only reported.", ""]
    if asked.caveat:
        out += [f"**Caveat**: {asked.caveat}.", ""]
    if not asked.answers:
        return "\n".join(out + ["No question to answer.", ""])
    test = {a.id: a for a in asked.test_answers or []}
    rows = [[f"`{a.id}`", a.kind, describe(a), describe(test[a.id]) if a.id in test else "–",
             ", ".join(f"{n} ×{k}" for n, k in a.seeds.items()) or "–"] for a in asked.answers]
    out += [_table(["question", "kind", "answer (validation)", "answer (test split)", "seeds per candidate"], rows),
            ""]
    return "\n".join(out)


def answers_markdown(a: StudyAnalysis) -> str:
    """The answers alone (also the dashboard note): n₀, best K, WRN, fidelity warnings."""
    pct = f"{100 * a.level:g} %"
    out = ["## Answers", "", "Exploratory views over every candidate of a family (not the study's declared questions).",
           ""]
    out += ["### Past which depth n₀ do k > 1 residual functions beat more depth?", ""]
    if not a.n0:
        out.append("No Multi-ResNet/ResNet trials in this study.")
    else:
        rows = []
        for r in a.n0:
            deltas = ", ".join(f"{p.depth}: {p.delta:+.2f} [{p.ci[0]:+.2f}, {p.ci[1]:+.2f}]" for p in r.points)
            where = "across budgets" if r.budget == "all" else r.budget
            rows.append([where, r.block, r.describe(), _num(r.p_crossed), deltas or "–", r.min_seeds or "–"])
        out += [_table(["budget", "block", f"n₀ ({pct} interval)", "P(crosses in range)",
                        "Δ(d) = multi − plain, points [interval]", "min seeds"], rows), ""]
        out.append("The Multi-ResNet paper finds n₀ ≈ 20 on CIFAR-10 (Table II: worse at 8, tied at 20, "
                   "better at 30).")
    out += ["", "### Which K is best?", ""]
    out += _best_section(a.best_k, "No multi-branch family (multiresnet, dmrnet, dvanet, warpnet) in this study.")
    out += ["", "### Wider or deeper (WRN)?", ""]
    out += _best_section(a.wrn, "No WRN trials in this study.")
    out += _wider_or_deeper(a)
    out += ["", "### Can the cheap fidelity be trusted?", ""]
    if not a.fidelity:
        out.append("No full-fidelity trials: nothing to check the rungs against.")
    for f in a.fidelity:
        mark = {"ok": "ok", "warn": "**WARNING**", "insufficient": "insufficient data"}[f.status]
        out.append(f"- {f.family}: {mark} — {f.message}")
    thin = [c.name for c in a.candidates if c.n == 1]
    if thin:
        out += ["", f"Note: {len(thin)} candidate(s) have a single full-fidelity seed; their intervals "
                    "show no seed-to-seed variation and understate the uncertainty."]
    return "\n".join(out)


def _best_section(results: list[BestResult], empty: str) -> list[str]:
    if not results:
        return [empty]
    rows, notes = [], []
    for r in results:
        if r.status != "ok":
            notes.append(f"- {r.family} @ {r.budget}: {r.message}")
            continue
        b = r.best
        probs = " · ".join(f"{o.label} {o.p_best:.2f}" for o in r.options)
        rows.append([r.family, r.budget, f"**{b.label}**" + ("" if b.label == b.name else f" ({b.name})"),
                     f"{b.mean:.2f} [{b.ci[0]:.2f}, {b.ci[1]:.2f}]", f"{b.p_best:.2f} ({_verdict(b.p_best)})",
                     probs])
    out = [_table(["family", "budget", "best", "error % [interval]", "P(best)", "P(best) of each option"],
                  rows)] if rows else []
    return out + ([""] if rows and notes else []) + notes


def _wider_or_deeper(a: StudyAnalysis) -> list[str]:
    """One sentence per budget: is the best WRN option the deepest, the widest, or between?"""
    info = {(c.name, c.budget): c for c in a.candidates}
    out = []
    for r in a.wrn:
        if r.status != "ok":
            continue
        opts = [(o, info.get((o.name, r.budget))) for o in r.options]
        opts = [(o, c) for o, c in opts if c is not None and c.depth is not None and c.width is not None]
        if len(opts) < 2:
            continue
        deepest = max(opts, key=lambda oc: (oc[1].depth, -oc[1].width))
        widest = max(opts, key=lambda oc: (oc[1].width, -oc[1].depth))
        best = r.best.name
        where = ("the deepest and thinnest option" if best == deepest[0].name else
                 "the widest and shallowest option" if best == widest[0].name else "between the extremes")
        out.append(f"- {r.budget}: best is `{best}`, {where}; deepest `{deepest[0].name}` has P(best) "
                   f"{deepest[0].p_best:.2f}, widest `{widest[0].name}` {widest[0].p_best:.2f}.")
    return [""] + out if out else []


def _fidelity_table(a: StudyAnalysis) -> list[str]:
    rows = [[f.family, r.epoch, r.n, f"{_num(r.spearman)} [{_num(r.spearman_ci[0])}, {_num(r.spearman_ci[1])}]",
             f"{_num(r.kendall)} (p = {_num(r.kendall_p, '.2g')})", "**warn**: " + r.reason if r.warn else "ok"]
            for f in a.fidelity for r in f.rungs]
    if not rows:
        return []
    head = ["family", "rung epoch", "trials", "Spearman ρ [interval]", "Kendall τ", "verdict"]
    return ["## Fidelity by rung", "", "Rank agreement of each ASHA rung's error with the final error "
            "(full-fidelity trials; \"all\" pools the families as ASHA does).", "", _table(head, rows), ""]


def _precision_lines(a: StudyAnalysis) -> list[str]:
    if not a.precisions:
        return []
    counts = ", ".join(f"{p} {n}" for p, n in sorted(a.precisions.items()))
    if a.mixed_precision:
        return [f"**Warning: the answers mix training precisions ({counts} trials)** — workers resolved "
                "`amp: auto` differently; set `train.amp` explicitly to compare like with like.", ""]
    steps = ", ".join(f"{k} {n}" for k, n in sorted(a.compiled.items()))
    return [f"Training precision: {counts} trials" + (f"; training step: {steps} (`train.compile`)." if steps
                                                      else "."), ""]


def render_markdown(name: str, a: StudyAnalysis, figures: list[FigureFiles], base: Path) -> str:
    """The whole report; figure paths are relative to `base` (the folder holding report.md)."""
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(a.states.items())) or "no trials"
    out = [
        f"# Study report: {name}", "",
        *a.failures,
        f"Trials: {states}; {a.n_full_fidelity} complete at full fidelity feed the answers (pruned, "
        f"failed and reduced-fidelity trials never do). Intervals: {100 * a.level:g} % bootstrap over "
        f"seeds ({a.n_boot} resamples, seed {a.seed}).", "",
        *_precision_lines(a),
        answers_markdown(a), "",
        "## Trials by architecture", "",
        "Full-fidelity seeds only; error is validation error in percent.", "",
    ]
    rows = [[f"`{c.name}`", c.family, c.budget, c.n,
             "–" if c.mean is None else f"{c.mean:.2f} ± {_num(c.std)}", _count(c.params), _count(c.macs),
             _num(c.latency_b1_ms), _num(c.path_length_mean), _num(c.test_error), c.n_pruned, c.n_failed]
            for c in a.candidates]
    out += [_table(["name", "family", "budget", "seeds", "error mean ± std", "params", "MACs",
                    "latency b1 (ms)", "path length", "test error", "pruned", "failed"], rows), ""]
    out += _fidelity_table(a)
    out += ["## Figures", ""]
    for f in figures:
        png, html = f.png.relative_to(base).as_posix(), f.html.relative_to(base).as_posix()
        out += [f"### {f.title}", "", *([f.caption, ""] if f.caption else []), f"![{f.title}]({png})", "",
                f"[interactive version]({html})", ""]
    out += ["## How these numbers are computed", "", METHOD]
    return "\n".join(out) + "\n"


METHOD = """\
- Only trials trained to full fidelity (user attribute `full_fidelity`, state COMPLETE) count.
  Trials of one canonical name are seeds; a candidate's error is the mean over its seeds.
- **n₀**: in each budget group, Δ(d) = error of the Multi-ResNet (k > 1) at depth d (one function
  counted, d = 6n+2) minus the error of the plain ResNet (k = 1) of the same budget (the best one
  if there are several). n₀ is the depth past which Δ stays ≤ 0: the last crossing from + to −,
  linearly interpolated between measured depths. "Across budgets" joins one Δ per budget into one
  curve, as the paper's Table II does. "n₀ < d" / "n₀ > d" mean no crossing inside the range.
- **Best K / WRN**: the option of lowest mean error; P(best) is the share of bootstrap replicates in
  which it is lowest. An option measured by several names counts its best one.
- **Intervals**: percentile bootstrap, seeds resampled within each candidate (variance made unbiased
  by √(n/(n−1))), widened about the estimate by t/z with the pooled degrees of freedom, so 3–5 seeds
  do not give over-confident intervals. Interval ends beyond the measured depths are censored.
- **EDFs**: weighted error distribution per family; weights give every complexity bin (budget
  group) shared by all families equal mass (Radosavovic et al., 2019).
- **Fidelity**: Spearman ρ (bootstrap interval) and Kendall τ between the error at each ASHA rung
  and the final error, over full-fidelity trials; a warning when ρ < 0.5 or its interval reaches 0.
"""


def _jsonable(x: Any) -> Any:
    """Strict JSON: non-finite floats become strings ("inf", "-inf", "nan")."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x
