"""`archsearch lesion`: delete residual parts of a trained network at test time (Veit et al., Multi-ResNet).

    archsearch lesion NAME|SPEC.yaml --weights CKPT [--data D] [--subset N] [--paths] [--json]
    archsearch lesion STUDY.yaml --top N | --per-family          a study's best trained candidates

Prints the error with nothing removed, after each single deletion (unit, function, branch, stream, warp
term; downsampling units marked) and against the number of whole units removed (mean ± std over seeded
draws) beside the surviving paths; `--paths` adds the effective-path gradient shares. Evaluated on the
checkpoint's own validation split (its `val_size` and `split_seed`), BN statistics as trained unless
`--recalibrate-bn N`. A study's results are also written to runs/<study>/lesion/<name>.json, where
`archsearch report` finds them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from archsearch.commands import positive_int
from archsearch.commands.train import load_arch
from archsearch.errors import ArchsearchError, ConfigError

HELP = "delete residual parts of a trained network at test time: errors, surviving paths, effective paths"
DEFAULT_TOP = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="NAME|SPEC.yaml|STUDY.yaml",
                        help="architecture name or spec file (with --weights), or a study file")
    parser.add_argument("--weights", type=Path, help="trained checkpoint (trainer checkpoint or state_dict)")
    parser.add_argument("--top", type=positive_int, help=f"a study's N best architectures (default {DEFAULT_TOP})")
    parser.add_argument("--per-family", action="store_true", help="a study's best trained architecture per family")
    parser.add_argument("--data", metavar="NAME|PATH", help="dataset name or archive/folder (default: the "
                        "checkpoint's dataset, found through ARCHSEARCH_DATA)")
    parser.add_argument("--subset", type=positive_int, metavar="N", help="evaluate on the first N validation images")
    parser.add_argument("--draws", type=positive_int, default=5, help="random draws per number removed (default 5)")
    parser.add_argument("--max-removed", type=positive_int, metavar="N", help="remove up to N units (default all)")
    parser.add_argument("--remove", choices=["units", "functions"], default="units",
                        help="what random deletions draw: whole units (default) or single residual functions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random deletions and path samples")
    parser.add_argument("--recalibrate-bn", type=positive_int, metavar="N",
                        help="re-estimate BN statistics on N training images for every lesion (default: trained)")
    parser.add_argument("--paths", action="store_true", help="also measure effective paths (gradient per length)")
    parser.add_argument("--path-samples", type=positive_int, default=5, help="sampled paths per length (default 5)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="one JSON line per network, no progress")


def run(args: argparse.Namespace) -> int:
    import torch  # lazy: the CLI imports every command module

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    from archsearch.export.writer import is_spec_mapping, read_yaml

    target = Path(args.target)
    if target.suffix.lower() in (".yaml", ".yml") and target.is_file() and not is_spec_mapping(read_yaml(target)):
        if args.weights is not None:
            raise ArchsearchError("--weights applies to one architecture; a study's trials bring their own")
        return _study(target, args)
    if args.top is not None or args.per_family:
        raise ArchsearchError("--top/--per-family apply to a study file")
    if args.weights is None:
        raise ArchsearchError(f"{args.target}: a lesion needs trained weights: give --weights CKPT")
    spec = load_arch(args.target)
    result = lesion_checkpoint(spec, args.weights, args, named=not target.is_file())
    _print(result, args.json)
    return 0


def lesion_checkpoint(spec: Any, weights: Path, args: argparse.Namespace, *, named: bool) -> dict[str, Any]:
    """Load `weights` into `spec`'s network, pick the checkpoint's validation images, run the lesions."""
    from archsearch.analysis.lesion import Evaluator, effective_paths, lesion_study
    from archsearch.export.weights import classes_in, fit_weights, load_weights
    from archsearch.export.writer import check_checkpoint_name
    from archsearch.nn.build import build
    from archsearch.train.precision import resolve_device

    state, meta = load_weights(weights)
    if named and classes_in(state):
        spec = spec.with_classes(classes_in(state))
    check_checkpoint_name(meta, spec, weights)
    net = build(spec, strategy="loop")
    fit_weights(net, state, str(weights))
    device = resolve_device(args.device)
    net = net.to(device).eval()
    images, labels, normalize, recal, where = _images(meta.get("config") or {}, spec, args, device)
    say = None if args.json else _progress
    evaluator = Evaluator(net, images, labels, normalize, recalibrate=recal)
    result = {"name": spec.name, "family": spec.family, "weights": str(weights), "epoch": meta.get("epoch"),
              "images": len(images), "split": where, "draws": args.draws, "seed": args.seed}
    result.update(lesion_study(evaluator, draws=args.draws, seed=args.seed, max_removed=args.max_removed,
                               remove=args.remove, progress=say))
    if args.paths:
        try:
            result["effective_paths"] = effective_paths(net, images, labels, normalize, samples=args.path_samples,
                                                        seed=args.seed, progress=say)
        except TypeError as exc:  # merge-and-run streams and warp operators have no single skip/residual choice
            result["effective_paths"] = {"skipped": f"{spec.family}: {exc}"}
    return result


def _images(config: dict[str, Any], spec: Any, args: argparse.Namespace, device: Any) -> tuple[Any, ...]:
    """(images, labels, normalizer, BN images or None, split name) of the checkpoint's validation split."""
    from archsearch.train.augment import Normalizer
    from archsearch.train.data import load_dataset, split_indices
    from archsearch.train.evaluate import precise_bn_images

    source = args.data or config.get("dataset") or "cifar10"
    data = load_dataset(source, progress=not args.json)
    if data.num_classes != spec.num_classes:
        raise ConfigError(f"{source}: {data.num_classes} classes, but {spec.name} was trained for "
                          f"{spec.num_classes} (give --data)")
    val_size = int(config.get("val_size", 5000))
    train_idx, val_idx = split_indices(len(data.train_x), val_size, seed=int(config.get("split_seed", 0)),
                                       subset=config.get("subset"))
    if val_size:
        images, labels, where = data.train_x[val_idx], data.train_y[val_idx], "validation"
    else:
        images, labels, where = data.test_x, data.test_y, "test"
    if args.subset:
        images, labels = images[: args.subset], labels[: args.subset]
    recal = None
    if args.recalibrate_bn:
        recal = precise_bn_images(data.train_x[train_idx], args.recalibrate_bn, seed=args.seed, epoch=0,
                                  padding=str(config.get("padding", "zero"))).to(device)
    normalize = Normalizer(data.mean, data.std, device)
    return images.to(device), labels.to(device), normalize, recal, where


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ studies
def _study(path: Path, args: argparse.Namespace) -> int:
    from archsearch.export.writer import rank_trials, resolve_checkpoint, study_location
    from archsearch.study.lifecycle import load_existing_study
    from archsearch.study.runs import resolve_runs_dir

    name, storage = study_location(path)
    study = load_existing_study(storage, name, where="lesion")
    trained = []
    for cand in rank_trials(study.get_trials(deepcopy=False)):
        ckpt = next((c for t in cand.trials if (c := resolve_checkpoint(t.user_attrs.get("checkpoint"), storage))),
                    None)
        if ckpt is not None:
            trained.append((cand.spec, ckpt))
    if not trained:
        raise ArchsearchError(f"study {name!r}: no COMPLETE full-fidelity trial with a checkpoint to lesion")
    if args.per_family:
        best: dict[str, tuple[Any, Path]] = {}
        for spec, ckpt in trained:
            best.setdefault(spec.family, (spec, ckpt))
        chosen = list(best.values())
    else:
        chosen = trained[: args.top or DEFAULT_TOP]
    out = resolve_runs_dir()[0] / name / "lesion"
    out.mkdir(parents=True, exist_ok=True)
    for spec, ckpt in chosen:
        result = lesion_checkpoint(spec, ckpt, args, named=False)
        result["study"] = name
        (out / f"{spec.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        _print(result, args.json)
        if not args.json:
            print(f"    wrote {out / f'{spec.name}.json'}")
    return 0


# ------------------------------------------------------------------------------------------ output
def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    base = result["base_error"]
    print(f"{result['name']}: {result['images']} {result['split']} images, BN {result['bn']}, weights "
          f"{result['weights']}")
    print(f"  nothing removed: {base:.2f} % error, {result['paths']:,} paths through {result['units']} units")
    print("  single deletions:            error    change")
    for row in result["single"]:
        down = " (downsampling)" if row["downsampling"] else ""
        label = f"stage {row['stage']} unit {row['unit']} {row['part']}{down}"
        print(f"    {label:<38} {row['error']:6.2f} %  {row['error'] - base:+6.2f}")
    print(f"  {result['remove']} removed at random, of {result['removable']} ({result['draws']} draws, "
          f"seed {result['seed']}):")
    print("    n    error (mean ± std)    paths left")
    for row in result["removed"]:
        paths = f"{row['paths']:,}" if isinstance(row["paths"], int) else f"{row['paths']:,.1f}"
        print(f"    {row['n']:<4} {row['error_mean']:6.2f} ± {row['error_std']:5.2f} %      {paths}")
    paths = result.get("effective_paths")
    if paths and "share" in paths:
        lo, hi = paths["range"]
        c = paths["convs_per_function"]
        print(f"  effective paths: 90 % of the gradient from paths through {lo}-{hi} of {paths['units']} units "
              f"({c * lo}-{c * hi} residual layers)")
        print("    " + " ".join(f"{n}:{s:.3f}" for n, s in zip(paths["lengths"], paths["share"], strict=True)))
    elif paths:
        print(f"  effective paths: not measured ({paths['skipped']})")
