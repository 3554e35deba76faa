"""Export architectures as standalone PyTorch code, verified by round trip.

Users leave with code for their own training scripts: one readable `.py` per architecture that
imports only torch, holds only the blocks its network uses (composed from `export.templates`) and
mirrors archsearch's module tree, so archsearch's `state_dict` loads into it with `strict=True` and
back. Beside it go the trained weights (`<name>.pt`, a plain state_dict) and a model card
(`<name>.md`). Every export is checked before it is reported: the written module is imported, the
weights are loaded strictly and its outputs, parameter count and imports are compared with
archsearch's own model.

The `.py` is named as an importable module (`wrn-16-8-drop0.3` -> `wrn_16_8_drop0_3.py`); the
weights, card and `<name>.train.yaml` (the checkpoint's trainer settings, for `archsearch train
--config`) keep the canonical name.

`export_study` ranks a study's architectures by the mean validation error of their COMPLETE
full-fidelity trials (one trial = one architecture and seed; seeds are grouped by canonical spec)
and exports the best seed's checkpoint of the top N.
"""

from __future__ import annotations

import ast
import datetime as _dt
import importlib.util
import json
import math
import re
import shlex
import statistics
import textwrap
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archsearch.arch.families import family
from archsearch.arch.spec import ArchSpec, as_spec, parse_name
from archsearch.errors import ArchsearchError, ConfigError, SpecError
from archsearch.export.source import render
from archsearch.export.templates import ALLOWED_IMPORTS, module_name
from archsearch.train.loop import RUNTIME_KEYS

# Left out of `.train.yaml`: how a run executes, not what it learns (archsearch.train.loop.RUNTIME_KEYS, as
# the study's training fingerprint leaves them out); the seed goes on the command line.
OMITTED_TRAIN_KEYS = frozenset({"seed", *RUNTIME_KEYS})
CHECKPOINT_FILE = "checkpoint.pt"  # what archsearch.train.loop writes into a trial's directory


class ExportError(ArchsearchError):
    """An export that could not be written or did not survive its round-trip check."""


@dataclass(frozen=True)
class ExportResult:
    """What one export wrote: the code, the model card and (when trained) the weights."""

    name: str
    code: Path
    card: Path
    weights: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)
    train_config: Path | None = None  # `<name>.train.yaml`: the trainer settings of the checkpoint

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.code, self.weights, self.card, self.train_config) if p is not None]


# =============================================================================== weights
def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrappers' key prefixes (torch.compile's `_orig_mod.`, DataParallel's `module.`)."""
    for prefix in ("_orig_mod.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, checkpoint metadata) from a raw state_dict or a trainer checkpoint.

    A trainer checkpoint is a dict holding the state_dict under "model" (plus "config", "epoch",
    "history", ...); a directory means its `checkpoint.pt`. Loaded with `weights_only=True`.
    """
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise ExportError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{p}: cannot read checkpoint: {first}") from None
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        meta = {k: v for k, v in obj.items() if k in ("name", "epoch", "config", "history", "version")}
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ExportError(f"{p}: neither a state_dict nor a checkpoint holding one under 'model'")
    return _strip_prefixes(dict(obj)), meta


def _classes_in(state: dict[str, torch.Tensor]) -> int | None:
    """Output classes of a state_dict: rows of the head's Linear weight."""
    rows = [v.shape[0] for k, v in state.items() if k.startswith("head.") and k.endswith(".weight") and v.ndim == 2]
    return rows[-1] if rows else None


def _fit_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load strictly, with a one-line reason when the weights belong to another network."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        first = (missing or unexpected or shapes)[0]
        raise ExportError(f"{where}: weights do not fit {model.spec.name}: {len(missing)} missing, "
                          f"{len(unexpected)} unexpected, {len(shapes)} of another shape (first: {first})")
    model.load_state_dict(state, strict=True)


# =============================================================================== verification
def foreign_imports(source: str) -> list[str]:
    """Modules an exported file imports beyond torch (must be empty)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(node.module or "")
            found += [f"{node.module}.{a.name}" for a in node.names if node.module == "torch" and a.name != "nn"]
    return [m for m in found if m not in ALLOWED_IMPORTS]


def load_module(path: str | Path) -> Any:
    """Import an exported file under a private name (not added to sys.modules)."""
    spec = importlib.util.spec_from_file_location(f"_archsearch_export_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise ExportError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verify_export(path: str | Path, model: nn.Module, *, atol: float = 1e-5) -> None:
    """Round trip: the exported module takes `model`'s state_dict strictly and computes the same.

    Raises `ExportError` when imports, parameter count, state_dict names or eval outputs differ.
    """
    source = Path(path).read_text()
    bad = foreign_imports(source)
    if bad:
        raise ExportError(f"{path}: exported code imports {bad}; only {list(ALLOWED_IMPORTS)} are allowed")
    spec: ArchSpec = model.spec  # type: ignore[assignment]
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        exported = load_module(path).build_model(spec.num_classes)
        x = torch.randn(2, 3, 32, 32)
    try:
        if list(exported.state_dict()) != list(model.state_dict()):
            raise ExportError(f"{path}: state_dict names differ from archsearch's {spec.name}")
        exported.load_state_dict(model.state_dict(), strict=True)
        ours = sum(p.numel() for p in exported.parameters())
        theirs = sum(p.numel() for p in model.parameters())
        if ours != theirs:
            raise ExportError(f"{path}: {ours} parameters, archsearch's {spec.name} has {theirs}")
        model.eval()
        exported.eval()
        with torch.no_grad(), warnings.catch_warnings():
            # torch's first forward-mode AD call scripts its JVP decompositions and warns about that
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            want, got = model(x), exported(x)
        if want.shape != got.shape or not torch.allclose(want, got, rtol=atol, atol=atol):
            diff = (want - got).abs().max().item() if want.shape == got.shape else float("nan")
            raise ExportError(f"{path}: outputs differ from archsearch's {spec.name} (max |diff| {diff:.3g})")
    finally:
        model.train(was_training)


# =============================================================================== text
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


def _safe(text: str) -> str:
    """Text that cannot end or escape the exported module's docstring."""
    return text.replace("\\", "/").replace('"""', "'''")


def _docstring(spec: ArchSpec, counts: dict[str, Any], metrics: dict[str, Any], prov: dict[str, Any],
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
    return _safe("\n".join(lines))


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


def _train_settings(meta: dict[str, Any]) -> dict[str, Any]:
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


def _card(spec: ArchSpec, counts: dict[str, Any], metrics: dict[str, Any], prov: dict[str, Any],
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


# =============================================================================== one architecture
def export_architecture(spec_or_name: ArchSpec | str | dict[str, Any], out_dir: str | Path, *,
                        weights: str | Path | None = None, metrics: dict[str, Any] | None = None,
                        provenance: dict[str, Any] | None = None, num_classes: int | None = None,
                        verify: bool = True) -> ExportResult:
    """Write `<module>.py` (+ `<name>.pt` when `weights` is given) and `<name>.md` into `out_dir`.

    `weights` is a checkpoint path (a raw state_dict, or a dict holding it under "model" as the
    trainer writes). A bare name takes its class count from the weights' head unless
    `num_classes` is given. `metrics` (val_error, test_error, seed, seeds, val_error_mean, ...)
    and `provenance` (study, storage, study_id, trial, trial_id, user_attrs, params, ...) go into
    the docstring and the model card. With `verify` the written module is round-trip checked.
    """
    from archsearch.nn.build import build
    from archsearch.nn.complexity import count

    metrics = dict(metrics or {})
    prov = dict(provenance or {})
    spec = as_spec(spec_or_name, num_classes)
    state: dict[str, torch.Tensor] | None = None
    meta: dict[str, Any] = {}
    if weights is not None:
        state, meta = load_weights(weights)
        _check_checkpoint_name(meta, spec, weights)
        found = _classes_in(state)
        named = isinstance(spec_or_name, str) or (isinstance(spec_or_name, dict) and "num_classes" not in spec_or_name)
        if num_classes is None and named and found:
            spec = spec.with_classes(found)
    model = build(spec, strategy="loop")
    if state is not None:
        _fit_weights(model, state, str(weights))
    counts = count(spec, num_classes=spec.num_classes)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    code = out / f"{module_name(spec.name)}.py"
    weights_path = out / f"{spec.name}.pt" if state is not None else None
    card = out / f"{spec.name}.md"
    doc = _docstring(spec, counts, metrics, prov, weights_path.name if weights_path else None)
    code.write_text(render(spec, doc))
    if verify:
        try:
            verify_export(code, model)
        except Exception:
            code.unlink(missing_ok=True)
            raise
    if weights_path is not None:
        torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, weights_path)
    train_file = None
    if settings := _train_settings(meta):
        import yaml

        train_file = out / f"{spec.name}.train.yaml"
        origin = f"{prov['study']} trial {prov.get('trial')}" if prov.get("study") else str(weights)
        train_file.write_text(f"# Trainer settings of {spec.name} ({_safe(origin)}); the seed goes on the "
                              "command line.\n# Use: archsearch train NAME --config THIS_FILE --seed S\n"
                              + yaml.safe_dump(settings, sort_keys=True))
    card.write_text(_card(spec, counts, metrics, prov, meta, code, weights_path,
                          str(weights) if weights is not None else None, train_file))
    summary = {"params": counts["params"], "macs": counts["macs"], **metrics}
    return ExportResult(spec.name, code, card, weights_path, summary, train_file)


def _check_checkpoint_name(meta: dict[str, Any], spec: ArchSpec, where: Any) -> None:
    name = meta.get("name")
    if not isinstance(name, str):
        return
    try:
        theirs = parse_name(name)
    except SpecError:
        return
    if theirs.with_classes(spec.num_classes) != spec.with_classes(spec.num_classes):
        raise ExportError(f"{where}: checkpoint is for {theirs.name}, not {spec.name}")


# =============================================================================== studies
@dataclass
class Candidate:
    """One architecture of a study: its usable trials (best first) and their mean error."""

    spec: ArchSpec
    trials: list[Any]
    errors: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.errors)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.errors) if len(self.errors) > 1 else None


def trial_error(trial: Any) -> float | None:
    """The trial's validation error (first objective), or None."""
    values = getattr(trial, "values", None)
    if values:
        return float(values[0])
    value = getattr(trial, "value", None)
    return None if value is None else float(value)


def is_full_fidelity(attrs: dict[str, Any]) -> bool:
    """`full_fidelity`, or (when a trial lacks it) epochs reached >= max_epochs, as the analysis."""
    if attrs.get("full_fidelity") is not None:
        return bool(attrs["full_fidelity"])
    epochs, max_epochs = attrs.get("epochs"), attrs.get("max_epochs")
    return epochs is not None and max_epochs is not None and int(epochs) >= int(max_epochs)


def trial_spec(attrs: dict[str, Any]) -> ArchSpec | None:
    if attrs.get("spec"):
        try:
            return ArchSpec.from_json(str(attrs["spec"]))
        except (SpecError, ValueError):
            pass
    if attrs.get("name"):
        try:
            return parse_name(str(attrs["name"]))
        except SpecError:
            return None
    return None


def rank_trials(trials: list[Any]) -> list[Candidate]:
    """Architectures of COMPLETE full-fidelity trials, ranked by mean validation error.

    Seeds of one spec are grouped; ties go to the lower best error, then the name. Each candidate's
    trials are sorted best first (ties: lower trial number).
    """
    groups: dict[ArchSpec, list[tuple[float, Any]]] = {}
    for t in trials:
        state = getattr(getattr(t, "state", None), "name", str(getattr(t, "state", "")))
        error = trial_error(t)
        attrs = dict(getattr(t, "user_attrs", {}) or {})
        if state != "COMPLETE" or error is None or not math.isfinite(error) or not is_full_fidelity(attrs):
            continue
        spec = trial_spec(attrs)
        if spec is not None:
            groups.setdefault(spec, []).append((error, t))
    out = []
    for spec, items in groups.items():
        items.sort(key=lambda item: (item[0], item[1].number))
        out.append(Candidate(spec, [t for _, t in items], [e for e, _ in items]))
    out.sort(key=lambda c: (c.mean, c.errors[0], c.spec.name))
    return out


def display_url(url: str) -> str:
    """A storage URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (e.g. a journal file): hide user:password@ by hand
        return re.sub(r"//[^/@]*@", "//***@", url)


def _storage_file(url: str) -> Path | None:
    """The file behind a sqlite:/// or journal: storage URL (None for servers)."""
    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix):
            path = url[len(prefix):].split("?", 1)[0]
            return None if path in ("", ":memory:") else Path(path)
    return None


def _resolve_checkpoint(value: Any, storage_url: str) -> Path | None:
    """A trial's `checkpoint` attribute as an existing file, looked up from the working directory
    and from the study database's folder upwards (runs/<study>/ moves as a whole)."""
    if not value:
        return None
    raw = Path(str(value)).expanduser()
    bases = [Path.cwd()]
    db = _storage_file(storage_url)
    if db is not None:
        bases += [db.resolve().parent, *db.resolve().parent.parents[:2]]
    for base in bases if not raw.is_absolute() else [Path("/")]:
        p = base / raw
        if p.is_dir():
            p = p / CHECKPOINT_FILE
        if p.is_file():
            return p
    return None


def open_study(storage_url: str, study_name: str) -> Any:
    """Load an Optuna study, with one-line errors for a missing database or study.

    The storage is opened as the rest of archsearch opens it (`archsearch.study.storage.open_storage`:
    SQLite in WAL mode, journal files) when that module is present.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = _storage_file(storage_url)
    if db is not None and not db.is_file():
        raise ExportError(f"no study database at {db} (storage {display_url(storage_url)})")
    storage: Any = storage_url
    try:
        from archsearch.study.storage import open_storage
    except ImportError:
        pass
    else:
        storage = open_storage(storage_url, where="export", create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ExportError(f"no study {study_name!r} in {display_url(storage_url)}; "
                          f"studies there: {', '.join(names) or 'none'}") from None


def export_study(storage_url: str, study_name: str, out_dir: str | Path, top: int = 5, *,
                 verify: bool = True) -> list[ExportResult]:
    """Export the `top` architectures of a study, best mean validation error first.

    For each, the best seed whose checkpoint can be found is exported (the card says so when that
    is not the best seed); architectures without any checkpoint are exported untrained. Also writes
    `ranking.md` in `out_dir`.
    """
    if top < 1:
        raise ExportError(f"--top must be >= 1, not {top}")
    study = open_study(storage_url, study_name)
    candidates = rank_trials(study.get_trials(deepcopy=False))
    if not candidates:
        raise ExportError(f"study {study_name!r} has no COMPLETE full-fidelity trials to export")
    out = Path(out_dir)
    results = []
    for rank, cand in enumerate(candidates[:top], start=1):
        chosen, ckpt = cand.trials[0], None
        for t in cand.trials:
            ckpt = _resolve_checkpoint(t.user_attrs.get("checkpoint"), storage_url)
            if ckpt is not None:
                chosen = t
                break
        attrs = dict(chosen.user_attrs)
        note = None
        if ckpt is None:
            note = "no checkpoint of any seed was found; exported untrained"
        elif chosen is not cand.trials[0]:
            note = (f"the best seed's checkpoint (trial {cand.trials[0].number}) was missing; "
                    f"exported trial {chosen.number}")
        metrics = {"val_error": trial_error(chosen), "seed": attrs.get("seed"), "test_error": attrs.get("test_error"),
                   "val_error_mean": cand.mean, "val_error_std": cand.std, "rank": rank,
                   "seeds": [t.user_attrs.get("seed") for t in cand.trials]}
        prov = {"study": study_name, "storage": display_url(storage_url),
                "study_id": getattr(study, "_study_id", None), "trial": chosen.number,
                "trial_id": getattr(chosen, "_trial_id", None), "seed": attrs.get("seed"),
                "checkpoint": attrs.get("checkpoint"), "user_attrs": attrs, "params": dict(chosen.params),
                "note": note}
        results.append(export_architecture(cand.spec, out, weights=ckpt, metrics=metrics, provenance=prov,
                                           verify=verify))
    _write_ranking(out, study_name, candidates, results)
    return results


def _write_ranking(out: Path, study_name: str, candidates: list[Candidate], results: list[ExportResult]) -> Path:
    lines = [f"# {study_name}: exported architectures", "",
             "Ranked by mean validation error over the seeds of COMPLETE full-fidelity trials.", "",
             "| rank | architecture | mean val error (%) | seeds | exported trial | files |",
             "|---:|---|---:|---:|---|---|"]
    for rank, (cand, res) in enumerate(zip(candidates, results, strict=False), start=1):
        std = f" ± {cand.std:.2f}" if cand.std is not None else ""
        files = ", ".join(f"`{p.name}`" for p in res.paths)
        lines.append(f"| {rank} | `{cand.spec.name}` | {cand.mean:.2f}{std} | {len(cand.errors)} | "
                     f"seed {res.metrics.get('seed')}, val {res.metrics.get('val_error'):.2f} % | {files} |")
    path = out / "ranking.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# =============================================================================== study and spec files
SPEC_KEYS = {f for f in ArchSpec.__dataclass_fields__ if f != "_validated"} | {"name"}


def read_yaml(path: str | Path) -> dict[str, Any]:
    from archsearch.yamlfile import load_yaml

    p = Path(path)
    data = load_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys, got {type(data).__name__}")
    return data


def is_spec_mapping(data: dict[str, Any]) -> bool:
    """A spec file holds ArchSpec fields or {name: <architecture>}; anything else is a study file."""
    if not data or not set(data) <= SPEC_KEYS:
        return False
    if "name" in data:
        try:
            parse_name(str(data["name"]))
        except SpecError:
            return False
    return True


def default_storage(name: str) -> str:
    return f"sqlite:///runs/{name}/study.db"


def study_location(path: str | Path) -> tuple[str, str]:
    """(study name, storage URL) of a study file, read with `archsearch.study.config.load_study`.

    When the loader rejects a file (a space file moved away, say) whose study database still
    exists, the keys `name` and `storage` (default `sqlite:///runs/<name>/study.db`) are enough.
    """
    from archsearch.study.config import load_study

    try:
        config = load_study(path)
        return config.name, config.storage_url
    except ArchsearchError as exc:
        loader_error = exc
    data = read_yaml(path)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise loader_error
    storage = data.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise ConfigError(f"{path}: storage: expected a URL string, got {type(storage).__name__}")
    url = storage or default_storage(name)
    found = _storage_file(url)
    if found is not None and not found.is_file():
        raise loader_error  # not a study we can find: the loader's reason says more
    return name, url
