"""The text that goes with an export: the module's docstring, the model card and the command
that reproduces the trial.
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
import textwrap
from pathlib import Path
from typing import Any

import torch

from archsearch.arch.families import family
from archsearch.arch.spec import ArchSpec
from archsearch.export.templates import module_name
from archsearch.train.config import RUNTIME_KEYS

# Left out of `.train.yaml`: how a run executes, not what it learns (archsearch.train.config.RUNTIME_KEYS, as
# the study's training fingerprint leaves them out); the seed goes on the command line.
OMITTED_TRAIN_KEYS = frozenset({"seed", *RUNTIME_KEYS})


def _fmt_error(value: Any) -> str:
    return f"{float(value):.2f} %"


def _error_line(metrics: dict[str, Any]) -> str | None:
    val = metrics.get("val_error")
    if val is None:
        return None
    text = _fmt_error(val)
    extra = []
    if metrics.get("seed") is not None:
        extra.append(f"seed {metrics['seed']}")
    seeds = metrics.get("seeds") or []
    if len(seeds) > 1 and metrics.get("val_error_mean") is not None:
        std = metrics.get("val_error_std")
        spread = f" +- {float(std):.2f}" if std is not None else ""
        extra.append(f"mean of {len(seeds)} seeds {float(metrics['val_error_mean']):.2f}{spread} %")
    return text + (f" ({'; '.join(extra)})" if extra else "")


def _study_line(prov: dict[str, Any]) -> str | None:
    if not prov.get("study"):
        return None
    text = str(prov["study"])
    if prov.get("study_id") is not None:
        text += f" (study id {prov['study_id']})"
    if prov.get("trial") is not None:
        text += f", trial {prov['trial']}"
        if prov.get("trial_id") is not None:
            text += f" (trial id {prov['trial_id']})"
    return text


def _macs_note(spec: ArchSpec) -> str:
    if spec.unit == "warp" and spec.warp_k > 1:
        return "fvcore count of the sequential -K1 twin + one F pass per derivative term"
    return "fvcore, eval mode, one 1x3x32x32 image"


def safe_text(text: str) -> str:
    """Text that cannot end or escape the exported module's docstring."""
    return text.replace("\\", "/").replace('"""', "'''")


def module_docstring(spec: ArchSpec, counts: dict[str, Any], metrics: dict[str, Any], prov: dict[str, Any],
               weights_name: str | None) -> str:
    rows = [("Canonical name", f"{spec.name} ({family(spec.family).title}, {spec.num_classes} classes)"),
            ("Parameters", f"{counts['params']:,}"),
            ("MACs", f"{counts['macs']:,} ({_macs_note(spec)})")]
    if (line := _error_line(metrics)) is not None:
        rows.append(("Validation error", line))
    if metrics.get("test_error") is not None:
        rows.append(("Test error", _fmt_error(metrics["test_error"])))
    if (line := _study_line(prov)) is not None:
        rows.append(("Study", line))
    rows.append(("Weights", weights_name or "none (untrained export)"))
    spec_lines = textwrap.wrap(spec.to_json(), width=78, break_long_words=False, break_on_hyphens=False)
    mod = module_name(spec.name)
    load = f'weights="{weights_name}"' if weights_name else ""
    def para(text: str) -> list[str]:
        return textwrap.wrap(text, width=88, break_long_words=False, break_on_hyphens=False)

    lines = para(f"{spec.name}: a standalone PyTorch model exported by archsearch (needs only torch).")
    lines.append("")
    for key, value in rows:  # wrapped: the file stays within any line-length rule
        lines += textwrap.wrap(value, width=96, initial_indent=f"{key + ':':<18}", subsequent_indent=" " * 18,
                               break_long_words=False, break_on_hyphens=False)
    lines += ["Spec (JSON):"] + [f"    {s}" for s in spec_lines]
    lines += ["", "Usage:", f"    from {mod} import build_model", f"    model = build_model({load}).eval()", ""]
    lines += para("Inputs are 3x32x32 images normalised per channel as in training. The state_dict names "
                  f'match archsearch\'s own model (archsearch.build("{spec.name}")), so checkpoints move '
                  "both ways with strict=True.")
    return safe_text("\n".join(lines))


def reproduce_command(spec: ArchSpec, *, seed: Any = None, epochs: Any = None, config_file: str | None = None,
                      test: bool = False) -> str:
    """`archsearch train NAME [--config FILE] [--seed S] [--epochs E] [--test]`: the trial's run.

    `config_file` is the exported `<name>.train.yaml` (every trainer setting of the trial), so the
    command repeats the run without knowing which settings differed from the defaults.
    """
    parts = ["archsearch", "train", spec.name]
    if config_file:
        parts += ["--config", config_file]
    if seed is not None:
        parts += ["--seed", str(seed)]
    if epochs is not None:
        parts += ["--epochs", str(epochs)]
    if test:
        parts.append("--test")
    return shlex.join(parts)


def train_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's trainer configuration without the run-time knobs and the seed."""
    config = meta.get("config")
    if not isinstance(config, dict):
        return {}
    return {k: v for k, v in sorted(config.items()) if k not in OMITTED_TRAIN_KEYS}


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    out = ["| | |", "|---|---|"]
    for key, value in rows:
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        out.append(f"| {key} | {text.replace('|', '/')} |")
    return out


def model_card(spec: ArchSpec, counts: dict[str, Any], metrics: dict[str, Any], prov: dict[str, Any],
          meta: dict[str, Any], code: Path, weights: Path | None, source: str | None,
          train_file: Path | None) -> str:
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    rows: list[tuple[str, Any]] = [
        ("canonical name", f"`{spec.name}`"), ("family", family(spec.family).title),
        ("depth", spec.depth), ("units per stage", "/".join(map(str, spec.units))),
        ("stage widths", "/".join(map(str, spec.out_widths))), ("classes", spec.num_classes),
        ("parameters", f"{counts['params']:,}"), ("MACs", f"{counts['macs']:,} ({_macs_note(spec)})"),
        ("paths", f"{counts['paths']:,}, length {counts['path_length_mean']:.2f} ± "
                  f"{counts['path_length_std']:.2f}"),
    ]
    if (line := _error_line(metrics)) is not None:
        rows.append(("validation error", line.replace("+-", "±")))
    if metrics.get("test_error") is not None:
        rows.append(("test error", _fmt_error(metrics["test_error"])))
    if metrics.get("rank") is not None:
        rows.append(("rank in study", metrics["rank"]))
    mod = module_name(spec.name)
    lines = [f"# {spec.name}", "", f"{family(spec.family).title} exported by archsearch as standalone "
             "PyTorch code (no archsearch import).", "", *_table(rows), "", "## Files", "",
             f"- `{code.name}`: the model; `build_model(num_classes={spec.num_classes}, weights=None)`."]
    if weights is not None:
        lines.append(f"- `{weights.name}`: trained weights, a plain state_dict"
                     + (f" (from `{source}`)." if source else "."))
    else:
        lines.append("- no weights: this export is untrained (He initialisation, as archsearch).")
    lines += ["", "## Usage", "", "```python", f"from {mod} import build_model", "",
              f"model = build_model({f'weights={weights.name!r}' if weights else ''}).eval()", "```", "",
              "Inputs are 3×32×32 images, normalised per channel with the training split's mean and "
              "standard deviation ((x/255 − mean)/std), as archsearch's trainer does.",
              f"The state_dict names are archsearch's own: `archsearch.build({spec.name!r})` loads "
              f"{f'`{weights.name}`' if weights else 'these weights'} with `strict=True`, and the exported "
              "model loads archsearch checkpoints (their `model` entry) the same way."]
    attrs = prov.get("user_attrs") or {}
    seed = prov.get("seed", attrs.get("seed", config.get("seed")))
    epochs = config.get("epochs") or attrs.get("max_epochs") or attrs.get("epochs")
    command = prov.get("command") or reproduce_command(
        spec, seed=seed, epochs=epochs, config_file=train_file.name if train_file else None,
        test=metrics.get("test_error") is not None)
    lines += ["", "## Reproduce", "", "```sh", str(command), "```"]
    if train_file is not None:
        lines += ["", f"`{train_file.name}` holds the trial's trainer settings (run-time knobs left out)."]
    trial_rows = [(k, attrs[k]) for k in ("seed", "epochs", "max_epochs", "full_fidelity", "budget",
                                          "latency_b1_ms", "latency_b128_ms") if attrs.get(k) is not None]
    if config or prov.get("params") or trial_rows:
        lines += ["", "## Training settings", ""]
        if config:
            lines += ["Trainer configuration (from the checkpoint):", "", *_table(sorted(config.items())), ""]
        if prov.get("params"):
            lines += ["Sampled parameters (Optuna trial):", "", *_table(sorted(prov["params"].items())), ""]
        if trial_rows:
            lines += ["Trial record:", "", *_table(trial_rows), ""]
        if lines[-1] == "":
            lines.pop()
    prov_rows: list[tuple[str, Any]] = []
    for key, label in (("study", "study"), ("storage", "storage"), ("study_id", "study id"),
                       ("trial", "trial number"), ("trial_id", "trial id"), ("checkpoint", "checkpoint"),
                       ("note", "note")):
        if prov.get(key) is not None:
            prov_rows.append((label, prov[key]))
    if meta.get("epoch") is not None:
        prov_rows.append(("checkpoint epoch", meta["epoch"]))
    prov_rows += [("exported", _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
                  ("torch", torch.__version__), ("spec (JSON)", f"`{spec.to_json()}`")]
    lines += ["", "## Provenance", "", *_table(prov_rows)]
    return "\n".join(lines) + "\n"
