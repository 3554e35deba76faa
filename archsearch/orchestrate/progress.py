"""A live view of a running study: trials by state, the running ones' epochs, best so far, ETA.

On a terminal it is a `rich.live.Live` table redrawn twice a second, with one line per finished trial
printed above it; elsewhere (logs, CI, pipes) it prints one line per started and finished trial with
the headline (counts, best so far, ETA), so a captured log stays readable.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


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

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, _Running] = {}
        self._durations: list[float] = []
        self._best: tuple[float, str, int] | None = None
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

    def trial_epoch(self, number: int, epoch: int, val_error: float | None) -> None:
        with self._lock:
            r = self._running.get(number)
            if r is not None:
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
            if state == "COMPLETE" and value is not None and r is not None:
                if self._best is None or value < self._best[0]:
                    self._best = (value, r.name, number)
        name = r.name if r else "?"
        epochs = f" at epoch {r.epoch}" if r else ""
        val = f" val_error {value:.2f}%" if value is not None else ""
        why = f" ({reason})" if reason else ""
        tail = "" if self._live is not None else f"  [{self.headline()}]"  # the live view shows the headline
        self.console.print(f"{state.lower():8s} #{number} {name}{epochs}{val}{why}{tail}", highlight=False,
                           markup=False, soft_wrap=True)

    # ---------------------------------------------------------------- rendering
    def eta_seconds(self) -> float | None:
        """Remaining trials × mean trial time / slots, plus the running ones' rest (rough)."""
        now = time.time()
        if self.deadline is not None and self.n_trials is None:
            return max(0.0, self.deadline - now)
        if self.n_trials is None or not self._durations:
            return None
        mean = sum(self._durations) / len(self._durations)
        done = self.counted_before + self.counts.get("COMPLETE", 0) + self.counts.get("PRUNED", 0)
        left = max(0, self.n_trials - done - len(self._running))
        running_rest = sum(max(0.0, mean - (now - r.started)) for r in self._running.values())
        eta = (left * mean + running_rest) / max(1, self.slots)
        if self.deadline is not None:
            eta = min(eta, max(0.0, self.deadline - now))
        return eta

    def headline(self) -> str:
        c = self.counts
        best = f"best {self._best[0]:.2f}% {self._best[1]} (#{self._best[2]})" if self._best else "best -"
        eta = self.eta_seconds()
        eta_s = "" if eta is None else f" · ETA ~{_fmt_s(eta)}"
        target = f"/{self.n_trials}" if self.n_trials else ""
        done = self.counted_before + c.get("COMPLETE", 0) + c.get("PRUNED", 0)
        paused = sum(r.paused for r in self._running.values())
        waiting = f" · {paused} paused" if paused else ""
        return (f"{done}{target} done · {len(self._running) - paused} running{waiting} · "
                f"{c.get('COMPLETE', 0)} complete · "
                f"{c.get('PRUNED', 0)} pruned · {c.get('FAIL', 0)} failed · {best} · "
                f"{_fmt_s(time.time() - self._start)}{eta_s}")

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
            return Group(Text(self.headline()), table)

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
