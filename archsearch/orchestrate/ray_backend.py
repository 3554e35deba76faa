"""Ray Tune, in the one module that imports it: the trainable, ASHA's two schedulers, the searcher adapter.

Only `archsearch run` (through `archsearch.orchestrate.run`) imports this module, so `--dry-run`,
`report` and `export` never pay for Ray. The decisions themselves live Ray-free elsewhere: the rung
rules in `archsearch.orchestrate.asha`, the Optuna bookkeeping in `archsearch.orchestrate.searcher`.

- ASHA runs on the `epoch` attribute with no rung at the last epoch: a trial that reached its last
  epoch always finishes, measures its latency and reports once more. After a resume the rungs are
  rebuilt from every stored trial's intermediate values (`seed`), and a continued trial carries its
  checkpoint's history, so ASHA decides exactly as it would have without the crash.
- `asha.rule: promote` swaps in `PromotingASHA` (ASHA as published): trials pause at rungs (Tune keeps
  their checkpoint, the trainer resumes from it exactly), a paused trial holds no slot, and the searcher
  starts a new trial only when no promotion is due. Ray's ConcurrencyLimiter would count paused trials
  as running, so under this rule the searcher enforces `max_concurrent` itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import ray
from ray import cloudpickle, tune
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher

from archsearch.errors import ConfigError
from archsearch.orchestrate.asha import PromotionRungs, StopRungs
from archsearch.orchestrate.preflight import resource_problems
from archsearch.orchestrate.prepare import check_address
from archsearch.orchestrate.quiet import quiet_token_notice
from archsearch.orchestrate.searcher import FINISHED, StudySearcher
from archsearch.study.config import StudyConfig
from archsearch.train.config import make_config
from archsearch.train.loop import train

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reporting from a research tool
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0 the legacy reporter is silent: our view shows progress
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0",
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",  # the reason goes to the trial's fail_reason and our view
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


# ---------------------------------------------------------------------------------- cluster


def trial_resources(resources: Any, model_parallel: list[str] | None = None) -> dict[str, float]:
    """Ray's resource request for one trial: {"cpu": c, "gpu": g} (g may be a fraction).

    A trial whose branches are spread over CUDA devices (`train.model_parallel`) reserves one whole GPU per
    listed CUDA device; Ray then shows it exactly those devices as cuda:0, cuda:1, ...
    """
    out = {"cpu": float(resources.cpus)}
    if resources.gpus:
        out["gpu"] = float(resources.gpus)
    cuda = {d for d in model_parallel or [] if d.startswith("cuda")}
    if cuda:
        out["gpu"] = float(len(cuda))
    return out


def with_trial_resources(trainable: Any, resources: Any, model_parallel: list[str] | None = None) -> Any:
    """`tune.with_resources(trainable, trial_resources(...))`: the one place trials get devices."""
    return tune.with_resources(trainable, trial_resources(resources, model_parallel))


def init_ray(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a local Ray (no dashboard, no usage stats, workers' output kept out of our view) or join one."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    quiet_token_notice()
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


def shutdown_ray() -> None:
    with contextlib.suppress(Exception):
        ray.shutdown()


def check_cluster(config: StudyConfig) -> None:
    """Refuse per-trial resources the Ray cluster can never offer (Tune would wait for them forever)."""
    total = ray.cluster_resources()
    found = resource_problems(config, total.get("CPU", 0), total.get("GPU", 0), where="the Ray cluster")
    if found:
        raise ConfigError(f"{config.path}: cannot run here: " + "; ".join(found))


def cluster_slots(config: StudyConfig) -> int:
    """How many trials fit at once on the Ray cluster (for the ETA and the overhead benchmark)."""
    total = ray.cluster_resources()
    by_cpu = int(total.get("CPU", 1) // config.resources.cpus)
    slots = by_cpu
    if config.resources.gpus:
        slots = min(slots, int(round(total.get("GPU", 0) / config.resources.gpus)))
    if config.resources.max_concurrent:
        slots = min(slots, config.resources.max_concurrent)
    return max(1, slots)


# ---------------------------------------------------------------------------------- the trainable


def trial_main(config: dict[str, Any]) -> None:
    """Ray function trainable: train one (architecture, seed) and report every epoch to Tune.

    Each epoch's metrics go to `tune.report` with the trial's checkpoint directory (written by
    `archsearch.train.loop` before it reports); after training, one more report carries `final` with
    latency (and test error), so the searcher can tell a finished trial from an ASHA-stopped one.
    """
    start = time.perf_counter()
    os.environ.update(config.get("env") or {})
    overrides: dict[str, Any] = {"seed": config["seed"], "threads": config["threads"]}
    if config.get("inject_abort"):
        os.abort()  # test hook: a native crash of the worker (ARCHSEARCH_INJECT_ABORT)
    if config.get("inject_nan"):
        overrides["lr"] = 1e30  # test hook: diverge at once so the trial must end as FAIL
    train_config = make_config(config["train"], **overrides)
    ckpt_dir = Path(config["checkpoint_dir"])
    persist = bool(config.get("ray_checkpoints"))
    restored = tune.get_checkpoint()  # resumed after an ASHA pause, maybe on another node
    if restored is not None and not (ckpt_dir / "checkpoint.pt").exists():
        with restored.as_directory() as folder:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(folder) / "checkpoint.pt", ckpt_dir / "checkpoint.pt")

    def report(epoch: int, metrics: dict[str, Any]) -> None:
        payload = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        payload["epoch"] = epoch
        payload["precision"] = str(metrics.get("precision", ""))
        payload["branch_strategies"] = str(metrics.get("branch_strategies", ""))
        payload["channels_last"] = bool(metrics.get("channels_last"))  # the memory layout and why
        payload["channels_last_reason"] = str(metrics.get("channels_last_reason", ""))
        payload["compiled"] = bool(metrics.get("compiled"))  # torch.compile or eager, and why
        payload["compile_reason"] = str(metrics.get("compile_reason", ""))
        payload["trial_seconds"] = time.perf_counter() - start
        checkpoint = None
        if persist and (ckpt_dir / "checkpoint.pt").exists():
            checkpoint = tune.Checkpoint.from_directory(str(ckpt_dir))
        tune.report(payload, checkpoint=checkpoint)

    result = train(config["spec"], train_config, data=config.get("data"), report=report, checkpoint_dir=ckpt_dir,
                   device=config.get("device"), evaluate_test=bool(config.get("evaluate_test")))
    final = {"epoch": int(result["epochs"]), "val_error": float(result["val_error"]), "final": 1.0,
             "trial_seconds": time.perf_counter() - start}
    for key in ("latency_b1_ms", "latency_b128_ms", "test_error", "test_loss", "best_val_error", "images_per_s"):
        if result.get(key) is not None:
            final[key] = float(result[key])
    tune.report(final)



# ---------------------------------------------------------------------------------- schedulers


class RungASHA(ASHAScheduler):
    """Rule `stop` on epochs: Ray's ASHA bookkeeping, decisions by `StopRungs`, with a record of stops."""

    def __init__(self, max_epochs: int, grace_period: int, reduction_factor: float) -> None:
        super().__init__(time_attr="epoch", metric="val_error", mode="min", max_t=max_epochs,
                         grace_period=grace_period, reduction_factor=reduction_factor, brackets=1,
                         stop_last_trials=False)
        self.rule = StopRungs(max_epochs, grace_period, reduction_factor)
        self.stopped: set[str] = set()

    @property
    def milestones(self) -> list[int]:
        return self.rule.milestones

    def seed(self, key: str, values: dict[int, float]) -> None:
        """Record a stored trial's per-epoch errors in the rungs it reached (as ASHA would have)."""
        self.rule.seed(key, values)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if "epoch" not in result or "val_error" not in result:
            return self.CONTINUE
        if not self.rule.decide(trial.trial_id, result["epoch"], -result["val_error"]):
            return self.CONTINUE
        self._num_stopped += 1
        self.stopped.add(trial.trial_id)
        return self.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if "epoch" not in result or "val_error" not in result:
            return
        self.rule.decide(trial.trial_id, result["epoch"], -result["val_error"])
        del self._trial_info[trial.trial_id]

    def debug_string(self) -> str:
        return f"ASHA (stop) rungs {self.milestones}, {self._num_stopped} stopped"


class PromotingASHA(FIFOScheduler):
    """Rule `promote` on epochs (Li et al. 2020, Algorithm 2): pause at a rung, promote later.

    A trial reaching a rung is recorded there and then asks for its next job like a freed worker
    (`PromotionRungs.next_job`). If that is itself it continues; otherwise it pauses (Tune keeps its
    last checkpoint) and the free slot resumes the chosen paused trial, or, when no rung has one to
    promote, starts a new trial (the searcher asks `promotion_waiting` first). When no new trial may
    start and nothing runs or can be promoted, the trials still paused are stopped: the searcher
    records them PRUNED.
    """

    def __init__(self, max_epochs: int, grace_period: int, reduction_factor: float) -> None:
        super().__init__()
        self._metric, self._mode = "val_error", "min"
        self.ladder = PromotionRungs(max_epochs, grace_period, reduction_factor)
        self.milestones, self.rungs, self.promoted = self.ladder.milestones, self.ladder.rungs, self.ladder.promoted
        self.paused: dict[str, int] = {}  # trial id -> the rung it waits at
        self.stopped: set[str] = set()
        self.may_start_new: Any = lambda: False  # the searcher's answer: can a new trial still start?
        self.may_promote: Any = lambda: True  # False after the study's time budget
        self.on_pause: Any = lambda trial_id, epoch: None
        self.on_promote: Any = lambda trial_id: None

    def seed(self, key: str, values: dict[int, float]) -> None:
        """Record a stored trial at the rungs it reached; having gone past a rung means promoted."""
        self.ladder.seed(key, values)

    def promotion_waiting(self) -> bool:
        """Is a paused trial due for promotion (the searcher then starts nothing new)?"""
        return bool(self.paused) and self.may_promote() and self.ladder.next_job(set(self.paused)) is not None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        tid = trial.trial_id
        epoch = int(result.get("epoch", 0) or 0)
        if result.get("final") or result.get("val_error") is None:
            return self.CONTINUE
        for rung in self.ladder.rungs_due(tid, epoch):  # one, unless a continuation went past a rung unjudged
            self.rungs[rung].setdefault(tid, float(result["val_error"]))
            job = self.ladder.next_job(set(self.paused) | {tid}) if self.may_promote() else None
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
        job = self.ladder.next_job(ready) if ready and self.may_promote() else None
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


# ---------------------------------------------------------------------------------- searcher and callbacks


class RaySearcher(Searcher):
    """Tune's view of `StudySearcher` (not Ray's `OptunaSearch`: it records ASHA-stopped trials COMPLETE)."""

    def __init__(self, searcher: StudySearcher) -> None:
        super().__init__(metric="val_error", mode="min")
        self.study_searcher = searcher  # not `.searcher`: Tune takes a searcher with one for a wrapper

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its config; Optuna holds the state
        return {}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna storage is the searcher's state."""

    def restore(self, checkpoint_path: str) -> None:
        """Never used: a resume re-reads the Optuna storage instead of Ray's pickle."""

    def suggest(self, trial_id: str) -> dict | None:
        config = self.study_searcher.suggest(trial_id)
        return Searcher.FINISHED if config == FINISHED else config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.study_searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.study_searcher.on_trial_complete(trial_id, result, error)


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


def _error_reason(trial: Any) -> str:
    """A one-line reason from Ray's record of a trial error: "non_finite_loss: loss is nan at ...".

    Read from the trial's local error files: at `on_trial_error` time they are not yet synced to
    the storage path that `Trial.get_pickled_error` reads.
    """
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



# ---------------------------------------------------------------------------------- the experiment


def make_scheduler(config: StudyConfig) -> RungASHA | PromotingASHA | None:
    """The study's ASHA under its rule (`stop`: Ray's; `promote`: as published), or None without ASHA."""
    if config.asha is None:
        return None
    rule = PromotingASHA if config.asha.rule == "promote" else RungASHA
    return rule(config.max_epochs, config.asha.grace_period, config.asha.reduction_factor)


def make_tuner(config: StudyConfig, searcher: StudySearcher, scheduler: Any, run_name: str) -> tune.Tuner:
    """A new Ray experiment on the study (never `Tuner.restore`: `--resume` reads Optuna instead)."""
    promoting = isinstance(scheduler, PromotingASHA)
    tuner = tune.Tuner(
        with_trial_resources(trial_main, config.resources, config.train_config.model_parallel),
        tune_config=tune.TuneConfig(search_alg=RaySearcher(searcher), scheduler=scheduler, num_samples=-1,
                                    max_concurrent_trials=None if promoting else config.resources.max_concurrent,
                                    reuse_actors=True,
                                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=run_name, storage_path=str(config.run_dir / "ray"), verbose=0,
            callbacks=[TrialEvents(searcher)],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    # Ray's "Resume experiment with: Tuner.restore(...)" would mislead: `--resume` reads Optuna instead,
    # and Ray's experiment state (whose upload can race a short session's end) is never read back.
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    logging.getLogger("ray.tune.tune").addFilter(lambda r: not str(r.msg).startswith("Trials did not complete"))
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)
    return tuner


def _trial_name(trial: Any) -> str:
    """Ray's trial folder: runs/<study>/ray/<session>/trial-<optuna number>."""
    return f"trial-{trial.config.get('number', trial.trial_id)}"
