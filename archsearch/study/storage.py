"""Where a study is stored: one opener for every backend, one URL redactor, retries, SQLite's pragmas.

Optuna's storage is the source of truth of a study (Ray's experiment state is never restored).
SQLite is opened in WAL mode with a 60 s busy timeout, so a dashboard (or any reader) polling the
file never makes the study's writes fail with "database is locked" (tests/study/test_storage_contract.py
checks a reader beside a writer on every backend). `journal:PATH` is Optuna's journal file;
any other SQLAlchemy URL (postgresql://...) is a server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from sqlalchemy import event
from sqlalchemy.engine import make_url

from archsearch.errors import ConfigError

SQLITE_TIMEOUT_S = 60
T = TypeVar("T")


def redact(url: str) -> str:
    """The URL with any password hidden (for messages)."""
    if url.startswith(("sqlite", "journal:")):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a message helper must not fail
        return url.split("@", 1)[-1]


def storage_file(url: str) -> Path | None:
    """The local file behind a sqlite:/// or journal: URL; None for a server or an in-memory database."""
    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix):
            path = url[len(prefix):].split("?", 1)[0]
            return None if path in ("", ":memory:") else Path(path)
    return None


def storage_exists(url: str) -> bool | None:
    """True/False for file storages (sqlite, journal); None when only connecting can tell."""
    path = storage_file(url)
    return None if path is None else path.is_file()


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
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    given, url = url, _with_installed_postgres_driver(url)
    try:
        if url.startswith("journal:"):
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
            event.listen(storage.engine, "connect", _sqlite_pragmas)
        return storage
    except ConfigError:
        raise
    except ImportError as exc:  # the driver itself, or Optuna's "Failed to import DB access module"
        driver = getattr(exc, "name", None) or getattr(exc.__cause__, "name", None) or url.split(":", 1)[0]
        fix = ("pip install 'archsearch[postgres]', i.e. psycopg2-binary" if url.startswith("postgresql")
               else f"install the Python package that provides {driver!r} for SQLAlchemy")
        raise StorageOpenError(where, given, f"the database driver for {driver!r} is not installed ({fix})") from None
    except Exception as exc:  # noqa: BLE001 - any failure to open is bad input for the user
        raise StorageOpenError(where, given, _first_line(exc)) from None


class StorageOpenError(ConfigError):
    """"WHERE: storage: cannot open URL: REASON"; `reason` alone for a line that already names the storage."""

    def __init__(self, where: str, url: str, reason: str) -> None:
        super().__init__(f"{where}: storage: cannot open {redact(url)}: {reason}")
        self.reason = reason


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


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence Optuna's experimental/user warnings around calls we make on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
