"""SIGTERM and SIGHUP end a run the way Ctrl-C does: what Slurm, Kubernetes and systemd send is a polite stop.

Ray Tune stops an experiment cleanly on SIGINT (its handler, installed by `Tuner.fit`): running trials
are stopped, the searcher records them FAIL "interrupted" with their checkpoints kept, and the run
prints its summary and the resume hint. Ray's own SIGTERM handler (installed by `ray.init`) instead
exits at once, and the driver's C++ core then aborts (exit 134, a native stack dump). While a study
runs, SIGTERM and SIGHUP are turned into that same SIGINT; a second signal of any kind ends at once.
The exit code is 128 + the first signal's number (SIGINT 130, SIGHUP 129, SIGTERM 143).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

FORWARDED = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A second stop signal: end at once (the CLI exits 128 + `signum`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Which stop signal arrived first (None: none yet), so the exit code can name it."""

    def __init__(self) -> None:
        self.first: int | None = None

    def exit_code(self) -> int:
        """128 + the signal that stopped the run (Ctrl-C's 130 when only Tune saw a SIGINT)."""
        return 128 + (self.first or signal.SIGINT)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.first is not None:
            raise Stopped(self.first)  # the second signal: no clean stop, end now
        self.first = signum
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            raise KeyboardInterrupt(signal.Signals(signum).name)  # started with `&`/nohup: SIGINT is ignored
        signal.raise_signal(signal.SIGINT)  # Tune's handler: stop trials, record them, return from fit()


@contextlib.contextmanager
def stop_like_ctrl_c() -> Iterator[StopSignals]:
    """Within the block, SIGTERM and SIGHUP act as Ctrl-C; the previous handlers come back after it."""
    stops = StopSignals()
    previous = {sig: signal.getsignal(sig) for sig in FORWARDED}
    for sig in FORWARDED:
        signal.signal(sig, stops._handler)
    try:
        yield stops
    finally:
        for sig, handler in previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
