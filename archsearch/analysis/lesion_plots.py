"""The report's lesion figures: what `archsearch lesion STUDY.yaml` measured, drawn side by side per family.

`archsearch lesion` writes one JSON per lesioned network into runs/<study>/lesion/; this module only reads
and draws them (PNG + interactive HTML, as every report figure), with one sentence per figure saying what
it shows. The best network of each family present is drawn (lowest error with nothing removed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from archsearch.analysis.plots import FigureFiles, _color, _panels, _save

CURVES_CAPTION = ("Validation error of each family's best trained network as n random residual units are deleted at "
                  "test time (mean ± std over seeded draws, BN statistics as trained), against the fraction of its "
                  "units deleted: a smooth rise is the ensemble-like behaviour Veit et al. report, a cliff is not.")
SINGLE_CAPTION = ("Error after deleting each single part (a whole unit, or one function / branch / stream / warp "
                  "term) at test time; the dashed line is the error with nothing deleted and the downsampling "
                  "units are marked, since their shortcut changes the signal.")
PATHS_CAPTION = ("Share of the gradient reaching the input of the residual body through paths that pass l residual "
                 "units (Veit et al.'s sampling: paths(l) x mean gradient norm of sampled paths of length l); mass "
                 "far below the depth means the effective paths are shallow.")


def load_lesions(folder: Path) -> list[dict[str, Any]]:
    """The best lesioned network of each family in `folder` (runs/<study>/lesion/), best first."""
    best: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(result, dict) or "removed" not in result or "base_error" not in result:
            continue
        family = result.get("family") or str(result.get("name", "?")).split("-", 1)[0]
        if family not in best or result["base_error"] < best[family]["base_error"]:
            best[family] = {**result, "family": family}
    return sorted(best.values(), key=lambda r: r["base_error"])


def lesion_figures(folder: Path, out_dir: Path) -> list[FigureFiles]:
    """The lesion curves, single deletions and effective paths of the lesioned networks in `folder`."""
    results = load_lesions(folder)
    if not results:
        return []
    figs = [plot_curves(results, out_dir), plot_single(results, out_dir),
            plot_paths([r for r in results if "share" in (r.get("effective_paths") or {})], out_dir)]
    return [f for f in figs if f is not None]


def plot_curves(results: list[dict[str, Any]], out_dir: Path) -> FigureFiles:
    title = "Lesions: error vs residual units deleted at test time"
    mfig = MplFigure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(mfig)
    ax = mfig.subplots()
    pfig = go.Figure()
    for r in results:
        xs = [0.0] + [row["n"] / r.get("removable", r["units"]) for row in r["removed"]]
        ys = [r["base_error"]] + [row["error_mean"] for row in r["removed"]]
        sd = [0.0] + [row["error_std"] for row in r["removed"]]
        of = f"of {r.get('removable', r['units'])} {r.get('remove', 'units')}"
        text = ["nothing deleted"] + [f"{row['n']} {of}, {row['paths']:,} paths left" for row in r["removed"]]
        ax.errorbar(xs, ys, yerr=sd, fmt="o-", capsize=3, color=_color(r["family"]), label=r["name"])
        pfig.add_trace(go.Scatter(x=xs, y=ys, error_y=dict(type="data", array=sd), mode="lines+markers",
                                  name=r["name"], hovertext=text, marker_color=_color(r["family"])))
    ax.set_xlabel("fraction of residual units (or functions) deleted")
    ax.set_ylabel("validation error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    mfig.suptitle(title)
    pfig.update_layout(title_text=title, xaxis_title="fraction of residual units (or functions) deleted",
                       yaxis_title="validation error (%)", template="plotly_white", width=720, height=460)
    files = _save("lesion_curves", title, mfig, pfig, out_dir)
    files.caption = CURVES_CAPTION
    return files


def plot_single(results: list[dict[str, Any]], out_dir: Path) -> FigureFiles | None:
    def draw(r: dict[str, Any], ax: Any, pfig: go.Figure, row: int, col: int) -> None:
        rows = r["single"]
        xs = list(range(1, len(rows) + 1))
        labels = [f"s{p['stage']}u{p['unit']} {p['part']}" for p in rows]
        colors = ["#d62728" if p["downsampling"] else _color(r["family"]) for p in rows]
        ax.scatter(xs, [p["error"] for p in rows], c=colors, s=18)
        ax.axhline(r["base_error"], color="k", ls="--", lw=0.8)
        pfig.add_trace(go.Scatter(x=xs, y=[p["error"] for p in rows], mode="markers", hovertext=labels,
                                  marker_color=colors, name=r["name"], showlegend=False), row=row, col=col)
        pfig.add_hline(y=r["base_error"], line_dash="dash", line_color="black", row=row, col=col)

    files = _panels("lesion_single", "Lesions: error after deleting one part (red: downsampling unit)", results,
                    lambda r: f"{r['name']}: {r['base_error']:.2f} % intact", draw, out_dir,
                    "part, in network order", "validation error (%)")
    if files is not None:
        files.caption = SINGLE_CAPTION
    return files


def plot_paths(results: list[dict[str, Any]], out_dir: Path) -> FigureFiles | None:
    def draw(r: dict[str, Any], ax: Any, pfig: go.Figure, row: int, col: int) -> None:
        p = r["effective_paths"]
        ax.bar(p["lengths"], p["share"], color=_color(r["family"]))
        pfig.add_trace(go.Bar(x=p["lengths"], y=p["share"], marker_color=_color(r["family"]), name=r["name"],
                              showlegend=False), row=row, col=col)

    def sub(r: dict[str, Any]) -> str:
        lo, hi = r["effective_paths"]["range"]
        return f"{r['name']}: 90 % via {lo}-{hi} of {r['effective_paths']['units']} units"

    files = _panels("effective_paths", "Effective paths: gradient share by path length", results, sub, draw,
                    out_dir, "residual units on the path", "share of the gradient")
    if files is not None:
        files.caption = PATHS_CAPTION
    return files
