"""Run a study on Ray Tune with ASHA, keeping Optuna's storage the honest source of truth.

The only module that imports Ray (lazily: `archsearch run --dry-run` never pays for it).

- `OptunaSearcher` is our own Ray Tune `Searcher` over Optuna's ask/tell API (not Ray's
  `OptunaSearch`, which records ASHA-stopped trials as COMPLETE with their 1-epoch values, ignores the
  pruner and names every study "optuna"). It asks, samples with `archsearch.space.space.sample`, reports the
  validation error per epoch (`trial.report`, or the user attribute `intermediate_values` in
  multi-objective studies where Optuna forbids reporting) and tells COMPLETE (all epochs), PRUNED
  (stopped by ASHA before the last epoch) or FAIL (`fail_reason`: the exception, or "interrupted").
- `done` is True in the last result of a finished and of an ASHA-stopped trial alike, so the searcher
  tells them apart by the epoch reached and by the scheduler's own record of whom it stopped.
- ASHA runs on the `epoch` attribute with `stop_last_trials=False` and no rung at the last epoch: a
  trial that reached its last epoch always finishes, measures its latency and reports once more.
  After a resume the rung cut-offs are rebuilt by feeding every stored trial's intermediate values
  into the scheduler's rungs (`RungASHA.seed`), and a continued trial carries its checkpoint's
  history, so ASHA decides exactly as it would have without the crash.
- `asha.rule: promote` swaps in `PromotingASHA` (ASHA as published): trials pause at rungs (Tune keeps
  their checkpoint, the trainer resumes from it exactly), a paused trial holds no slot, and the searcher
  starts a new trial only when no promotion is due. Ray's ConcurrencyLimiter would count paused trials
  as running, so under this rule the searcher enforces `max_concurrent` itself.
- Resume never uses `Tuner.restore`: a new Ray experiment starts on the same Optuna study (see
  `archsearch.study.storage`), so already-finished trials are never told twice.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from archsearch.errors import ConfigError
from archsearch.study.config import StudyConfig
from archsearch.study.driver import DriverLock, describe_driver, driver_status
from archsearch.study.lifecycle import (
    Prepared,
    enqueue_continuations,
    load_space_of,
    mark_interrupted,
    open_study,
    seed_rungs,
    summary,
    summary_of_storage,
)
from archsearch.study.records import COUNTED_STATES, INTERRUPTED
from archsearch.study.storage import open_storage, quiet_optuna, redact, retry, study_id

log = logging.getLogger("archsearch.orchestrate.tune")

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reporting from a research tool
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0 the legacy reporter is silent: our view shows progress
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0",
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",  # the reason goes to the trial's fail_reason and our view
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
FAULT_ENV = "ARCHSEARCH_INJECT_NAN"  # test hook: comma-separated trial numbers trained to diverge
PASS_ENV = ("ARCHSEARCH_CACHE", "ARCHSEARCH_DATA")


# ---------------------------------------------------------------------------------- Ray setup


def trial_resources(resources: Any) -> dict[str, float]:
    """Ray's resource request for one trial: {"cpu": c, "gpu": g} (g may be a fraction)."""
    out = {"cpu": float(resources.cpus)}
    if resources.gpus:
        out["gpu"] = float(resources.gpus)
    return out


def with_trial_resources(trainable: Any, resources: Any) -> Any:
    """`tune.with_resources(trainable, trial_resources(resources))`: the one place trials get devices."""
    from ray import tune

    return tune.with_resources(trainable, trial_resources(resources))


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


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a local Ray (no dashboard, no usage stats, workers' output kept out of our view) or join one."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            check_address(address)
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a cluster we cannot join is bad input
        raise ConfigError(f"--address: {address or 'local'}: cannot start or join Ray: {exc}") from None


# ---------------------------------------------------------------------------------- the trainable


def trial_main(config: dict[str, Any]) -> None:
    """Ray function trainable: train one (architecture, seed) and report every epoch to Tune.

    Each epoch's metrics go to `ray.tune.report` with the trial's checkpoint directory (written by
    `archsearch.train.loop` before it reports); after training, one more report carries `final` with
    latency (and test error), so the searcher can tell a finished trial from an ASHA-stopped one.
    """
    import ray.tune

    from archsearch.train import make_config, train

    start = time.perf_counter()
    os.environ.update(config.get("env") or {})
    overrides: dict[str, Any] = {"seed": config["seed"], "threads": config["threads"]}
    if config.get("inject_nan"):
        overrides["lr"] = 1e30  # test hook: diverge at once so the trial must end as FAIL
    train_config = make_config(config["train"], **overrides)
    ckpt_dir = Path(config["checkpoint_dir"])
    persist = bool(config.get("ray_checkpoints"))
    restored = ray.tune.get_checkpoint()  # resumed after an ASHA pause, maybe on another node
    if restored is not None and not (ckpt_dir / "checkpoint.pt").exists():
        with restored.as_directory() as folder:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(folder) / "checkpoint.pt", ckpt_dir / "checkpoint.pt")

    def report(epoch: int, metrics: dict[str, Any]) -> None:
        payload = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        payload["epoch"] = epoch
        payload["precision"] = str(metrics.get("precision", ""))
        payload["branch_strategies"] = str(metrics.get("branch_strategies", ""))
        payload["trial_seconds"] = time.perf_counter() - start
        checkpoint = None
        if persist and (ckpt_dir / "checkpoint.pt").exists():
            checkpoint = ray.tune.Checkpoint.from_directory(str(ckpt_dir))
        ray.tune.report(payload, checkpoint=checkpoint)

    result = train(config["spec"], train_config, data=config.get("data"), report=report, checkpoint_dir=ckpt_dir,
                   device=config.get("device"), evaluate_test=bool(config.get("evaluate_test")))
    final = {"epoch": int(result["epochs"]), "val_error": float(result["val_error"]), "final": 1.0,
             "trial_seconds": time.perf_counter() - start}
    for key in ("latency_b1_ms", "latency_b128_ms", "test_error", "test_loss", "best_val_error", "images_per_s"):
        if result.get(key) is not None:
            final[key] = float(result[key])
    ray.tune.report(final)


# ---------------------------------------------------------------------------------- searcher


@dataclass
class _Live:
    """A trial the searcher handed to Ray and has not told yet."""

    trial: Any  # optuna.Trial
    number: int
    name: str
    seed: int | None
    values: dict[int, float] = field(default_factory=dict)
    epochs: int = 0
    final: dict[str, Any] | None = None
    resumed_from: int | None = None
    train_seconds: float = 0.0  # Σ epoch_seconds trained in this session
    trial_seconds: float = 0.0  # wall time inside the trainable up to its last report (all its runs)
    trial_seconds_before: float = 0.0  # ... in its runs before the last ASHA pause (rule: promote)
    precision: str | None = None
    pauses: list[int] = field(default_factory=list)  # epochs it waited at an ASHA rung (rule: promote)
    strategies: str = ""


class RayClasses(NamedTuple):
    RungASHA: type
    PromotingASHA: type
    OptunaSearcher: type
    TrialEvents: type


@functools.cache
def _ray_classes() -> RayClasses:
    """Scheduler, searcher and callback classes (built on first use so importing us skips Ray)."""
    from ray.tune import Callback
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import Searcher

    class RungASHA(ASHAScheduler):
        """Ray's ASHA on epochs, with rungs that can be seeded from stored trials and a record of stops."""

        def __init__(self, max_epochs: int, grace_period: int, reduction_factor: float) -> None:
            super().__init__(time_attr="epoch", metric="val_error", mode="min", max_t=max_epochs,
                             grace_period=grace_period, reduction_factor=reduction_factor, brackets=1,
                             stop_last_trials=False)
            for bracket in self._brackets:  # no cut at the last epoch: a trial that got there finishes
                bracket._rungs = [(m, rec) for m, rec in bracket._rungs if m < max_epochs]
            self.stopped: set[str] = set()

        @property
        def milestones(self) -> list[float]:
            return sorted(m for m, _ in self._brackets[0]._rungs)

        def seed(self, key: str, values: dict[int, float]) -> None:
            """Record a trial's per-epoch errors in the rungs it reached (as ASHA would have)."""
            for milestone, recorded in self._brackets[0]._rungs:
                reached = [e for e in values if e >= milestone]
                if reached and key not in recorded:
                    recorded[key] = self._metric_op * values[min(reached)]

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            action = super().on_trial_result(tune_controller, trial, result)
            if action == self.STOP:
                self.stopped.add(trial.trial_id)
            return action

    class PromotingASHA(FIFOScheduler):
        """ASHA as published (Li et al. 2020, Algorithm 2) on epochs: pause at a rung, promote later.

        A trial reaching a rung is recorded there and then asks for its next job like a freed worker:
        the best not-yet-promoted trial in the top ⌊n/η⌋ of the highest rung that has one (n = the
        trials recorded there so far). If that is itself it continues; otherwise it pauses (Tune keeps
        its last checkpoint) and the free slot resumes the chosen paused trial, or, when no rung has
        one to promote, starts a new trial (the searcher asks `promotion_waiting` first). When no new
        trial may start and nothing runs or can be promoted, the trials still paused are stopped: the
        searcher records them PRUNED. No rung at the last epoch, as with `RungASHA`.
        """

        def __init__(self, max_epochs: int, grace_period: int, reduction_factor: float) -> None:
            from archsearch.study.config import asha_rungs

            super().__init__()
            self._metric, self._mode = "val_error", "min"
            self.eta = float(reduction_factor)
            self.milestones = [m for m in asha_rungs(max_epochs, grace_period, reduction_factor) if m < max_epochs]
            self.rungs: dict[int, dict[str, float]] = {m: {} for m in self.milestones}
            self.promoted: dict[int, set[str]] = {m: set() for m in self.milestones}
            self.paused: dict[str, int] = {}  # trial id -> the rung it waits at
            self.stopped: set[str] = set()
            self.may_start_new: Any = lambda: False  # the searcher's answer: can a new trial still start?
            self.may_promote: Any = lambda: True  # False after the study's time budget
            self.on_pause: Any = lambda trial_id, epoch: None
            self.on_promote: Any = lambda trial_id: None

        def seed(self, key: str, values: dict[int, float]) -> None:
            """Record a stored trial at the rungs it reached; having gone past a rung means promoted."""
            for m in self.milestones:
                if m in values:
                    self.rungs[m].setdefault(key, float(values[m]))
                if any(e > m for e in values):
                    self.promoted[m].add(key)

        def _rungs_due(self, trial_id: str, epoch: int) -> list[int]:
            """Rungs at or below `epoch` the trial has not been promoted from (it may not train past them)."""
            return [m for m in self.milestones if m <= epoch and trial_id not in self.promoted[m]]

        def _next_job(self, candidates: set[str]) -> tuple[int, str] | None:
            """(rung, trial id) that Algorithm 2's get_job promotes among `candidates`, or None."""
            for m in reversed(self.milestones):
                ranked = sorted(self.rungs[m].items(), key=lambda kv: (kv[1], kv[0]))
                top = ranked[: int(len(ranked) // self.eta)]
                for key, _ in top:
                    if key not in self.promoted[m] and key in candidates:
                        return m, key
            return None

        def promotion_waiting(self) -> bool:
            """Is a paused trial due for promotion (the searcher then starts nothing new)?"""
            return bool(self.paused) and self.may_promote() and self._next_job(set(self.paused)) is not None

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            tid = trial.trial_id
            epoch = int(result.get("epoch", 0) or 0)
            if result.get("final") or result.get("val_error") is None:
                return self.CONTINUE
            for rung in self._rungs_due(tid, epoch):  # one, unless a continuation went past a rung unjudged
                self.rungs[rung].setdefault(tid, float(result["val_error"]))
                job = self._next_job(set(self.paused) | {tid}) if self.may_promote() else None
                if job != (rung, tid):
                    self.paused[tid] = rung
                    self.on_pause(tid, epoch)
                    return self.PAUSE
                self.promoted[rung].add(tid)
            return self.CONTINUE

        def choose_trial_to_run(self, tune_controller: Any) -> Any:
            trials = tune_controller.get_trials()
            by_id = {t.trial_id: t for t in trials}
            for tid in [t for t in self.paused if by_id.get(t) is None or by_id[t].status != Trial.PAUSED]:
                if by_id.get(tid) is None or by_id[tid].is_finished():
                    self.paused.pop(tid)  # ended while paused (e.g. stopped): nothing to promote
            ready = {t for t in self.paused if by_id[t].status == Trial.PAUSED}
            job = self._next_job(ready) if ready and self.may_promote() else None
            if job is not None:
                rung, tid = job
                self.promoted[rung].add(tid)
                del self.paused[tid]
                self.on_promote(tid)
                return by_id[tid]
            for t in trials:
                if t.status == Trial.PENDING:
                    return t
            busy = any(t.status in (Trial.PENDING, Trial.RUNNING) for t in trials)
            if ready and not busy and not self.may_start_new():
                for tid in sorted(ready):  # nothing will ever promote them: the study is over
                    self.stopped.add(tid)
                    del self.paused[tid]
                    tune_controller.stop_trial(by_id[tid])
            return None

        def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
            self.paused.pop(trial.trial_id, None)

        def debug_string(self) -> str:
            return f"ASHA (pause & promote) rungs {self.milestones}, {len(self.paused)} paused"

    class OptunaSearcher(Searcher):
        """Ray Tune searcher over Optuna ask/tell (see the module docstring)."""

        def __init__(self, study: Any, space: Any, config: StudyConfig, *, scheduler: Any, progress: Any,
                     static: dict[str, Any], n_trials: int | None, deadline: float | None,
                     inject_nan: set[int], slots: int | None = None) -> None:
            super().__init__(metric="val_error", mode="min")
            self.study, self.space, self.config = study, space, config
            self.scheduler, self.progress, self.static = scheduler, progress, static
            self.n_trials, self.deadline, self.inject_nan = n_trials, deadline, inject_nan
            self.slots = slots
            self.max_epochs = config.max_epochs
            self.multi = config.multi_objective
            trials = study.get_trials(deepcopy=False)
            self.counted = sum(t.state.name in COUNTED_STATES for t in trials)
            self.waiting = sum(t.state.name == "WAITING" for t in trials)
            self.failures = 0
            self.live: dict[str, _Live] = {}
            self.errored: dict[str, _Live] = {}
            self.interrupted = False
            self.started = 0
            self.trial_seconds: list[tuple[int, float, float]] = []  # (number, train s, trial s)
            self.slot_spans: list[tuple[int, float, float]] = []  # (number, start, end): a slot held
            self._holding: dict[str, tuple[int, float]] = {}
            self.seeds_used: dict[str, set[int]] = {}
            for t in trials:
                name = t.user_attrs.get("name") or self._name_of(t.params)
                if name is not None and t.user_attrs.get("seed") is not None:
                    self.seeds_used.setdefault(name, set()).add(int(t.user_attrs["seed"]))

        def _name_of(self, params: dict[str, Any]) -> str | None:
            """The architecture a queued trial's params select (it has no name until sampled)."""
            if not params:
                return None
            try:
                from optuna.trial import FixedTrial

                from archsearch.space.space import sample_candidate

                return sample_candidate(FixedTrial(params), self.space).name
            except Exception:  # noqa: BLE001 - params of another space version: not a duplicate
                return None

        def __getstate__(self) -> dict[str, Any]:  # Tune pickles its config; Optuna holds the state
            return {}

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: the Optuna storage is the searcher's state."""

        def restore(self, checkpoint_path: str) -> None:
            """Never used: a resume re-reads the Optuna storage instead of Ray's pickle."""

        # ------------------------------------------------------------ asking
        def _may_start(self) -> tuple[bool, bool]:
            """(run a queued trial, sample a new architecture) allowed now?"""
            if self.deadline is not None and time.time() >= self.deadline:
                return False, False
            limit = self.config.max_failed_trials
            if limit is None and self.n_trials is not None:
                limit = max(3, self.n_trials)
            if limit is not None and self.failures >= limit:
                return False, False
            queued = self.waiting > 0
            new = self.config.sampler != "grid" and (
                self.n_trials is None or self.counted + len(self.live) + self.waiting < self.n_trials)
            return queued, new

        def suggest(self, trial_id: str) -> dict | None:
            queued, new = self._may_start()
            if not (queued or new):
                return None if (self.live or self.errored) else Searcher.FINISHED
            if self.slots is not None and self.running() >= self.slots:
                return None  # ask Optuna only when a slot is free: RUNNING means running, TPE sees more
            if getattr(self.scheduler, "promotion_waiting", lambda: False)():
                return None  # ASHA's get_job: a due promotion takes the free slot before a new trial
            try:
                with quiet_optuna():
                    trial = retry(self.study.ask)
            except Exception as exc:  # noqa: BLE001 - keep the study alive; Tune asks again
                log.warning("optuna ask failed: %s", exc)
                return None
            attrs = trial.user_attrs
            if "seed" in attrs:
                self.waiting = max(0, self.waiting - 1)
            try:
                from archsearch.space.space import sample

                spec = sample(trial, self.space)
            except Exception as exc:  # noqa: BLE001 - a space that cannot sample is this trial's failure
                self._tell(trial, "FAIL", reason=f"sampling: {exc}")
                self.failures += 1
                return None
            seeds = self.config.seed_list
            seed = attrs.get("seed")
            used = self.seeds_used.setdefault(spec.name, set())
            if seed is None and used:
                # The sampler proposed an architecture already trained: one more seed of it, never
                # a bit-identical rerun of an (architecture, seed) pair.
                seed = max(max(used) + 1, seeds[0])
                self._attr(trial, "seed", seed)
                self._attr(trial, "extra_seed", True)
            elif seed is None:
                seed = seeds[0]
                self._attr(trial, "seed", seed)
                for other in seeds[1:]:  # the architecture's other seeds run next, so ASHA compares like with like
                    with quiet_optuna():
                        retry(lambda s=other: self.study.enqueue_trial(trial.params, user_attrs={"seed": s},
                                                                       skip_if_exists=False))
                    self.waiting += 1
                    used.add(other)
            used.add(int(seed))
            number = trial.number
            ckpt_dir = self.config.run_dir / "trials" / str(number)
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            live = _Live(trial=trial, number=number, name=spec.name, seed=int(seed),
                         resumed_from=attrs.get("resumed_from"))
            for key, value in (("max_epochs", self.max_epochs), ("checkpoint", str(ckpt_dir / "checkpoint.pt")),
                               ("ray_trial_id", trial_id), ("epochs", 0), ("full_fidelity", False)):
                self._attr(trial, key, value)
            if attrs.get("resume_checkpoint"):
                self._continue_from(live, Path(attrs["resume_checkpoint"]), ckpt_dir, trial_id)
            self.live[trial_id] = live
            self._hold(trial_id, number)
            self.started += 1
            self.progress.trial_started(number, spec.name, live.seed, live.resumed_from)
            return {
                **self.static,
                "number": number,
                "name": spec.name,
                "spec": spec.to_dict(),
                "seed": int(seed),
                "checkpoint_dir": str(ckpt_dir),
                "inject_nan": number in self.inject_nan,
            }

        def _hold(self, trial_id: str, number: int) -> None:
            self._holding[trial_id] = (number, time.time())

        def _release(self, trial_id: str) -> None:
            held = self._holding.pop(trial_id, None)
            if held is not None:
                self.slot_spans.append((held[0], held[1], time.time()))

        def running(self) -> int:
            """Trials holding a slot: live ones minus those paused at an ASHA rung."""
            paused = getattr(self.scheduler, "paused", {})
            return sum(tid not in paused for tid in self.live)

        def may_start_new(self) -> bool:
            return any(self._may_start())

        def trial_paused(self, trial_id: str, epoch: int) -> None:
            live = self.live.get(trial_id)
            if live is not None:
                self._release(trial_id)
                live.pauses.append(epoch)
                self._guard(lambda: self._attr(live.trial, "asha_pauses", list(live.pauses)))
                self.progress.trial_paused(live.number, epoch)

        def trial_promoted(self, trial_id: str) -> None:
            live = self.live.get(trial_id)
            if live is not None:
                self._hold(trial_id, live.number)
                live.trial_seconds_before = live.trial_seconds  # the trainable starts again, its clock at 0
                self.progress.trial_resumed(live.number)

        def _continue_from(self, live: _Live, src: Path, ckpt_dir: Path, trial_id: str) -> None:
            """Start from the interrupted trial's checkpoint: copy it, carry its per-epoch history."""
            dst = ckpt_dir / "checkpoint.pt"
            if not src.is_file():
                self._attr(live.trial, "resume_note", f"no checkpoint at {src}: trained from scratch")
                return
            if src.resolve() != dst.resolve():
                shutil.copy2(src, dst)
            from archsearch.train.checkpoint import load_checkpoint_metrics

            history = load_checkpoint_metrics(dst)
            for h in history:
                if h.get("val_error") is not None:
                    self._report(live, int(h["epoch"]), float(h["val_error"]))
            if self.scheduler is not None:
                self.scheduler.seed(trial_id, live.values)
            self._attr(live.trial, "resumed_from_epoch", len(history))

        # ------------------------------------------------------------ results
        def _attr(self, trial: Any, key: str, value: Any) -> None:
            retry(lambda: trial.set_user_attr(key, value))

        def _report(self, live: _Live, epoch: int, value: float) -> None:
            if epoch in live.values:
                return
            live.values[epoch] = value
            if self.multi:
                self._attr(live.trial, "intermediate_values", {str(k): v for k, v in sorted(live.values.items())})
            else:
                with quiet_optuna():
                    retry(lambda: live.trial.report(value, epoch))
            if epoch > live.epochs:
                live.epochs = epoch
                self._attr(live.trial, "epochs", epoch)

        def _record(self, live: _Live, result: dict) -> None:
            epoch = int(result.get("epoch", 0) or 0)
            value = result.get("val_error")
            if result.get("final"):
                live.final = dict(result)
            elif epoch >= 1 and epoch not in live.values and result.get("epoch_seconds") is not None:
                live.train_seconds += float(result["epoch_seconds"])
            if result.get("trial_seconds") is not None:
                live.trial_seconds = live.trial_seconds_before + float(result["trial_seconds"])
            if result.get("precision") and live.precision is None:
                live.precision = str(result["precision"])  # what `amp: auto` resolved to on that worker
                self._attr(live.trial, "precision", live.precision)
            if result.get("branch_strategies") and result["branch_strategies"] != live.strategies:
                live.strategies = str(result["branch_strategies"])  # how its parallel functions ran
                self._attr(live.trial, "branch_strategies", live.strategies)
            if epoch >= 1 and value is not None:
                self._report(live, epoch, float(value))
                self.progress.trial_epoch(live.number, epoch, float(value))

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            live = self.live.get(trial_id)
            if live is not None:
                self._guard(lambda: self._record(live, result))

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            live = self.live.pop(trial_id, None)
            self._release(trial_id)
            if live is None:
                return
            if result:
                self._guard(lambda: self._record(live, result))
            if error:  # the reason arrives next, through the callback's on_trial_error
                self.errored[trial_id] = live
                return
            if live.final is not None and live.epochs >= self.max_epochs:
                state = "COMPLETE"
            elif self.scheduler is not None and trial_id in self.scheduler.stopped and live.epochs < self.max_epochs:
                state = "PRUNED"
            elif live.epochs >= self.max_epochs:
                state = "COMPLETE"  # stopped after its last epoch, before its latency report
            else:
                state = "FAIL"
                self.interrupted = True
            self._guard(lambda: self._tell_live(live, state, INTERRUPTED if state == "FAIL" else None))

        def trial_errored(self, trial_id: str, reason: str) -> None:
            live = self.errored.pop(trial_id, None) or self.live.pop(trial_id, None)
            self._release(trial_id)
            if live is not None:
                self.failures += 1
                self._guard(lambda: self._tell_live(live, "FAIL", reason))

        def trial_started(self, trial_id: str, logdir: str | None) -> None:
            live = self.live.get(trial_id)
            if live is not None and logdir:
                self._guard(lambda: self._attr(live.trial, "logdir", logdir))

        def finalize(self) -> None:
            """At the end of a session: whatever Ray did not finish is FAIL, resumable when interrupted."""
            for trial_id in list(self.errored):
                self.trial_errored(trial_id, "error: Ray reported no details")
            for live in list(self.live.values()):
                self.interrupted = True
                self._guard(lambda live=live: self._tell_live(live, "FAIL", INTERRUPTED))
            self.live.clear()
            for trial_id in list(self._holding):
                self._release(trial_id)

        def _guard(self, fn: Any) -> None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - a storage hiccup must not kill the whole study
                log.exception("archsearch: could not record a trial event in the Optuna storage")

        def _tell_live(self, live: _Live, state: str, reason: str | None) -> None:
            trial = live.trial
            final = live.final or {}
            if state == "COMPLETE":
                self._attr(trial, "full_fidelity", True)
                for key in ("latency_b1_ms", "latency_b128_ms", "test_error", "test_loss"):
                    if final.get(key) is not None:
                        self._attr(trial, key, float(final[key]))
            if live.trial_seconds or live.train_seconds:
                self._attr(trial, "train_seconds", live.train_seconds)
                self._attr(trial, "trial_seconds", live.trial_seconds)
                self.trial_seconds.append((live.number, live.train_seconds, live.trial_seconds))
            value = live.values.get(self.max_epochs) if state == "COMPLETE" else None
            if state == "COMPLETE" and value is None and final.get("val_error") is not None:
                value = float(final["val_error"])
            self._tell(trial, state, reason=reason, value=value)
            if state in COUNTED_STATES:
                self.counted += 1
            self.progress.trial_ended(live.number, state, value, reason)

        def _tell(self, trial: Any, state: str, *, reason: str | None = None, value: float | None = None) -> None:
            from optuna.trial import TrialState

            if reason is not None:
                self._attr(trial, "fail_reason", reason[:2000])
            values = None
            if state == "COMPLETE":
                attrs = trial.user_attrs
                values = [value] + [float(attrs[o]) for o in self.config.objective_names[1:]]
            with quiet_optuna():
                retry(lambda: self.study.tell(trial, values, state=TrialState[state], skip_if_finished=True))

    class TrialEvents(Callback):
        """Tune callbacks the searcher needs: where a trial logs, and why it errored."""

        def __init__(self, searcher: Any) -> None:
            self.searcher = searcher

        def __getstate__(self) -> dict[str, Any]:
            return {}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.searcher.trial_started(trial.trial_id, getattr(trial, "path", None) or trial.local_path)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.searcher.trial_errored(trial.trial_id, _error_reason(trial))

    return RayClasses(RungASHA, PromotingASHA, OptunaSearcher, TrialEvents)


def _error_reason(trial: Any) -> str:
    """A one-line reason from Ray's record of a trial error: "non_finite_loss: loss is nan at ...".

    Read from the trial's local error files: at `on_trial_error` time they are not yet synced to
    the storage path that `Trial.get_pickled_error` reads.
    """
    from ray import cloudpickle

    exc: Any = None
    path = getattr(trial, "pickled_error_file", None)
    with contextlib.suppress(Exception):
        if path and os.path.isfile(path):
            with open(path, "rb") as f:
                exc = cloudpickle.load(f)
    cause = getattr(exc, "cause", None) if exc is not None else None
    if cause is not None:
        tag = getattr(cause, "reason", None) or type(cause).__name__
        text = str(cause).strip()
        return f"{tag}: {text.splitlines()[0] if text else type(cause).__name__}"
    text = str(exc) if exc is not None else ""
    err_file = getattr(trial, "error_file", None)
    if not text and err_file and os.path.isfile(err_file):
        text = Path(err_file).read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Failure #")]
    return f"worker error: {lines[-1]}" if lines else "worker error: Ray reported no details"


# ---------------------------------------------------------------------------------- a study run


def prepare(config: StudyConfig, *, resume: bool, address: str | None = None) -> Prepared:
    """Every check that can refuse a run, before anything is stored (bad input → ConfigError)."""
    from archsearch.space.space import grid, grid_params, space_fingerprint

    where = str(config.path)
    space = load_space_of(config)
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
    if config.storage is None:
        config.run_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, where=where)
    sid = study_id(storage, config.name)
    if sid is None:
        return Prepared(config, space, storage, False, fingerprint, points)
    attrs = storage.get_study_user_attrs(sid)
    stored = {"space_fingerprint": fingerprint, "objectives": config.objective_names,
              "train_fingerprint": config.train_fingerprint()}
    keys = {"space_fingerprint": "space", "objectives": "objectives", "train_fingerprint": "train"}
    for attr, now in stored.items():
        before = attrs.get(attr)
        if before is not None and before != now:
            what = {"space": "search space", "objectives": "objectives", "train": "training settings"}[keys[attr]]
            raise ConfigError(f"{where}: {keys[attr]}: study {config.name!r} in {redact(url)} was created with "
                              f"different {what} ({before} vs now {now}); choose another study name or storage")
    alive, info = driver_status(storage, sid, config.run_dir / "driver.lock")
    if alive:
        raise ConfigError(f"{where}: name: study {config.name!r} is being run right now ({describe_driver(info)}); "
                          "wait for it, or stop it and pass --resume")
    n = len(storage.get_all_trials(sid, deepcopy=False))
    if n and not resume:
        s = summary_of_storage(storage, sid)
        raise ConfigError(f"{where}: name: study {config.name!r} already has {n} trials ({s}) in {redact(url)}; "
                          "pass --resume to continue it, or choose another name")
    return Prepared(config, space, storage, True, fingerprint, points)


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


def _inject_nan() -> set[int]:
    raw = os.environ.get(FAULT_ENV, "")
    return {int(x) for x in raw.replace(" ", "").split(",") if x}


def _prewarm_data(config: StudyConfig) -> None:
    """Decode the dataset once here, so concurrent trials do not all decode it into the cache at once."""
    from archsearch.train.data import load_dataset

    try:
        load_dataset(config.data_path or config.train_config.dataset, progress=False)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{config.path}: data: cannot load {config.data_path or config.train_config.dataset}: "
                          f"{exc}") from None


def run_study(config: StudyConfig, *, resume: bool = False, address: str | None = None, console: Any = None,
              num_cpus: int | None = None, num_gpus: int | None = None) -> dict[str, Any]:
    """Run (or resume) a study to its n_trials / time budget; returns `storage.summary` plus run facts."""
    from archsearch.orchestrate.progress import StudyProgress

    t_start = time.time()
    prep = prepare(config, resume=resume, address=address)
    from ray import tune

    if not address:
        _prewarm_data(config)
    init_ray(address, num_cpus=num_cpus, num_gpus=num_gpus)
    lock = None
    state = "failed"
    try:
        check_cluster(config)
        study = open_study(prep)
        sid = study._study_id
        lock = DriverLock(prep.storage, sid, config.run_dir / "driver.lock")
        lock.acquire()
        interrupted = mark_interrupted(study)
        continued = enqueue_continuations(study)
        ray_classes = _ray_classes()
        scheduler = None
        if config.asha is not None:
            rule = ray_classes.PromotingASHA if config.asha.rule == "promote" else ray_classes.RungASHA
            scheduler = rule(config.max_epochs, config.asha.grace_period, config.asha.reduction_factor)
            seed_rungs(scheduler, study)
        slots = _slots(config, address)
        deadline = t_start + config.time_budget if config.time_budget else None
        kwargs: dict[str, Any] = {"console": console} if console is not None else {}
        counted_before = sum(t.state.name in COUNTED_STATES for t in study.get_trials(deepcopy=False))
        progress = StudyProgress(config.name, config.n_trials, config.max_epochs, slots=slots, deadline=deadline,
                                 counted_before=counted_before, **kwargs)
        static = trial_static(config)
        n_trials = config.n_trials
        searcher = ray_classes.OptunaSearcher(study, prep.space, config, scheduler=scheduler, progress=progress,
                                              static=static, n_trials=n_trials, deadline=deadline,
                                              inject_nan=_inject_nan(), slots=_searcher_slots(config, address, slots))
        promoting = isinstance(scheduler, ray_classes.PromotingASHA)
        if promoting:
            scheduler.may_start_new = searcher.may_start_new
            scheduler.may_promote = lambda: deadline is None or time.time() < deadline
            scheduler.on_pause, scheduler.on_promote = searcher.trial_paused, searcher.trial_promoted
        run_name = time.strftime("session-%Y%m%d-%H%M%S")
        tuner = tune.Tuner(
            with_trial_resources(trial_main, config.resources),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                        max_concurrent_trials=None if promoting else config.resources.max_concurrent,
                                        reuse_actors=True,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=run_name, storage_path=str(config.run_dir / "ray"), verbose=0,
                callbacks=[ray_classes.TrialEvents(searcher)],
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        # Ray's "Resume experiment with: Tuner.restore(...)" would mislead: `--resume` reads Optuna instead.
        logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
        t_fit = time.time()
        # With a custom searcher Tune keeps one trial pending at a time, so slot 2 would wait for trial
        # 1's actor to start (~4 s); the searcher itself never has more trials live than slots.
        with progress, _env_unless_set("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, slots))):
            try:
                tuner.fit()
            finally:
                searcher.finalize()
        t_end = time.time()
        state = "interrupted" if searcher.interrupted else "finished"
        out = summary(study)
        out.update(
            storage=redact(config.storage_url), run_dir=str(config.run_dir),
            ray_dir=str(config.run_dir / "ray" / run_name),
            session_interrupted=searcher.interrupted, marked_interrupted=interrupted,
            continued=[c[0] for c in continued],
            started=searcher.started, wall_seconds=t_end - t_start, fit_seconds=t_end - t_fit, slots=slots,
            trial_seconds=searcher.trial_seconds, slot_spans=searcher.slot_spans,
        )
        return out
    finally:
        if lock is not None:
            lock.release(state)
        import ray

        with contextlib.suppress(Exception):
            ray.shutdown()


@contextlib.contextmanager
def _env_unless_set(key: str, value: str) -> Iterator[None]:
    """Set an environment variable for the block unless the user set it already."""
    if key in os.environ:
        yield
        return
    os.environ[key] = value
    try:
        yield
    finally:
        os.environ.pop(key, None)


def check_cluster(config: StudyConfig) -> None:
    """Refuse per-trial resources the Ray cluster can never offer (Tune would wait for them forever)."""
    import ray

    total = ray.cluster_resources()
    r = config.resources
    if r.cpus > total.get("CPU", 0):
        raise ConfigError(f"{config.path}: resources.cpus: {r.cpus:g} per trial, but the Ray cluster has "
                          f"{total.get('CPU', 0):g} CPUs")
    if r.gpus > total.get("GPU", 0):
        raise ConfigError(f"{config.path}: resources.gpus: {r.gpus:g} per trial, but the Ray cluster has "
                          f"{total.get('GPU', 0):g} GPUs")


def _trial_name(trial: Any) -> str:
    """Ray's trial folder: runs/<study>/ray/<session>/trial-<optuna number>."""
    return f"trial-{trial.config.get('number', trial.trial_id)}"


def _searcher_slots(config: StudyConfig, address: str | None, slots: int) -> int | None:
    """The searcher's own limit on trials holding a slot at once (None: Ray's resources decide).

    On a local Ray the slots are known. On a cluster (which may grow) only `max_concurrent` limits it
    and, under `asha.rule: promote`, the searcher enforces that itself: Ray's ConcurrencyLimiter would
    count trials paused at a rung as running and never start another.
    """
    if not address:
        return slots
    promoting = config.asha is not None and config.asha.rule == "promote"
    return config.resources.max_concurrent if promoting else None


def _slots(config: StudyConfig, address: str | None) -> int:
    """How many trials fit at once on the Ray cluster (for the ETA and the overhead benchmark)."""
    import ray

    total = ray.cluster_resources()
    by_cpu = int(total.get("CPU", 1) // config.resources.cpus)
    slots = by_cpu
    if config.resources.gpus:
        slots = min(slots, int(round(total.get("GPU", 0) / config.resources.gpus)))
    if config.resources.max_concurrent:
        slots = min(slots, config.resources.max_concurrent)
    return max(1, slots)
