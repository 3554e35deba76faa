"""answer_cost's Markdown report, rendered from the JSON report alone (so --reanalyze reproduces it)."""

from __future__ import annotations

import math
from typing import Any

RULES = {"stop": "Ray's: a trial below its rung's top 1/η on arrival stops",
         "promote": "as published, Li et al. 2020: pause at each rung, promote the top 1/η later"}


def _fmt_depth(v: float | None, lo: int, hi: int) -> str:
    if v is None:
        return "–"
    if v == -math.inf:
        return f"<{lo}"
    if v == math.inf:
        return f">{hi}"
    return f"{v:.1f}"


def _fmt_n0(ans: dict | None) -> str:
    if not ans or ans.get("status") == "insufficient" or not ans.get("points"):
        return (ans or {}).get("message") or "insufficient"
    lo, hi = ans["points"][0]["depth"], ans["points"][-1]["depth"]
    head = {"crossed": "n₀ = ", "below_range": "n₀ ", "above_range": "n₀ "}[ans["status"]]
    n0 = _fmt_depth(ans["n0"], lo, hi)
    ci = ans.get("ci")
    ci_s = f" (95 % CI {_fmt_depth(ci[0], lo, hi)} – {_fmt_depth(ci[1], lo, hi)})" if ci else ""
    return head + n0 + ci_s


def _fmt_delta(p: dict) -> str:
    lo, hi = p["ci"]
    return f"{p['delta']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def render_markdown(rep: dict[str, Any]) -> str:
    lines = _md_summary(rep) + _md_settle(rep) + _md_fidelity(rep) + _md_what_if(rep)
    return "\n".join(lines)


def _md_summary(rep: dict[str, Any]) -> list[str]:
    """Title, command, setting, and the grid-vs-ASHA table with Δ per depth."""
    g, a = rep["studies"]["grid"], rep["studies"]["asha"]
    ans = rep["answers"]
    grid, matched = ans["grid"], ans["asha_matched_fidelity"]
    surv = ans["asha_survivors"][0] if ans["asha_survivors"] else None
    t = rep["train"]
    lines = [
        "# Answer cost: n₀ by exhaustive grid vs ASHA" + (" (QUICK SMOKE RUN — not a result)" if rep["quick"] else ""),
        "",
        f"Command: `ARCHSEARCH_DATA=/work/shared/data/cifar10-jpg.tar.gz {rep['command']}` "
        f"({rep['machine']['cpus']} CPU cores, {g['slots']} concurrent trials, no GPU)"
        + "".join(f"; study retrained with `--reanalyze WORKDIR --rerun {r.split()[0]}"
                  f"{''.join(' ' + x for x in r.split()[3:])}` at {' '.join(r.split()[1:3])}"
                  for r in rep.get("reruns") or [])
        + (f"; tables re-analysed from the stored studies with the current code (`{rep['reanalyzed'].split(' (')[0]}`)"
           if rep.get("reanalyzed") else "") + ".",
        "",
        f"Reduced-fidelity n₀ question: plain {rep['candidates'][0]['name']} vs Multi-ResNets at equal params "
        f"({', '.join(c['name'] for c in rep['candidates'][1:])}); {len(rep['seeds'])} seeds "
        f"{rep['seeds']}; {rep['max_epochs']} epochs on {t['subset']} CIFAR-10 training images, "
        f"{t['val_size']} validation images; {t['schedule']} lr {t['lr']}, batch {t['batch_size']}. "
        f"ASHA: rule {a['asha'].get('rule', 'stop')} ({RULES[a['asha'].get('rule', 'stop')]}), "
        f"grace {a['asha']['grace_period']}, reduction factor {a['asha']['reduction_factor']:g}, "
        f"rungs at epochs {rep['asha_rungs']}. Bootstrap seed {rep['bootstrap']['seed']}, "
        f"{rep['bootstrap']['n_boot']} replicates. Δ = err(multi) − err(plain) in points of validation error; "
        "+ means the Multi-ResNet is worse.",
        "",
        "| | (a) grid | (b) ASHA |",
        "|---|---|---|",
        f"| trials (states) | {g['trials']} ({_states(g['counts'])}) | {a['trials']} ({_states(a['counts'])}) |",
        f"| epochs trained (Σ reached) | {g['epochs_trained']} | {a['epochs_trained']} |",
        f"| ratio ASHA / grid | 1 | **{rep['epochs_ratio_asha_over_grid']:.3f}** "
        f"(target ≤ {rep['target_ratio']}: {'met' if rep['ratio_met'] else 'MISSED'}) |",
        f"| wall time of run_study | {g['wall_seconds']:.0f} s | {a['wall_seconds']:.0f} s |",
        f"| Σ trial training seconds | {g['sum_train_seconds']:.0f} s | {a['sum_train_seconds']:.0f} s |",
        f"| n₀ (full-fidelity trials, archsearch.analysis) | {_fmt_n0(grid)} | (i) survivors: {_fmt_n0(surv)} |",
        f"| n₀, multi-fidelity estimate (matched epoch per depth) | – | (ii) {_fmt_n0(matched)} |",
    ]
    grid_pts = {p["depth"]: p for p in (grid or {}).get("points", [])}
    m_pts = {p["depth"]: p for p in matched.get("points", [])}
    s_pts = {p["depth"]: p for p in (surv or {}).get("points", [])}
    for d in sorted(set(grid_pts) | set(m_pts)):
        gp, mp, sp = grid_pts.get(d), m_pts.get(d), s_pts.get(d)
        gcell = f"{_fmt_delta(gp)} **{gp['sign']}**" if gp else "–"
        mcell = f"(ii) @ epoch {mp['epoch']}: {_fmt_delta(mp)} **{mp['sign']}**" if mp else "(ii) –"
        if sp:
            mcell += f"; (i) {_fmt_delta(sp)} {sp['sign']}"
        lines.append(f"| Δ at depth {d} | {gcell} | {mcell} |")
    return lines


def _md_settle(rep: dict[str, Any]) -> list[str]:
    """The verdict, its caveats, and when the grid's answer settles (its trials read at each epoch)."""
    grid = rep["answers"]["grid"]
    grid_pts = {p["depth"]: p for p in (grid or {}).get("points", [])}
    lines: list[str] = []
    v = rep["verdict"]
    lines += [
        "",
        "**Same answer (per-depth sign of Δ, > 0 vs ≤ 0, grid vs ASHA (ii))**: "
        f"{'yes' if v['same_signs_grid_vs_asha_matched'] else 'NO'}; "
        f"same n₀ status: {'yes' if v['same_status'] else 'no'}; ASHA (ii) n₀ inside the grid's CI: "
        f"{'yes' if v['asha_matched_n0_inside_grid_ci'] else 'no'}. "
        f"**Target (same answer at ≤ 1/4 of the grid's epochs): {'MET' if v['target_met'] else 'NOT MET'}.** "
        f"Depths whose Δ interval excludes 0: grid {v['grid_depths_resolved']} of {v['depths']}, "
        f"ASHA (ii) {v['asha_matched_depths_resolved']} of {v['depths']}.",
        "",
        *(["**Caveats**: " + "; ".join(v["caveats"]) + ".", ""] if v.get("caveats") else []),
        "## When does the grid's answer settle? (grid trials read at each epoch)",
        "",
        f"Spearman of each trial's error at that epoch with its final error ({rep['rank_agreement']['trials']} "
        "trials), and of each candidate's seed-mean with its final seed-mean "
        f"({rep['rank_agreement']['candidates']} candidates); then the grid's answer read there.",
        "",
        "| epoch | trial ρ | candidate ρ | n₀ | " + " | ".join(f"Δ({d})" for d in sorted(grid_pts))
        + " | final signs |",
        "|---|---|---|---|" + "---|" * len(grid_pts) + "---|",
    ]
    ra = rep["rank_agreement"]
    agree = {str(row["epoch"]): row for row in ra["rows"]}
    for e, r in list(rep["grid_at_epochs"].items()) + [(str(rep["max_epochs"]), grid)]:
        pts = {p["depth"]: p for p in (r or {}).get("points", [])}
        cells = [f"{pts[d]['delta']:+.2f} {pts[d]['sign']}" if d in pts else "–" for d in sorted(grid_pts)]
        row = agree.get(e)
        label = e + (" (rung)" if int(e) in rep["asha_rungs"] else " (final)" if row is None else "")
        rhos = f"{row['trial_spearman']:.2f} | {row['candidate_spearman']:.2f}" if row else "1 | 1"
        same = ("yes" if row["final_signs"] else "no") if row else "–"
        lines.append(f"| {label} | {rhos} | {_fmt_n0(r)} | " + " | ".join(cells) + f" | {same} |")
    lines += ["", f"The candidates' order (ρ ≥ {ra['stable_rho']}) and the answer's signs hold from epoch "
              f"**{ra['stable_from']}** of {rep['max_epochs']} on. An ASHA rung earlier than that decides on "
              f"noise; one that lets every trial reach it trains ≥ {ra['ratio_floor']:.2f} of the grid's epochs."]
    return lines


def _md_fidelity(rep: dict[str, Any]) -> list[str]:
    """The rung fidelity check, the survivor-selected diagnostic and the determinism check."""
    ans = rep["answers"]
    lines: list[str] = []
    lines += ["", "## Fidelity check (grid: Spearman of each rung's error vs the final error)", "",
              "| family | status | epoch | n | Spearman [95 % CI] | Kendall τ (p) |", "|---|---|---|---|---|---|"]
    for f in rep["fidelity_check"]:
        if not f["rungs"]:
            lines.append(f"| {f['family']} | {f['status']} | – | – | {f['message']} | |")
        for c in f["rungs"]:
            lines.append(f"| {f['family']} | {f['status']} | {c['epoch']} | {c['n']} | {c['spearman']:.2f} "
                         f"[{c['spearman_ci'][0]:.2f}, {c['spearman_ci'][1]:.2f}] | {c['kendall']:.2f} "
                         f"({c['kendall_p']:.3f}) |")
    biased = ans["asha_survivor_selected_deltas"]
    if biased:
        lines += ["", "Survivor-selected diagnostic (biased toward seeds ASHA promoted; not an answer): "
                  + "; ".join(f"depth {b['depth']} @ epoch {b['epoch']}: {b['delta']:+.2f} "
                              f"({b['n_multi']} vs {b['n_plain']} seeds)" for b in biased) + "."]
    det = rep["determinism"]
    lines += ["", f"Determinism: {det['values_compared']} per-epoch errors of {det['pairs']} ASHA trials compared "
              f"with the grid trial of the same (architecture, seed): largest difference "
              f"{det['max_abs_diff'] if det['max_abs_diff'] is not None else '–'} points.",
              ""]
    return lines


def _md_what_if(rep: dict[str, Any]) -> list[str]:
    """Other ASHA settings replayed offline on the grid's curves, and how the ASHA answer is derived."""
    matched = rep["answers"]["asha_matched_fidelity"]
    lines: list[str] = []
    wi = rep["what_if"]
    val = wi["validation"]
    lines += ["## What if: other ASHA settings, replayed offline on the grid's curves", "",
              f"Not a run: {wi['label']}. Validation: replaying the real setting (grace "
              f"{val['setting']['grace_period']}, rf {val['setting']['reduction_factor']:g}, rule "
              f"{val['setting'].get('rule', 'stop')}) reproduces the real "
              f"ASHA run's stopping epoch for {val['trials'] - len(val['mismatches'])} of {val['trials']} trials"
              + (f" (differs: {'; '.join(val['mismatches'])})" if val["mismatches"] else "") + ".", "",
              "| rule | order | rf | grace | rungs | epochs ratio | full-fidelity trials | (ii) epochs compared | "
              "(ii) signs by depth | (ii) n₀ | same signs as grid |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    depths = [p["depth"] for p in matched.get("points", [])]
    for w in wi["rows"]:
        mm = w["matched"]
        n0 = _fmt_n0({"status": mm["status"], "n0": mm["n0"], "ci": mm["ci"],
                      "points": [{"depth": d} for d in depths]}) if mm["status"] != "insufficient" else "–"
        lines.append(f"| {w['rule']} | {w['order']} | {w['reduction_factor']:g} | {w['grace_period']} | {w['rungs']} | "
                     f"{w['ratio']:.3f} | {w['full_fidelity_trials']} | {mm['epochs']} | {' '.join(mm['signs'])} | "
                     f"{n0} | {'yes' if w['same_signs'] else 'no'} |")
    lines += ["", "How the ASHA answer is derived: (i) `archsearch.analysis.threshold.n0_analysis` on the ASHA study "
              "(full-fidelity trials only, i.e. those ASHA let finish); (ii) a multi-fidelity estimate: "
              "each depth's multi candidate vs the plain reference at the highest epoch every seed of both "
              "reached, bootstrap over seeds as in archsearch.analysis.stats. See the module docstring.", ""]
    return lines


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()) if n)


