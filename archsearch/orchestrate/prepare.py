"""Before a study runs: every check that can refuse it, and what each of its trials is handed.

Ray-free, so the checks run (and fail fast with a ConfigError) before Ray starts.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from archsearch.errors import ArchsearchError, ConfigError
from archsearch.orchestrate.preflight import make_run_dir
from archsearch.space.space import grid, grid_params, space_fingerprint
from archsearch.study.asked import study_questions
from archsearch.study.changes import train_changes
from archsearch.study.config import StudyConfig
from archsearch.study.driver import describe_driver, driver_status
from archsearch.study.lifecycle import Prepared, load_space_of, summary_of_storage
from archsearch.study.storage import open_storage, redact, storage_exists, study_id
from archsearch.train.data import load_dataset

FAULT_ENV = "ARCHSEARCH_INJECT_NAN"  # test hook: comma-separated trial numbers trained to diverge
ABORT_ENV = "ARCHSEARCH_INJECT_ABORT"  # test hook: comma-separated trial numbers whose worker calls os.abort()
PASS_ENV = ("ARCHSEARCH_CACHE", "ARCHSEARCH_DATA")


def check_address(address: str, where: str = "--address") -> None:
    """Fail fast (ConfigError) on a Ray address nothing listens on, instead of a long hang."""
    if address == "auto":
        if os.environ.get("RAY_ADDRESS") or Path("/tmp/ray/ray_current_cluster").exists():
            return
        raise ConfigError(f"{where}: auto: no running Ray cluster found on this machine (start one with `ray start "
                          "--head`)")
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{where}: {address}: expected HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as exc:
        raise ConfigError(f"{where}: {address}: no Ray cluster reachable there ({exc.strerror or exc})") from None


def prepare(config: StudyConfig, *, resume: bool, address: str | None = None) -> Prepared:
    """Every check that can refuse a run, before anything is stored (bad input → ConfigError)."""
    where = str(config.path)
    space = load_space_of(config)
    questions = study_questions(config, grid(space))  # an ambiguous or empty question: refused before anything runs
    if config.search is not None and config.search.method == "race" and not questions:
        raise ConfigError(f"{where}: questions: a race allocates seeds to open questions, and this study asks none "
                          "(declare questions:, or use search.method: grid)")
    fingerprint = space_fingerprint(space)
    points = None
    if config.sampler == "grid":  # one grid point per distinct architecture: no bit-identical reruns
        names: set[str] = set()
        points = []
        for params, cand in zip(grid_params(space), grid(space), strict=True):
            if cand.name not in names:
                names.add(cand.name)
                points.append(params)
    if address:
        check_address(address)
    url = config.storage_url
    if resume and storage_exists(url) is False:  # never create a storage for --resume: it would start over
        raise ConfigError(nothing_to_resume(config))
    make_run_dir(config)
    storage = open_storage(url, where=where)
    sid = study_id(storage, config.name)
    if sid is None and resume:
        raise ConfigError(nothing_to_resume(config))
    if sid is None:
        return Prepared(config, space, storage, False, fingerprint, points, questions)
    attrs = storage.get_study_user_attrs(sid)
    stored = {"space_fingerprint": fingerprint, "objectives": config.objective_names,
              "train_fingerprint": config.train_fingerprint()}
    keys = {"space_fingerprint": "space", "objectives": "objectives", "train_fingerprint": "train"}
    for attr, now in stored.items():
        before = attrs.get(attr)
        if before is not None and before != now:
            what = {"space": "search space", "objectives": "objectives", "train": "training settings"}[keys[attr]]
            changed = train_changes(attrs.get("config"), config) if attr == "train_fingerprint" else []
            if changed:
                raise ConfigError(f"{where}: train: study {config.name!r} in {redact(url)} was created with other "
                                  f"training settings: {'; '.join(changed)}; --set them back to resume, or choose "
                                  "another study name or storage")
            raise ConfigError(f"{where}: {keys[attr]}: study {config.name!r} in {redact(url)} was created with "
                              f"different {what} ({before} vs now {now}); choose another study name or storage")
    alive, info = driver_status(storage, sid, config.run_dir / "driver.lock")
    if alive:
        raise ConfigError(f"{where}: name: study {config.name!r} is being run right now ({describe_driver(info)}); "
                          "wait for it, or stop it and pass --resume")
    n = len(storage.get_all_trials(sid, deepcopy=False))
    if resume and not n:
        raise ConfigError(nothing_to_resume(config))
    if n and not resume:
        s = summary_of_storage(storage, sid)
        raise ConfigError(f"{where}: name: study {config.name!r} already has {n} trials ({s}) in {redact(url)}; "
                          "pass --resume to continue it, or choose another name")
    return Prepared(config, space, storage, True, fingerprint, points, questions)


def nothing_to_resume(config: StudyConfig) -> str:
    """`--resume` found no stored trials: say where it looked and why there (it never starts over)."""
    return (f"{config.path}: --resume: study {config.name!r} has no stored trials in {redact(config.storage_url)} "
            f"(storage from {config.storage_source}); run from the folder it ran in, name that folder with "
            "--runs-dir DIR or ARCHSEARCH_RUNS, or drop --resume to start it")


def trial_static(config: StudyConfig) -> dict[str, Any]:
    """What every trial of a study gets in its Ray config besides its own architecture and seed."""
    return {
        "train": config.train_config.model_dump(mode="json"),
        "data": config.data_path,
        "device": "cuda" if config.resources.gpus > 0 else "cpu",  # Ray sets CUDA_VISIBLE_DEVICES per trial
        "threads": max(1, int(config.resources.cpus)),
        "evaluate_test": config.evaluate_test,
        "ray_checkpoints": True,
        "env": {k: os.environ[k] for k in PASS_ENV if os.environ.get(k)},
    }


def inject_nan(env: str = FAULT_ENV) -> set[int]:
    """Test hook: the trial numbers `ARCHSEARCH_INJECT_NAN` (or `env`) names."""
    raw = os.environ.get(env, "")
    return {int(x) for x in raw.replace(" ", "").split(",") if x}


def prewarm_data(config: StudyConfig) -> None:
    """Decode the dataset once here, so concurrent trials do not all decode it into the cache at once."""
    env = os.environ.get("ARCHSEARCH_DATA")
    if config.data is None and env and not Path(env).expanduser().exists():
        raise ConfigError(f"{config.path}: ARCHSEARCH_DATA={env}: no such file or folder (the study's data: is "
                          "null, so trials read ARCHSEARCH_DATA: set it to the dataset archive or folder)")
    try:
        load_dataset(config.data_path or config.train_config.dataset, progress=False)
    except ArchsearchError as exc:  # names its own path: the archive, an image in it, ARCHSEARCH_DATA, the cache
        raise ConfigError(f"{config.path}: {'data: ' if config.data is not None else ''}{exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{config.path}: data: cannot load {config.data_path or config.train_config.dataset}: "
                          f"{exc}") from None


def searcher_slots(config: StudyConfig, address: str | None, slots: int) -> int | None:
    """The searcher's own limit on trials holding a slot at once (None: Ray's resources decide).

    On a local Ray the slots are known. On a cluster (which may grow) only `max_concurrent` limits it
    and, under `asha.rule: promote`, the searcher enforces that itself: Ray's ConcurrencyLimiter would
    count trials paused at a rung as running and never start another.
    """
    if not address:
        return slots
    promoting = config.asha is not None and config.asha.rule == "promote"
    return config.resources.max_concurrent if promoting else None
