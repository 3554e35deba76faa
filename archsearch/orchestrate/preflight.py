"""What a run needs from this machine, checked before Ray starts: a writable results folder, reachable
data, and per-trial resources that fit. Every mismatch is reported at once, each with the `--set` (or
the flag) that fixes it, so a researcher fixes them in one go instead of one per 14-second Ray start.

`--dry-run` runs the same checks (creating nothing); `run` refuses to start with the same line.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from archsearch.errors import ArchsearchError, ConfigError
from archsearch.study.config import StudyConfig
from archsearch.train.sources import resolve_source


def runs_dir_problem(config: StudyConfig) -> str | None:
    """Why the study's results folder cannot be written (None: it can), without creating anything."""
    folder = config.run_dir
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fix = "pass --runs-dir DIR or set ARCHSEARCH_RUNS to a writable folder"
    if not probe.is_dir():
        return f"results folder {folder}: {probe} is a file, not a folder ({fix})"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"results folder {folder}: {probe} is not writable ({fix})"
    return None


def data_problem(config: StudyConfig) -> str | None:
    """Why the trials could not find their data (None: the archive/folder exists or the name is known)."""
    try:
        resolve_source(config.data_path if config.data is not None else config.train_config.dataset)
    except ArchsearchError as exc:
        return f"data: {exc}"
    return None


def resource_problems(config: StudyConfig, cpus: float, gpus: float, where: str = "this machine") -> list[str]:
    """Per-trial resources beyond what `where` offers, each with the --set that makes it fit."""
    r = config.resources
    out = []
    if r.cpus > cpus:
        out.append(f"resources.cpus: {r.cpus:g} per trial, but {where} has {cpus:g} CPUs "
                   f"(--set resources.cpus={max(1, int(cpus)):d})")
    if r.gpus > gpus:
        out.append(f"resources.gpus: {r.gpus:g} per trial, but {where} has {gpus:g} GPUs (--set resources.gpus=0)")
    cuda = model_parallel_gpus(config)
    if cuda > gpus:
        out.append(f"train.model_parallel: {cuda} CUDA devices per trial, but {where} has {gpus:g} GPUs "
                   "(--set train.model_parallel=null)")
    return out


def model_parallel_gpus(config: StudyConfig) -> int:
    """Whole GPUs one trial spreads its branches over (`train.model_parallel`; 0 without CUDA entries)."""
    return len({d for d in config.train_config.model_parallel or [] if d.startswith("cuda")})


def local_gpus() -> int:
    """GPUs a local Ray would offer (asked only of studies that want GPUs)."""
    return torch.cuda.device_count()


def problems(config: StudyConfig, *, address: str | None, num_cpus: int | None = None) -> list[str]:
    """Every precondition this machine fails for the study (empty: it may run)."""
    found = [p for p in (runs_dir_problem(config), data_problem(config)) if p]
    if not address:  # a cluster's resources are known only once joined (`check_cluster` then)
        gpus = local_gpus() if config.resources.gpus or model_parallel_gpus(config) else 0
        found += resource_problems(config, num_cpus or os.cpu_count() or 1, gpus)
    return found


def check(config: StudyConfig, *, address: str | None, num_cpus: int | None = None) -> None:
    """Refuse, in one line naming every mismatch and its fix, a study this machine cannot run."""
    found = problems(config, address=address, num_cpus=num_cpus)
    if found:
        raise ConfigError(f"{config.path}: cannot run here: " + "; ".join(found))


def make_run_dir(config: StudyConfig) -> Path:
    """Create runs/<name>/ (an unwritable disk is a one-line error naming the folder, not a traceback)."""
    try:
        config.run_dir.mkdir(parents=True, exist_ok=True)
        (config.run_dir / "trials").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{config.path}: results folder {config.run_dir}: cannot create it "
                          f"({exc.strerror or exc}); pass --runs-dir DIR or set ARCHSEARCH_RUNS to a writable "
                          "folder") from None
    return config.run_dir
