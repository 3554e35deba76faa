"""Figures of a `StudyAnalysis`: nothing here computes an answer, it only draws one.

Each figure is written twice: a PNG (matplotlib, Agg canvas, no pyplot global state) to embed in
the Markdown report, and an interactive HTML (plotly). The HTML files load `plotly.min.js` from
the same folder (`include_plotlyjs="directory"`): one ~4 MB copy per report instead of one per
figure, and it works offline, unlike the CDN form (the machines that train often have no internet).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import ScalarFormatter
from plotly.subplots import make_subplots

from archsearch.analysis.answers import StudyAnalysis
from archsearch.analysis.best import BestResult
from archsearch.analysis.fidelity import FidelityCheck
from archsearch.analysis.landscape import EDF, ParetoFront, PathLengthResult
from archsearch.analysis.threshold import N0Result
from archsearch.arch.families import families

COLORS = {**{f.name: f.colour for f in families()}, "all": "#000000"}  # one per family, in every figure
AXIS_LABELS = {"params": "parameters", "macs": "MACs", "latency_b1_ms": "latency, batch 1 (ms)"}


@dataclass
class FigureFiles:
    """Where one figure was written."""

    key: str
    title: str
    png: Path
    html: Path
    caption: str = ""  # one sentence saying what the figure shows


def _color(family: str) -> str:
    return COLORS.get(family, "#17becf")


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, n)
    return math.ceil(n / cols), cols


def _clip(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def _panels(
    key: str, title: str, items: Sequence, subtitle: Callable, draw: Callable, out_dir: Path,
    xlabel: str, ylabel: str,
) -> FigureFiles | None:
    """Lay out one panel per item in both libraries; `draw(item, ax, pfig, row, col)` fills a panel."""
    if not items:
        return None
    rows, cols = _grid(len(items))
    mfig = MplFigure(figsize=(max(6.4, 4.2 * cols), 3.2 * rows if cols > 1 else 4.2), layout="constrained")
    FigureCanvasAgg(mfig)
    axes = mfig.subplots(rows, cols, squeeze=False)
    titles = [subtitle(it) for it in items]
    pfig = make_subplots(rows=rows, cols=cols, subplot_titles=titles)
    for i, it in enumerate(items):
        ax = axes[i // cols][i % cols]
        ax.set_title(titles[i], fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        pfig.update_xaxes(title_text=xlabel, row=i // cols + 1, col=i % cols + 1)
        pfig.update_yaxes(title_text=ylabel, row=i // cols + 1, col=i % cols + 1)
        draw(it, ax, pfig, i // cols + 1, i % cols + 1)
    for j in range(len(items), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    mfig.suptitle(title)
    pfig.update_layout(title_text=title, height=360 * rows, width=480 * cols, template="plotly_white")
    return _save(key, title, mfig, pfig, out_dir)


def _save(key: str, title: str, mfig: MplFigure, pfig: go.Figure, out_dir: Path) -> FigureFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, html = out_dir / f"{key}.png", out_dir / f"{key}.html"
    mfig.savefig(png, dpi=110)
    pfig.write_html(html, include_plotlyjs="directory", full_html=True)
    return FigureFiles(key, title, png, html)


def _errorbars(ax, pfig, row, col, xs, ys, cis, *, color, name, text=None, mode="markers"):
    lo = [y - c[0] if math.isfinite(c[0]) else 0.0 for y, c in zip(ys, cis, strict=True)]
    hi = [c[1] - y if math.isfinite(c[1]) else 0.0 for y, c in zip(ys, cis, strict=True)]
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-" if "lines" in mode else "o", color=color,
                capsize=3, label=name)
    pfig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode=mode, name=name, marker_color=color,
                              error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
                              hovertext=text, showlegend=row == col == 1), row=row, col=col)


def plot_n0(results: list[N0Result], out_dir: Path) -> FigureFiles | None:
    """Δ(d) = multi − plain error against the multi net's depth, with n₀ and its interval."""
    items = [r for r in results if r.points]

    def sub(r: N0Result) -> str:
        where = "all budgets" if r.budget == "all" else r.budget
        return f"{where} ({r.block}): {r.describe(short=True)}"

    def draw(r: N0Result, ax, pfig, row, col) -> None:
        xs = [p.depth for p in r.points]
        lo_x, hi_x = min(xs) - 2, max(xs) + 2
        text = [f"{', '.join(p.multi)} vs {p.plain}" for p in r.points]
        _errorbars(ax, pfig, row, col, xs, [p.delta for p in r.points], [p.ci for p in r.points],
                   color=_color("multiresnet"), name="Δ(d)", text=text, mode="lines+markers")
        ax.axhline(0, color="k", lw=0.8)
        pfig.add_hline(y=0, line_color="black", line_width=1, row=row, col=col)
        if r.ci and not (math.isinf(r.ci[0]) and math.isinf(r.ci[1]) and r.ci[0] == r.ci[1]):
            a, b = _clip(r.ci[0], lo_x, hi_x), _clip(r.ci[1], lo_x, hi_x)
            ax.axvspan(a, b, color="tab:green", alpha=0.15)
            pfig.add_vrect(x0=a, x1=b, fillcolor="green", opacity=0.15, line_width=0, row=row, col=col)
        if r.n0 is not None and math.isfinite(r.n0):
            ax.axvline(r.n0, color="tab:green", ls="--")
            pfig.add_vline(x=r.n0, line_color="green", line_dash="dash", row=row, col=col)
        ax.set_xlim(lo_x, hi_x)

    return _panels("n0", "n₀: Multi-ResNet minus ResNet error at equal parameters", items, sub, draw,
                   out_dir, "depth of the multi net (one function)", "Δ error (points)")


def plot_best(results: list[BestResult], out_dir: Path, key: str = "best_k") -> FigureFiles | None:
    """Mean error (interval) of each option, annotated with its probability of being best."""
    items = [r for r in results if r.status == "ok"]
    if not items:
        return None
    question = items[0].question

    def sub(r: BestResult) -> str:
        return f"{r.family} @ {r.budget}: best {r.best.label} (P = {r.best.p_best:.2f})"

    def draw(r: BestResult, ax, pfig, row, col) -> None:
        labels = [o.label for o in r.options]
        ys = [o.mean for o in r.options]
        text = [f"P(best) = {o.p_best:.2f}; {o.name}; n = {o.n}" for o in r.options]
        _errorbars(ax, pfig, row, col, labels, ys, [o.ci for o in r.options],
                   color=_color(r.family.split()[0]), name=r.family, text=text)
        for x, y, o in zip(labels, ys, r.options, strict=True):
            ax.annotate(f"{o.p_best:.2f}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        if len(labels) > 4:
            ax.tick_params(axis="x", labelrotation=30, labelsize=7)

    return _panels(key, f"{question}: mean error with interval, P(best) beside each", items, sub,
                   draw, out_dir, "option", "validation error (%)")


def plot_edf(curves: list[EDF], out_dir: Path) -> FigureFiles | None:
    """Complexity-normalised error EDFs, one step curve per family."""
    if not curves:
        return None
    norm = "complexity-normalised" if all(c.normalized for c in curves) else "not normalised (no shared bin)"

    def draw(_, ax, pfig, row, col) -> None:
        for c in curves:
            label = f"{c.family} (n = {c.n})"
            xs, ys = [c.errors[0], *c.errors], [0.0, *c.cdf]  # the step starts from 0
            ax.step(xs, ys, where="post", color=_color(c.family), label=label)
            pfig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv", name=label,
                                      line_color=_color(c.family)), row=row, col=col)
        ax.legend(fontsize=7)

    return _panels("edf", f"Error EDF per family ({norm})", [None], lambda _: "", draw, out_dir,
                   "validation error (%)", "cumulative probability")


def plot_pareto(fronts: list[ParetoFront], out_dir: Path) -> FigureFiles | None:
    """Error against params, MACs and latency; the non-dominated candidates joined by a line."""
    items = [f for f in fronts if f.points]

    def draw(f: ParetoFront, ax, pfig, row, col) -> None:
        for fam in sorted({p.family for p in f.points}):
            pts = [p for p in f.points if p.family == fam]
            ax.scatter([p.x for p in pts], [p.error for p in pts], color=_color(fam), label=fam, s=18)
            pfig.add_trace(go.Scatter(x=[p.x for p in pts], y=[p.error for p in pts], mode="markers",
                                      name=fam, marker_color=_color(fam), hovertext=[p.name for p in pts],
                                      legendgroup=fam, showlegend=row == col == 1), row=row, col=col)
        front = [p for p in f.points if p.on_front]
        ax.step([p.x for p in front], [p.error for p in front], where="post", color="k", lw=1)
        pfig.add_trace(go.Scatter(x=[p.x for p in front], y=[p.error for p in front], mode="lines",
                                  line_shape="hv", line_color="black", name="Pareto front",
                                  showlegend=row == col == 1), row=row, col=col)
        if f.axis != "latency_b1_ms":
            ax.set_xscale("log")
            pfig.update_xaxes(type="log", row=row, col=col)
        ax.set_xlabel(AXIS_LABELS.get(f.axis, f.axis))
        pfig.update_xaxes(title_text=AXIS_LABELS.get(f.axis, f.axis), row=row, col=col)
        ax.legend(fontsize=7)

    return _panels("pareto", "Validation error against cost (Pareto front in black)", items,
                   lambda f: AXIS_LABELS.get(f.axis, f.axis), draw, out_dir, "cost", "validation error (%)")


def plot_path_length(results: list[PathLengthResult], out_dir: Path) -> FigureFiles | None:
    """Mean error against mean path length, per budget, with Spearman ρ in the title."""
    items = [r for r in results if r.names]

    def sub(r: PathLengthResult) -> str:
        rho = "" if r.spearman is None else f", ρ = {r.spearman:.2f} [{r.ci[0]:.2f}, {r.ci[1]:.2f}]"
        return f"budget {r.budget}{rho}"

    def draw(r: PathLengthResult, ax, pfig, row, col) -> None:
        for fam in sorted(set(r.families)):
            idx = [i for i, f in enumerate(r.families) if f == fam]
            ys = [r.error[i] for i in idx]
            cis = [(r.error[i] - (r.std[i] or 0), r.error[i] + (r.std[i] or 0)) for i in idx]
            _errorbars(ax, pfig, row, col, [r.path_length[i] for i in idx], ys, cis, color=_color(fam),
                       name=fam, text=[r.names[i] for i in idx])
        ax.legend(fontsize=7)

    return _panels("path_length", "Validation error (mean ± std over seeds) against mean path length",
                   items, sub, draw, out_dir, "mean path length (weighted layers)", "validation error (%)")


def plot_fidelity(checks: list[FidelityCheck], out_dir: Path, threshold: float = 0.5) -> FigureFiles | None:
    """Spearman ρ between each rung's error and the final error, per family, with intervals."""
    items = [c for c in checks if c.rungs]
    if not items:
        return None

    def draw(_, ax, pfig, row, col) -> None:
        for c in items:
            rungs = [r for r in c.rungs if not math.isnan(r.spearman)]
            _errorbars(ax, pfig, row, col, [r.epoch for r in rungs], [r.spearman for r in rungs],
                       [r.spearman_ci for r in rungs], color=_color(c.family), name=c.family,
                       text=[f"n = {r.n}, Kendall τ = {r.kendall:.2f}" for r in rungs], mode="lines+markers")
        ax.axhline(threshold, color="tab:red", ls="--", lw=1)
        pfig.add_hline(y=threshold, line_color="red", line_dash="dash", row=row, col=col)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r.epoch for c in items for r in c.rungs}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        pfig.update_xaxes(type="log", row=row, col=col)
        ax.legend(fontsize=7)

    return _panels("fidelity", "Can the cheap rungs be trusted? Rank correlation with the final error",
                   [None], lambda _: f"warning below ρ = {threshold}", draw, out_dir, "epoch (ASHA rung)",
                   "Spearman ρ")


def draw_all(analysis: StudyAnalysis, out_dir: Path) -> list[FigureFiles]:
    """Every figure the analysis has data for, written under `out_dir`."""
    out_dir = Path(out_dir)
    figs = [
        plot_n0(analysis.n0, out_dir),
        plot_best(analysis.best_k, out_dir, "best_k"),
        plot_best(analysis.wrn, out_dir, "wrn"),
        plot_edf(analysis.edf, out_dir),
        plot_pareto(analysis.pareto, out_dir),
        plot_path_length(analysis.path_length, out_dir),
        plot_fidelity(analysis.fidelity, out_dir),
    ]
    return [f for f in figs if f is not None]
