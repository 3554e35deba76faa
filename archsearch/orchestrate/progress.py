"""A live view of a running study: trials by state, epochs done of the upper bound, best so far, ETA.

On a terminal it is a `rich.live.Live` view redrawn twice a second — a progress bar of trial-epochs and a
table of the running trials — with one line per finished trial printed above it; elsewhere (logs, CI,
pipes) it prints one line per started and finished trial with the headline (counts, epochs, best so far,
elapsed, ETA), so a captured log stays readable. Counts, epochs and the best cover the whole study: the
trials of earlier invocations (`records`) are counted in, and the best is `records.best_architecture`'s
(lowest seed mean over counting trials, shown with its number of seeds). The ETA comes from the measured
seconds per epoch × the epochs still expected (ASHA's survival at each rung included), over the slots.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from archsearch.orchestrate.estimate import eta_from_epochs
from archsearch.study.records import TrialRecord, best_architecture


@dataclass
class _Running:
    number: int
    name: str
    seed: int | None
    started: float
    epoch: int = 0
    val_error: float | None = None
    resumed_from: int | None = None
    paused: bool = False


@dataclass
class StudyProgress:
    """Event sink of the searcher (driver thread) that a refresh thread renders."""

    study: str
    n_trials: int | None
    max_epochs: int
    slots: int = 1
    deadline: float | None = None
    console: Console = field(default_factory=lambda: Console(stderr=True))
    counts: dict[str, int] = field(default_factory=lambda: {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0})
    counted_before: int = 0
    records: list[TrialRecord] = field(default_factory=list)  # the study's trials before this invocation
    rungs: list[int] = field(default_factory=list)  # ASHA's rungs (empty: none)
    reduction_factor: float | None = None  # ASHA's rf (None: every trial trains max_epochs)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._durations: list[float] = []
        self._epoch_times: list[float] = []
        self._counting = [r for r in self.records if r.usable]
        self._best = best_architecture(self._counting)
        self.epochs_done = 0
        for r in self.records:
            if r.state in ("COMPLETE", "PRUNED", "FAIL"):
                self.counts[r.state] = self.counts.get(r.state, 0) + 1
            self.epochs_done += r.epochs if r.epochs is not None else len(r.intermediate)
        self._start = time.time()
        self._live: Live | None = None

    # ---------------------------------------------------------------- events
    def trial_started(self, number: int, name: str, seed: int | None, resumed_from: int | None = None) -> None:
        with self._lock:
            self._running[number] = _Running(number, name, seed, time.time(), resumed_from=resumed_from)
        if self._live is None:
            extra = f" (continues #{resumed_from})" if resumed_from is not None else ""
            self.console.print(f"start    #{number} {name} seed {seed}{extra}", highlight=False, markup=False,
                               soft_wrap=True)

    def trial_epoch(self, number: int, epoch: int, val_error: float | None, seconds: float | None = None) -> None:
        """A trial finished an epoch (in `seconds` of training and validation, when the trainer measured it)."""
        with self._lock:
            r = self._running.get(number)
            if r is not None and epoch > r.epoch:
                self.epochs_done += 1
                if seconds is not None and seconds > 0:
                    self._epoch_times.append(float(seconds))
                r.epoch, r.val_error = epoch, val_error

    def trial_paused(self, number: int, epoch: int) -> None:
        """Waiting at an ASHA rung for a promotion (`asha.rule: promote`): holds no slot."""
        self._set_paused(number, True, epoch)

    def trial_resumed(self, number: int) -> None:
        self._set_paused(number, False)

    def _set_paused(self, number: int, paused: bool, epoch: int | None = None) -> None:
        with self._lock:
            r = self._running.get(number)
            if r is not None:
                r.paused = paused
                r.epoch = r.epoch if epoch is None else epoch
        if self._live is None and r is not None:
            what = f"paused   #{number} {r.name} at epoch {r.epoch}" if paused else f"promoted #{number} {r.name}"
            self.console.print(what, highlight=False, markup=False, soft_wrap=True)

    def trial_ended(self, number: int, state: str, value: float | None, reason: str | None = None) -> None:
        with self._lock:
            r = self._running.pop(number, None)
            self.counts[state] = self.counts.get(state, 0) + 1
            if r is not None and state in ("COMPLETE", "PRUNED"):
                self._durations.append(time.time() - r.started)
            if state == "COMPLETE" and value is not None and r is not None:  # COMPLETE: all epochs trained
                self._counting.append(TrialRecord(number, state, float(value), r.name, "?", seed=r.seed,
                                                  epochs=self.max_epochs, full_fidelity=True))
                self._best = best_architecture(self._counting)
        name = r.name if r else "?"
        epochs = f" at epoch {r.epoch}" if r else ""
        val = f" val_error {value:.2f}%" if value is not None else ""
        why = f" ({reason})" if reason else ""
        tail = "" if self._live is not None else f"  [{self.headline()}]"  # the live view shows the headline
        self.console.print(f"{state.lower():8s} #{number} {name}{epochs}{val}{why}{tail}", highlight=False,
                           markup=False, soft_wrap=True)

    # ---------------------------------------------------------------- rendering
    def eta_seconds(self) -> float | None:
        """Measured seconds per epoch × the epochs still expected, over the slots; before the first epoch
        is measured, remaining trials × mean trial time (rough); capped by the time budget."""
        now = time.time()
        if self.deadline is not None and self.n_trials is None:
            return max(0.0, self.deadline - now)
        if self.n_trials is None:
            return None
        done = self.counted_before + self.counts.get("COMPLETE", 0) + self.counts.get("PRUNED", 0)
        left = max(0, self.n_trials - done - len(self._running))
        if self._epoch_times:
            eta = eta_from_epochs(trials_left=left, running_epochs=[r.epoch for r in self._running.values()],
                                  epoch_s=sum(self._epoch_times) / len(self._epoch_times), slots=self.slots,
                                  max_epochs=self.max_epochs, rungs=self.rungs,
                                  reduction_factor=self.reduction_factor)
        elif self._durations:
            mean = sum(self._durations) / len(self._durations)
            running_rest = sum(max(0.0, mean - (now - r.started)) for r in self._running.values())
            eta = (left * mean + running_rest) / max(1, self.slots)
        else:
            return None
        if self.deadline is not None:
            eta = min(eta, max(0.0, self.deadline - now))
        return eta

    @property
    def epochs_upper(self) -> int | None:
        """Trial-epochs if every trial trained every epoch (the study's upper bound)."""
        return None if self.n_trials is None else self.n_trials * self.max_epochs

    def best_text(self) -> str:
        b = self._best
        if b is None:
            return "best -"
        seeds = f"{b.seeds} seed" + ("s" if b.seeds != 1 else "")
        return f"best {b.mean:.2f}% {b.name} ({seeds}, #{b.best.number})"

    def headline(self) -> str:
        c = self.counts
        eta = self.eta_seconds()
        eta_s = "" if eta is None else f" · ETA ~{_fmt_s(eta)}"
        target = f"/{self.n_trials}" if self.n_trials else ""
        done = self.counted_before + c.get("COMPLETE", 0) + c.get("PRUNED", 0)
        paused = sum(r.paused for r in self._running.values())
        waiting = f" · {paused} paused" if paused else ""
        upper = f"/{self.epochs_upper}" if self.epochs_upper else ""
        return (f"{done}{target} done · {len(self._running) - paused} running{waiting} · "
                f"{c.get('COMPLETE', 0)} complete · "
                f"{c.get('PRUNED', 0)} pruned · {c.get('FAIL', 0)} failed · epochs {self.epochs_done}{upper} · "
                f"{self.best_text()} · elapsed {_fmt_s(time.time() - self._start)}{eta_s}")

    def __rich__(self) -> Any:
        with self._lock:
            table = Table(title=f"study {self.study}", title_justify="left", expand=False)
            for col in ("trial", "architecture", "seed", "epoch", "val_error", "time"):
                table.add_column(col)
            now = time.time()
            for r in sorted(self._running.values(), key=lambda r: r.number):
                epoch = f"{r.epoch}/{self.max_epochs}" + (" paused" if r.paused else "")
                table.add_row(f"#{r.number}", r.name, str(r.seed), epoch,
                              "-" if r.val_error is None else f"{r.val_error:.2f}%", _fmt_s(now - r.started))
            parts: list[Any] = [Text(self.headline())]
            if self.epochs_upper:
                parts.append(ProgressBar(total=self.epochs_upper, completed=min(self.epochs_done, self.epochs_upper),
                                         width=60))
            return Group(*parts, table)

    def __enter__(self) -> StudyProgress:
        if self.console.is_terminal:
            self._live = Live(self, console=self.console, refresh_per_second=2, transient=True)
            self._live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles its config; the view stays in the driver
        return {}


def _fmt_s(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
