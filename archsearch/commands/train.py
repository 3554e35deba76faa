"""`archsearch train NAME|SPEC.yaml`: train one architecture, show progress, print its metrics as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from archsearch.arch.spec import as_spec
from archsearch.errors import ArchsearchError, ConfigError

HELP = "train one architecture (name or spec YAML) and print its final metrics as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arch", metavar="NAME|SPEC.yaml", help="architecture name (resnet-20) or spec YAML")
    parser.add_argument("--data", metavar="NAME|PATH",
                        help="cifar10, cifar100, svhn, or an image folder / .tar.gz of <split>/<class>/*")
    parser.add_argument("--config", metavar="TRAIN.yaml", help="YAML file of TrainConfig fields")
    parser.add_argument("--preset", choices=["multiresnet", "wrn", "dmrnet", "warpnet"],
                        help="a paper's training recipe (explicit options still win)")
    parser.add_argument("--epochs", type=int, help="epochs (step milestones scale with it)")
    parser.add_argument("--subset", type=int, metavar="N", help="train on N images only (fidelity knob)")
    parser.add_argument("--val-size", type=int, metavar="N", help="validation images carved from train")
    parser.add_argument("--seed", type=int, help="training seed (init, order, augmentation)")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--batch-size", type=int, help="training batch size")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], help="mixed precision")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--out", metavar="DIR", help="checkpoint every epoch here (resumes), write metrics.json")
    parser.add_argument("--test", action="store_true", help="also evaluate the test split at the end")
    parser.add_argument("--json", action="store_true", help="no progress output: only the final JSON line")


def _load_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ArchsearchError(f"{path}: cannot read {what}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None


def load_arch(text: str) -> Any:
    """An `ArchSpec` from a name, or from a YAML file holding spec fields or `{name: ...}`."""
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        doc = _load_yaml(path, "spec")
        if isinstance(doc, str):
            return as_spec(doc)
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping of spec fields or {{name: ...}}")
        if set(doc) == {"name"}:
            return as_spec(str(doc["name"]))
        try:
            return as_spec(doc)
        except (TypeError, KeyError) as exc:
            raise ConfigError(f"{path}: bad spec: {exc}") from None
    return as_spec(text)


def run(args: argparse.Namespace) -> int:
    # lazy: torch loads only when this command runs (the CLI imports every command module)
    from archsearch.train import TrainingFailure, make_config, train
    from archsearch.train.sources import dataset_key

    spec = load_arch(args.arch)
    base: dict[str, Any] = {}
    if args.config:
        doc = _load_yaml(Path(args.config), "train config")
        if not isinstance(doc, dict):
            raise ConfigError(f"{args.config}: expected a mapping of TrainConfig fields")
        base = doc
    data: str | None = None
    dataset: str | None = None
    if args.data:
        if Path(args.data).expanduser().exists():
            data, dataset = args.data, dataset_key(Path(args.data).name)
        else:
            dataset = args.data
    config = make_config(base, preset=args.preset, dataset=dataset, epochs=args.epochs, subset=args.subset,
                         val_size=args.val_size, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
                         amp=args.amp, threads=args.threads)
    try:
        result = train(spec, config, data=data, checkpoint_dir=args.out, device=args.device,
                       evaluate_test=args.test, progress=not args.json)
    except TrainingFailure as exc:
        print(f"archsearch train: training failed ({exc.reason}): {exc}", file=sys.stderr)
        return 1
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        full = {**result, "spec": spec.to_dict(), "config": config.model_dump(mode="json")}
        (out / "metrics.json").write_text(json.dumps(full, indent=2) + "\n")
    summary = {k: v for k, v in result.items() if k != "history"}
    print(json.dumps(summary))
    return 0
