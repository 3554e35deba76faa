"""Who runs a study right now: the driver's lock, its heartbeat and the liveness rule.

Liveness is ours (Optuna's heartbeat runs only inside `study.optimize`): the driver holds an flock
on runs/<study>/driver.lock (released by the kernel even on SIGKILL) and writes pid, host and a
last-seen time into the study system attribute `archsearch:driver` every few seconds. A resume
trusts a RUNNING trial only while that driver lives.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from archsearch.errors import ConfigError
from archsearch.study.storage import retry

DRIVER_ATTR = "archsearch:driver"
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0


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
