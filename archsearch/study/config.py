"""Study files (`studies/*.yaml`): one pydantic schema, `--set` overrides, resolved paths, the plan.

    name: tiny                       # study name in the storage; results go to runs/<name>/ (study.runs)
    storage: null                    # null: sqlite runs/<name>/study.db; or any SQLAlchemy URL
                                     # (postgresql://...), or journal:PATH (Optuna journal file)
    space: ../search_spaces/x.yaml   # relative to this file, else to the working directory;
                                     # or the space itself, inline (a mapping)
    sampler: tpe                     # tpe | random | grid (every grid point, enqueued) | nsga2
    objectives: [val_error]          # nsga2 default [val_error, macs]; the first one is ASHA's
    n_trials: 12                     # (architecture, seed) trials that end COMPLETE or PRUNED
    time_budget: 2h                  # no trial starts after it (running ones finish); or seconds
    seeds: 1                         # seeds per architecture (train.seed, +1, ...) or a list
    search: {method: race, min_seeds: 3, max_seeds: 10, confidence: 0.95}   # or grid, or asha (+ its keys)
    asha: {grace_period: 0.125, reduction_factor: 3}   # or null; grace in epochs or a fraction of them;
                                     # rule: stop (Ray's ASHA, default) | promote (pause at rungs, Li et al.)
    resources: {cpus: 1, gpus: 0.5, max_concurrent: null}           # per trial
    data: null                       # dataset archive/folder; null: ARCHSEARCH_DATA
    train: {epochs: 3, subset: 512, val_size: 256, batch_size: 64}  # archsearch.train.config.TrainConfig
    evaluate_test: false             # also record test_error of finished trials
    report: true                     # write runs/<name>/report/ at the end of the run
    export_top: 1                    # export the N best architectures to runs/<name>/export/
    sampler_seed: 0                  # the sampler's seed (null: random)
    max_failed_trials: null          # stop starting trials after this many failures (default
                                     # max(3, n_trials)); "interrupted" ones do not count
    description: ""                  # free text, stored with the study

`archsearch run STUDY.yaml --set a.b.c=VALUE` overrides any key (VALUE parsed as YAML). Semantics:
- One trial = one (architecture, seed). A newly sampled architecture enqueues its other seeds at once
  (`study.enqueue_trial`), so they run next and ASHA compares like with like. When the sampler
  proposes an architecture that already has trials, it gets the next unused seed (`extra_seed`):
  an (architecture, seed) pair is never trained twice. The grid runs each distinct architecture once
  per seed (a failed grid point is not retried).
- `n_trials` counts COMPLETE + PRUNED trials across all sessions of the study; FAIL ones are replaced.
- `time_budget` applies to each `archsearch run` invocation: no trial starts after it.
- ASHA's `max_epochs` is the training length: it defaults to `train.epochs` (another value is an error);
  there is no rung at the last epoch.

Every error is a `ConfigError` "FILE: KEY: reason" raised before anything is stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from archsearch.errors import ConfigError, bound_reason
from archsearch.study.duration import parse_duration
from archsearch.study.questions import Question
from archsearch.study.runs import RUNS_DIR, resolve_runs_dir
from archsearch.study.sections import AshaConfig, Resources, SearchConfig, Strict, apply_search
from archsearch.train.config import FINGERPRINT_NEUTRAL, RUNTIME_KEYS, TrainConfig

OBJECTIVES = ("val_error", "macs", "params")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "journal")


class StudyConfig(Strict):
    """A study file, validated; paths are resolved by `load_study` (see the module docstring)."""

    name: str
    description: str = ""
    storage: str | None = None
    space: str | dict[str, Any]
    sampler: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    sampler_seed: int | None = 0
    objectives: list[Literal["val_error", "macs", "params"]] | None = None
    n_trials: int | None = Field(None, ge=1)
    time_budget: float | None = None
    seeds: int | list[int] = 1
    asha: AshaConfig | None = Field(default_factory=AshaConfig)
    search: SearchConfig | None = None  # method: grid | asha | race (study.sections.apply_search)
    resources: Resources = Field(default_factory=Resources)
    data: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate_test: bool = False  # answers recomputed once on the test split at the end, beside the validation ones
    questions: list[Question] | None = None  # what the study must answer (archsearch.study.questions); None: derived
    max_failed_trials: int | None = Field(None, ge=0)
    report: bool = True  # write runs/<name>/report/ when the run ends
    export_top: int = Field(1, ge=0)  # export the N best architectures to runs/<name>/export/ (0: none)

    _path: Path = PrivateAttr(default=Path("study.yaml"))
    _cwd: Path = PrivateAttr(default=Path("."))
    _runs: Path | None = PrivateAttr(default=None)
    _runs_source: str = PrivateAttr(default="the working directory")
    _train: Any = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("letters, digits, '_', '.', '-' only (it names the folder runs/<name>/)")
        return v

    @field_validator("time_budget", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and v < 1:
            raise ValueError("at least one seed per architecture")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("a non-empty list of distinct seeds")
        return v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = v.split(":", 1)[0].split("+", 1)[0].lower() if ":" in v else ""
        if ":memory:" in v:
            raise ValueError("an in-memory database keeps nothing: give a file or a server")
        if scheme not in _STORAGE_SCHEMES:
            raise ValueError("expected sqlite:///FILE, postgresql://..., mysql://... or journal:FILE, "
                             f"got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        apply_search(self)
        objectives = self.objective_names
        if objectives[0] != "val_error":
            raise ValueError("objectives: the first objective is val_error (ASHA ranks trials by it)")
        if len(set(objectives)) != len(objectives):
            raise ValueError("objectives: each objective once")
        if self.sampler == "nsga2" and len(objectives) < 2:
            raise ValueError("objectives: nsga2 is multi-objective: give at least two (e.g. [val_error, macs])")
        if self.n_trials is None and self.time_budget is None and self.sampler != "grid":
            raise ValueError("n_trials: give n_trials and/or time_budget (a grid study may omit both)")
        if self.asha is not None and self.asha.max_epochs is not None and self.asha.grace_period > self.asha.max_epochs:
            raise ValueError("asha.grace_period: larger than asha.max_epochs")  # checked again against train.epochs
        return self

    # ------------------------------------------------------------------ derived values
    @property
    def path(self) -> Path:
        """The study file (absolute)."""
        return self._path

    @property
    def objective_names(self) -> list[str]:
        if self.objectives:
            return list(self.objectives)
        return ["val_error", "macs"] if self.sampler == "nsga2" else ["val_error"]

    @property
    def multi_objective(self) -> bool:
        return len(self.objective_names) > 1

    @property
    def train_config(self) -> Any:
        """The `archsearch.train.config.TrainConfig` every trial uses (seed set per trial)."""
        return self._train

    @property
    def max_epochs(self) -> int:
        return int(self._train.epochs)

    @property
    def seed_list(self) -> list[int]:
        if isinstance(self.seeds, list):
            return list(self.seeds)
        return [int(self._train.seed) + i for i in range(self.seeds)]

    @property
    def run_dir(self) -> Path:
        """<runs folder>/<name>/: --runs-dir, else ARCHSEARCH_RUNS, else runs/ in the working directory."""
        return (self._runs or self._cwd / RUNS_DIR) / self.name

    @property
    def runs_source(self) -> str:
        """Where the results folder comes from, for messages: "--runs-dir", "ARCHSEARCH_RUNS" or the CWD."""
        return self._runs_source

    @property
    def storage_source(self) -> str:
        """Where the storage URL comes from, so a `--resume` that finds nothing can say where it looked."""
        if self.storage is not None:
            return f"the storage: key of {self._path}"
        return f"the results folder {self.run_dir.parent}, from {self._runs_source}"

    @property
    def space_path(self) -> Path | None:
        """The search-space file, or None for a space written inline in the study file."""
        if isinstance(self.space, dict):
            return None
        return _resolve_path(self.space, self._path, self._cwd)

    @property
    def data_path(self) -> str | None:
        """The dataset the trials load: the `data` key resolved, else ARCHSEARCH_DATA, else None."""
        if self.data is not None:
            return str(_resolve_path(self.data, self._path, self._cwd))
        return os.environ.get("ARCHSEARCH_DATA") or None

    @property
    def storage_url(self) -> str:
        """The storage as a URL with absolute file paths (sqlite:////abs/..., journal:/abs/...)."""
        if self.storage is None:
            return f"sqlite:///{self.run_dir / 'study.db'}"
        url = self.storage
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
            return "sqlite:///" + str((self._cwd / url[len("sqlite:///"):]).resolve())
        if url.startswith("journal:"):
            rest = url[len("journal:"):]
            rest = rest[2:] if rest.startswith("//") else rest  # journal:///abs and journal://rel
            return "journal:" + str((self._cwd / rest).resolve())
        return url

    def train_fingerprint(self) -> str:
        """Hash of everything that decides how a trial trains (minus its seed and run-time knobs)."""
        data = self._train.model_dump(mode="json")
        for key in ("seed", *RUNTIME_KEYS):
            data.pop(key, None)
        for key, neutral in FINGERPRINT_NEUTRAL.items():
            if data.get(key) == neutral:
                data.pop(key)
        data["data"] = Path(self.data_path).name if self.data_path else None
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def snapshot(self) -> dict[str, Any]:
        """The resolved study as plain JSON (stored in the study's user attributes)."""
        data = self.model_dump(mode="json")
        data["train"] = self._train.model_dump(mode="json")
        data["objectives"] = self.objective_names
        data["seeds"] = self.seed_list
        data["study_file"] = str(self._path)
        return data


def _resolve_path(value: str, study_file: Path, cwd: Path) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    beside = (study_file.parent / p).resolve()
    return beside if beside.exists() else (cwd / p).resolve()


# ---------------------------------------------------------------------------------- loading


def apply_overrides(data: dict[str, Any], overrides: list[str], where: str) -> dict[str, Any]:
    """`a.b.c=value` (value parsed as YAML) into nested dicts; bad syntax → ConfigError."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{where}: --set {item}: expected KEY.PATH=VALUE (value parsed as YAML)")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: {key}: --set value is not YAML: {_first_line(exc)}") from None
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {'.'.join(parts[: i + 1])}: is not a mapping, cannot set {key}")
            node = child
        node[parts[-1]] = value
    return data


def load_study(path: str | os.PathLike, overrides: list[str] | None = None, *,
               n_trials: int | None = None, runs_dir: str | os.PathLike | None = None) -> StudyConfig:
    """Read and validate a study file with `--set` overrides; errors → ConfigError naming file and key."""
    file = Path(path).expanduser()
    where = str(path)
    if not file.is_file():
        raise ConfigError(f"{where}: no such study file")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark else "yaml"
        reason = getattr(exc, "problem", None) or _first_line(exc)
        raise ConfigError(f"{where}: {line}: invalid YAML: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a study file is a mapping of keys (name, space, sampler, ...)")
    data = apply_overrides(data, list(overrides or []), where)
    if n_trials is not None:
        data["n_trials"] = n_trials
    data.setdefault("name", file.stem)
    if not isinstance(data.get("train", {}), dict):
        raise ConfigError(f"{where}: train: expected a mapping of training settings")
    train = dict(data.get("train") or {})
    asha = data.get("asha")
    max_epochs = asha.get("max_epochs") if isinstance(asha, dict) else None
    if "epochs" not in train and type(max_epochs) is int and max_epochs >= 1:  # it alone sets the training length
        train["epochs"] = max_epochs
    try:
        config = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_message(where, exc)) from None
    try:
        train_config = TrainConfig.model_validate(train)
    except ValidationError as exc:
        raise ConfigError(_pydantic_message(where, exc, prefix="train")) from None
    if config.asha is not None:
        config.asha = _resolve_asha(config.asha, train_config.epochs, where)
    config._path = file.resolve()
    config._cwd = Path.cwd().resolve()
    config._runs, config._runs_source = resolve_runs_dir(runs_dir, config._cwd)
    config._train = train_config
    if train_config.val_size < 1:
        raise ConfigError(f"{where}: train.val_size: a study needs a validation split (ASHA and Optuna rank by it)")
    if config.space_path is not None and config.space_path.is_dir():
        raise ConfigError(f"{where}: space: {config.space!r} is a directory ({config.space_path}), not a "
                          "search-space file: name a .yaml file in it")
    if config.space_path is not None and not config.space_path.is_file():
        raise ConfigError(f"{where}: space: no such search-space file {config.space!r} (looked beside the "
                          f"study file and in {config._cwd})")
    if config.data is not None and not Path(config.data_path).exists():
        raise ConfigError(f"{where}: data: no such dataset archive or folder {config.data!r}")
    return config


def _resolve_asha(asha: AshaConfig, epochs: int, where: str) -> AshaConfig:
    """`max_epochs` defaults to `train.epochs` (an explicit other value is an error); a fractional grace
    period becomes epochs, so `--set train.epochs=N` keeps the rungs' shape."""
    if asha.max_epochs is not None and asha.max_epochs != epochs:
        raise ConfigError(f"{where}: asha.max_epochs: {asha.max_epochs} differs from train.epochs {epochs}: drop "
                          f"asha.max_epochs (it defaults to train.epochs) or --set asha.max_epochs={epochs}")
    grace = asha.grace_period
    if grace < 1:
        grace = max(1, math.ceil(grace * epochs - 1e-9))
    if grace > epochs:
        raise ConfigError(f"{where}: asha.grace_period: {int(grace)} is more than the {epochs} epochs a trial "
                          f"trains: --set asha.grace_period=N with N ≤ {epochs}, or a fraction such as 0.125")
    return asha.model_copy(update={"max_epochs": epochs, "grace_period": int(grace)})


def _pydantic_message(where: str, exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "literal[", "int", "list["))]
    key = ".".join(([prefix] if prefix else []) + loc) or prefix or "study"
    msg = err["msg"]
    if bound_reason(err):
        msg = bound_reason(err)
    elif err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if ": " in msg and msg.split(": ", 1)[0].split(".")[0] in StudyConfig.model_fields:  # a check naming its key
        key, msg = msg.split(": ", 1)
    value = err.get("input")
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(value, dict) and value is not None:
        msg += f" (got {value!r})"
    return f"{where}: {key}: {msg}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
