"""The study's searcher: Optuna ask/tell bookkeeping, with no Ray in it (the Ray `Searcher` adapter delegates here).

It asks, samples with `archsearch.space.space.sample`, reports the validation error per epoch
(`trial.report`, or the user attribute `intermediate_values` in multi-objective studies where Optuna
forbids reporting) and tells COMPLETE (all epochs), PRUNED (stopped by ASHA before the last epoch) or
FAIL (`fail_reason`: the exception, or "interrupted"). `done` is True in the last result of a finished
and of an ASHA-stopped trial alike, so trials are told apart by the epoch reached and by the
scheduler's own record of whom it stopped. Under `asha.rule: promote` a paused trial holds no slot and
no new trial starts while a promotion is due.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FixedTrial, TrialState

from archsearch.space.space import sample, sample_candidate
from archsearch.study.config import StudyConfig
from archsearch.study.fallback import enqueue_fallback, is_native_crash
from archsearch.study.records import COUNTED_STATES, INTERRUPTED
from archsearch.study.storage import quiet_optuna, retry
from archsearch.train.checkpoint import load_checkpoint_metrics

log = logging.getLogger("archsearch.orchestrate.searcher")

FINISHED = "FINISHED"  # `suggest`'s answer when the study will start no more trials (Ray's Searcher.FINISHED)


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
    layout: str = ""
    compile: str = ""


class StudySearcher:
    """Optuna ask/tell for a study run: which trial next, its per-epoch reports, and its final state."""

    def __init__(self, study: Any, space: Any, config: StudyConfig, *, scheduler: Any, progress: Any,
                 static: dict[str, Any], n_trials: int | None, deadline: float | None,
                 inject_nan: set[int], slots: int | None = None, inject_abort: set[int] | None = None,
                 feeder: Any = None) -> None:
        self.study, self.space, self.config = study, space, config
        self.scheduler, self.progress, self.static = scheduler, progress, static
        self.n_trials, self.deadline, self.inject_nan = n_trials, deadline, inject_nan
        self.inject_abort = inject_abort or set()  # test hook: these trial numbers abort their worker
        self.slots = slots
        self.feeder = feeder  # a race's RoundFeeder: the next look is enqueued once the last one has ended
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
            return sample_candidate(FixedTrial(params), self.space).name
        except Exception:  # noqa: BLE001 - params of another space version: not a duplicate
            return None

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
        if not queued and self.feeder is not None and not self.live and not self.errored:
            self.waiting += self.feeder.refill()
            queued = self.waiting > 0
        new = self.config.sampler != "grid" and (
            self.n_trials is None or self.counted + len(self.live) + self.waiting < self.n_trials)
        return queued, new

    def suggest(self, trial_id: str) -> dict | None:
        queued, new = self._may_start()
        if not (queued or new):
            return None if (self.live or self.errored) else FINISHED
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
        train = {**self.static["train"], **(attrs.get("train_overrides") or {})}  # a crash retry's safe kernels
        return {
            **self.static,
            "train": train,
            "number": number,
            "name": spec.name,
            "spec": spec.to_dict(),
            "seed": int(seed),
            "checkpoint_dir": str(ckpt_dir),
            "inject_nan": number in self.inject_nan,
            "inject_abort": number in self.inject_abort,
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
        if result.get("channels_last_reason") and result["channels_last_reason"] != live.layout:
            live.layout = str(result["channels_last_reason"])  # the memory layout the trial trained in, and why
            self._attr(live.trial, "channels_last", bool(result.get("channels_last")))
            self._attr(live.trial, "channels_last_reason", live.layout)
        if result.get("compile_reason") and result["compile_reason"] != live.compile:
            live.compile = str(result["compile_reason"])  # compiled or eager, and why (and the thread count)
            self._attr(live.trial, "compiled", bool(result.get("compiled")))
            self._attr(live.trial, "compile_reason", live.compile)
            if result.get("threads"):
                self._attr(live.trial, "threads", int(result["threads"]))
        if epoch >= 1 and value is not None:
            self._report(live, epoch, float(value))
            seconds = result.get("epoch_seconds")
            self.progress.trial_epoch(live.number, epoch, float(value), None if seconds is None else float(seconds))

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
            if is_native_crash(reason):  # retried once with NCHW + loop (study.fallback), before FAIL is told
                self._guard(lambda: self._retry_safely(live, reason))
            self._guard(lambda: self._tell_live(live, "FAIL", reason))

    def _retry_safely(self, live: _Live, reason: str) -> None:
        if enqueue_fallback(self.study, live.trial, reason) is not None:
            self.waiting += 1
            self.failures -= 1  # replaced by its retry: not a failure toward max_failed_trials
            log.warning("trial %d: native crash (%s); retrying once with NCHW + loop", live.number, reason[:200])

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
        if reason is not None:
            self._attr(trial, "fail_reason", reason[:2000])
        values = None
        if state == "COMPLETE":
            attrs = trial.user_attrs
            values = [value] + [float(attrs[o]) for o in self.config.objective_names[1:]]
        with quiet_optuna():
            retry(lambda: self.study.tell(trial, values, state=TrialState[state], skip_if_finished=True))
