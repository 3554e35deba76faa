"""The Optuna side of a study: storage, liveness, resume bookkeeping and summaries (no Ray).

Optuna's storage is the source of truth: Ray's experiment state is never restored. A resume reads the
storage, turns RUNNING trials that no live driver owns into FAIL ("interrupted") and enqueues their
continuations (same params and seed, `resumed_from` = old number, starting from the old checkpoint).

SQLite is opened in WAL mode with a 60 s busy timeout, so a dashboard (or any reader) polling the
file never makes the study's writes fail with "database is locked" (tests/test_tune.py measures it).
Liveness is ours (Optuna's heartbeat runs only inside `study.optimize`): the driver holds an flock
on runs/<study>/driver.lock (released by the kernel even on SIGKILL) and writes pid, host and a
last-seen time into the study system attribute `archsearch:driver` every few seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import sqlite3
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from archsearch.errors import ConfigError

if TYPE_CHECKING:
    from archsearch.study.config import StudyConfig

DRIVER_ATTR = "archsearch:driver"
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
SQLITE_TIMEOUT_S = 60
INTERRUPTED = "interrupted"
COUNTED_STATES = ("COMPLETE", "PRUNED")
T = TypeVar("T")


# ---------------------------------------------------------------------------------- storage


def redact(url: str) -> str:
    """The URL with any password hidden (for messages)."""
    if url.startswith(("sqlite", "journal:")):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a message helper must not fail
        return url.split("@", 1)[-1]


def storage_exists(url: str) -> bool | None:
    """True/False for file storages (sqlite, journal); None when only connecting can tell."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):]).is_file()
    if url.startswith("journal:"):
        return Path(url[len("journal:"):]).is_file()
    return None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _storage_file(url: str, prefix: str, create: bool) -> Path:
    """The local file a sqlite/journal URL names: it must exist unless we may create it, in a folder that does."""
    path = Path(url[len(prefix):])
    if not create and not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"no such folder {path.parent}")
    return path


def _with_installed_postgres_driver(url: str) -> str:
    """`postgresql://` means psycopg (v3) to SQLAlchemy 2.1 but psycopg2 to older ones and to most
    users: pick whichever of the two is installed rather than fail on the one that is not."""
    import importlib.util

    if not url.startswith("postgresql://"):
        return url
    for module, dialect in (("psycopg", "postgresql+psycopg://"), ("psycopg2", "postgresql+psycopg2://")):
        if importlib.util.find_spec(module) is not None:
            return dialect + url[len("postgresql://"):]
    return url


def open_storage(url: str, *, where: str = "storage", create: bool = True) -> Any:
    """An Optuna storage for a URL: sqlite (WAL + busy timeout), other SQLAlchemy URLs, journal:PATH.

    Failures become `ConfigError("WHERE: storage: cannot open URL: reason")`; with `create=False` a
    missing sqlite/journal file is such a failure (and no file is made).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    given, url = url, _with_installed_postgres_driver(url)
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path = _storage_file(url, "journal:", create)
            return JournalStorage(JournalFileBackend(str(path)))
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            path = _storage_file(url, "sqlite:///", create)
            # WAL is a property of the file: set it before Optuna's first connection creates tables.
            with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)) as con:
                con.execute("PRAGMA journal_mode = WAL")
            engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
        else:
            engine_kwargs["pool_pre_ping"] = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        if url.startswith("sqlite:///"):
            from sqlalchemy import event

            event.listen(storage.engine, "connect", _sqlite_pragmas)
        return storage
    except ConfigError:
        raise
    except ImportError as exc:  # the driver itself, or Optuna's "Failed to import DB access module"
        driver = getattr(exc, "name", None) or getattr(exc.__cause__, "name", None) or url.split(":", 1)[0]
        raise ConfigError(f"{where}: storage: cannot open {redact(given)}: the database driver for {driver!r} "
                          "is not installed (PostgreSQL: pip install 'archsearch[postgres]', i.e. "
                          "psycopg2-binary)") from None
    except Exception as exc:  # noqa: BLE001 - any failure to open is bad input for the user
        raise ConfigError(f"{where}: storage: cannot open {redact(given)}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "(Background on this error" in text:
        text = text.split("(Background on this error")[0].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("[SQL")]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def retry(fn: Callable[[], T], *, attempts: int = 6, base_delay: float = 0.5) -> T:
    """Run a storage write, retrying transient lock/connection errors with backoff."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            text = str(exc).lower()
            transient = any(s in text for s in ("locked", "busy", "could not connect", "connection", "timeout"))
            if not transient or i == attempts - 1:
                raise
            time.sleep(base_delay * 2**i)
    raise AssertionError("unreachable")


def study_id(storage: Any, name: str) -> int | None:
    """The study's id in a storage, or None when there is no such study."""
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


# ---------------------------------------------------------------------------------- liveness


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def driver_status(storage: Any, sid: int, lock_path: Path | None = None) -> tuple[bool, dict[str, Any]]:
    """(alive, info) of the driver that last held the study.

    Alive when: our flock on `lock_path` is held by someone; or its record says running and its pid
    lives (same host) or it was seen less than STALE_AFTER_S ago (another host).
    """
    info = dict(storage.get_study_system_attrs(sid).get(DRIVER_ATTR) or {})
    if lock_path is not None and lock_path.exists():
        with open(lock_path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True, info
            fcntl.flock(f, fcntl.LOCK_UN)
    if info.get("state") != "running":
        return False, info
    if info.get("host") == socket.gethostname():
        same_lock = lock_path is not None and info.get("lock") == str(lock_path)
        return (not same_lock) and _pid_alive(int(info.get("pid", -1))), info
    return time.time() - float(info.get("last_seen", 0)) < STALE_AFTER_S, info


def describe_driver(info: dict[str, Any]) -> str:
    seen = info.get("last_seen")
    ago = f", last seen {time.time() - float(seen):.0f} s ago" if seen else ""
    return f"pid {info.get('pid')} on {info.get('host')}{ago}"


class DriverLock:
    """This process owns the study while it runs: an flock plus a heartbeat in the study's attrs."""

    def __init__(self, storage: Any, sid: int, lock_path: Path, interval: float = HEARTBEAT_S) -> None:
        self.storage, self.sid, self.lock_path, self.interval = storage, sid, lock_path, interval
        self._file: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "lock": str(lock_path),
                     "started": time.time(), "state": "running"}

    def acquire(self) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.lock_path, "a+")  # noqa: SIM115 - held open for the driver's lifetime
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise ConfigError(f"{self.lock_path}: another archsearch run holds this study") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(self.info) + "\n")
        self._file.flush()
        self._beat()
        self._thread = threading.Thread(target=self._loop, name="archsearch-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, state: str = "running") -> None:
        self.info.update(last_seen=time.time(), state=state)
        retry(lambda: self.storage.set_study_system_attr(self.sid, DRIVER_ATTR, dict(self.info)))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat only makes the driver look older
                self._beat()

    def release(self, state: str = "finished") -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._beat(state)
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


# ---------------------------------------------------------------------------------- resume


def mark_interrupted(study: Any, numbers: list[int] | None = None) -> list[int]:
    """RUNNING trials (all, or those numbered) → FAIL with fail_reason "interrupted"; their numbers."""
    from optuna.trial import TrialState

    done = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if numbers is not None and t.number not in numbers:
            continue
        retry(lambda t=t: study._storage.set_trial_user_attr(t._trial_id, "fail_reason", INTERRUPTED))
        retry(lambda t=t: study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL))
        done.append(t.number)
    return done


def checkpoint_of(trial: Any) -> str | None:
    """The checkpoint a continuation of `trial` starts from: its own, else the one it started from."""
    for key in ("checkpoint", "resume_checkpoint"):
        path = trial.user_attrs.get(key)
        if path and Path(path).is_file():
            return str(path)
    return None


def enqueue_continuations(study: Any) -> list[tuple[int, str | None]]:
    """Enqueue one continuation per interrupted trial that has none yet; [(old number, checkpoint)]."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get("resumed_from") for t in trials}
    out = []
    for t in trials:
        if t.state != TrialState.FAIL or t.user_attrs.get("fail_reason") != INTERRUPTED or t.number in continued:
            continue
        ckpt = checkpoint_of(t)
        attrs = {"seed": t.user_attrs.get("seed"), "resumed_from": t.number, "resume_checkpoint": ckpt}
        retry(lambda t=t, attrs=attrs: study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False))
        out.append((t.number, ckpt))
    return out


# ---------------------------------------------------------------------------------- records


def intermediate_values(trial: Any) -> dict[int, float]:
    """Per-epoch validation errors: Optuna's intermediate values, or the user attr in multi-objective."""
    values = {int(k): float(v) for k, v in (trial.intermediate_values or {}).items()}
    if not values and isinstance(trial.user_attrs.get("intermediate_values"), dict):
        values = {int(k): float(v) for k, v in trial.user_attrs["intermediate_values"].items()}
    return values


def state_counts(study: Any) -> Counter:
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def best_trial(study: Any) -> Any | None:
    """The full-fidelity COMPLETE trial of lowest validation error (the first objective)."""
    best = None
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE" or not t.values or not t.user_attrs.get("full_fidelity", True):
            continue
        if not math.isfinite(t.values[0]):
            continue
        if best is None or t.values[0] < best.values[0]:
            best = t
    return best


def summary(study: Any) -> dict[str, Any]:
    """Counts by state and the best trial, as plain data."""
    counts = state_counts(study)
    best = best_trial(study)
    trials = study.get_trials(deepcopy=False)
    return {
        "study": study.study_name,
        "counts": dict(counts),
        "interrupted_trials": sum(t.state.name == "FAIL" and t.user_attrs.get("fail_reason") == INTERRUPTED
                                  for t in trials),
        "counted": sum(counts.get(s, 0) for s in COUNTED_STATES),
        "best": None if best is None else {
            "number": best.number, "name": best.user_attrs.get("name"), "seed": best.user_attrs.get("seed"),
            "val_error": best.values[0],
        },
    }


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's experimental/user warnings around calls we make on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------- study lifecycle


@dataclass
class Prepared:
    """A study opened and checked, nothing written yet."""

    config: StudyConfig
    space: Any
    storage: Any
    exists: bool
    fingerprint: str
    grid: list[dict[str, Any]] | None


def load_space_of(config: StudyConfig) -> Any:
    from archsearch.space.space import load_space, space_from_dict

    if isinstance(config.space, dict):
        return space_from_dict(config.space, source=f"{config.path}: space")
    return load_space(config.space_path)


def summary_of_storage(storage: Any, sid: int) -> str:
    from collections import Counter

    counts = Counter(t.state.name for t in storage.get_all_trials(sid, deepcopy=False))
    return ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))


def make_sampler(config: StudyConfig) -> Any:
    import optuna

    with quiet_optuna():
        if config.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=config.sampler_seed, multivariate=True, group=True)
        if config.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=config.sampler_seed)
        return optuna.samplers.RandomSampler(seed=config.sampler_seed)  # random; grid points are enqueued


def open_study(prep: Prepared) -> Any:
    """Create the study (attrs; grid points enqueued) or load it; the first write of a run."""
    import optuna

    config = prep.config
    sampler = make_sampler(config)
    if prep.exists:
        return optuna.load_study(study_name=config.name, storage=prep.storage, sampler=sampler)
    study = optuna.create_study(study_name=config.name, storage=prep.storage, sampler=sampler,
                                directions=["minimize"] * len(config.objective_names))
    for key, value in (("space_fingerprint", prep.fingerprint), ("objectives", config.objective_names),
                       ("train_fingerprint", config.train_fingerprint()),
                       ("archsearch_version", _version()), ("config", config.snapshot()),
                       ("space_file", str(config.space_path) if config.space_path else "inline")):
        study.set_user_attr(key, value)
    if prep.grid is not None:
        points = prep.grid
        if config.n_trials is not None:
            points = points[: -(-config.n_trials // len(config.seed_list))]
        with quiet_optuna():
            for params in points:
                for seed in config.seed_list:
                    study.enqueue_trial(params, user_attrs={"seed": seed}, skip_if_exists=False)
    return study


def _version() -> str:
    try:
        from archsearch import __version__

        return __version__
    except ImportError:  # a stale editable install can expose the package as a namespace
        from importlib.metadata import version

        return version("archsearch")


def seed_rungs(scheduler: Any, study: Any) -> int:
    """Feed every stored trial's per-epoch errors into ASHA's rungs (continued trials seed themselves)."""
    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get("resumed_from") for t in trials if t.state.name == "WAITING"}
    n = 0
    for t in trials:
        if t.state.name in ("WAITING", "RUNNING") or t.number in continued:
            continue
        values = intermediate_values(t)
        if values:
            scheduler.seed(f"optuna-{t.number}", values)
            n += 1
    return n
