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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from archsearch.arch.spec import ArchSpec, as_spec, parse_name
from archsearch.errors import ArchsearchError, ConfigError, SpecError
from archsearch.export.model_card import model_card, module_docstring, safe_text, train_settings
from archsearch.export.source import render
from archsearch.export.templates import module_name
from archsearch.export.verify import verify_export
from archsearch.export.weights import CHECKPOINT_FILE, ExportError, classes_in, fit_weights, load_weights
from archsearch.nn.build import build
from archsearch.nn.complexity import count
from archsearch.study.config import load_study
from archsearch.study.lifecycle import load_existing_study
from archsearch.study.records import Architecture, rank_architectures, record_of
from archsearch.study.runs import resolve_runs_dir
from archsearch.study.storage import redact, storage_file
from archsearch.yamlfile import load_yaml


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
    metrics = dict(metrics or {})
    prov = dict(provenance or {})
    spec = as_spec(spec_or_name, num_classes)
    state: dict[str, torch.Tensor] | None = None
    meta: dict[str, Any] = {}
    if weights is not None:
        state, meta = load_weights(weights)
        check_checkpoint_name(meta, spec, weights)
        found = classes_in(state)
        named = isinstance(spec_or_name, str) or (isinstance(spec_or_name, dict) and "num_classes" not in spec_or_name)
        if num_classes is None and named and found:
            spec = spec.with_classes(found)
    model = build(spec, strategy="loop")
    if state is not None:
        fit_weights(model, state, str(weights))
    counts = count(spec, num_classes=spec.num_classes)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    code = out / f"{module_name(spec.name)}.py"
    weights_path = out / f"{spec.name}.pt" if state is not None else None
    card = out / f"{spec.name}.md"
    doc = module_docstring(spec, counts, metrics, prov, weights_path.name if weights_path else None)
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
    if settings := train_settings(meta):
        train_file = out / f"{spec.name}.train.yaml"
        origin = f"{prov['study']} trial {prov.get('trial')}" if prov.get("study") else str(weights)
        train_file.write_text(f"# Trainer settings of {spec.name} ({safe_text(origin)}); the seed goes on the "
                              "command line.\n# Use: archsearch train NAME --config THIS_FILE --seed S\n"
                              + yaml.safe_dump(settings, sort_keys=True))
    card.write_text(model_card(spec, counts, metrics, prov, meta, code, weights_path,
                          str(weights) if weights is not None else None, train_file))
    summary = {"params": counts["params"], "macs": counts["macs"], **metrics}
    return ExportResult(spec.name, code, card, weights_path, summary, train_file)


def check_checkpoint_name(meta: dict[str, Any], spec: ArchSpec, where: Any) -> None:
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
    """One architecture of a study to export: its spec, its counting trials (best first), its ranking."""

    spec: ArchSpec
    trials: list[Any]
    ranked: Architecture

    @property
    def errors(self) -> list[float]:
        return self.ranked.errors

    @property
    def mean(self) -> float:
        return self.ranked.mean

    @property
    def std(self) -> float | None:
        return self.ranked.std


def trial_error(trial: Any) -> float | None:
    """The trial's validation error (first objective), or None."""
    values = getattr(trial, "values", None)
    if values:
        return float(values[0])
    value = getattr(trial, "value", None)
    return None if value is None else float(value)


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
    """Architectures of counting trials, lowest seed mean first (`archsearch.study.records.rank_architectures`).

    Each candidate keeps its Optuna trials, best first, for the checkpoints and provenance it exports.
    """
    by_number = {t.number: t for t in trials}
    out = []
    for arch in rank_architectures(record_of(t) for t in trials):
        spec = trial_spec(dict(by_number[arch.best.number].user_attrs))
        if spec is not None:
            out.append(Candidate(spec, [by_number[r.number] for r in arch.records], arch))
    return out


def resolve_checkpoint(value: Any, storage_url: str) -> Path | None:
    """A trial's `checkpoint` attribute as an existing file, looked up from the working directory
    and from the study database's folder upwards (runs/<study>/ moves as a whole)."""
    if not value:
        return None
    raw = Path(str(value)).expanduser()
    bases = [Path.cwd()]
    db = storage_file(storage_url)
    if db is not None:
        bases += [db.resolve().parent, *db.resolve().parent.parents[:2]]
    for base in bases if not raw.is_absolute() else [Path("/")]:
        p = base / raw
        if p.is_dir():
            p = p / CHECKPOINT_FILE
        if p.is_file():
            return p
    return None


def export_study(storage_url: str, study_name: str, out_dir: str | Path, top: int = 5, *,
                 verify: bool = True) -> list[ExportResult]:
    """Export the `top` architectures of a study, best mean validation error first.

    For each, the best seed whose checkpoint can be found is exported (the card says so when that
    is not the best seed); architectures without any checkpoint are exported untrained. Also writes
    `ranking.md` in `out_dir`.
    """
    if top < 1:
        raise ExportError(f"--top must be >= 1, not {top}")
    study = load_existing_study(storage_url, study_name, where="export")
    candidates = rank_trials(study.get_trials(deepcopy=False))
    if not candidates:
        raise ExportError(f"study {study_name!r} has no COMPLETE full-fidelity trials to export")
    out = Path(out_dir)
    results = []
    for rank, cand in enumerate(candidates[:top], start=1):
        chosen, ckpt = cand.trials[0], None
        for t in cand.trials:
            ckpt = resolve_checkpoint(t.user_attrs.get("checkpoint"), storage_url)
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
        prov = {"study": study_name, "storage": redact(storage_url),
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
    """The storage `archsearch run` gives a study without `storage:`: study.db in the resolved results folder."""
    return f"sqlite:///{resolve_runs_dir()[0] / name / 'study.db'}"


def study_location(path: str | Path) -> tuple[str, str]:
    """(study name, storage URL) of a study file, read with `archsearch.study.config.load_study`.

    When the loader rejects a file (a space file moved away, say) whose study database still
    exists, the keys `name` and `storage` (default `sqlite:///runs/<name>/study.db`) are enough.
    """
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
    found = storage_file(url)
    if found is not None and not found.is_file():
        raise loader_error  # not a study we can find: the loader's reason says more
    return name, url
