"""One storage contract, run on every backend a study may use: SQLite, the Optuna journal file and PostgreSQL.

As Optuna tests its own storages: the same behaviour is asked of each backend — create a study,
write trials while another connection reads, reopen it with every trial kept, turn RUNNING trials
into FAIL "interrupted" and enqueue one continuation each, hold and release the driver's lock.
PostgreSQL is a real server started once per test session by `pgserver` (in a temporary folder);
the test is skipped, with the reason, only when pgserver or its driver cannot start one here.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from archsearch.errors import ConfigError
from archsearch.study.driver import DRIVER_ATTR, DriverLock, driver_status
from archsearch.study.lifecycle import enqueue_continuations, mark_interrupted
from archsearch.study.records import INTERRUPTED
from archsearch.study.storage import open_storage, study_id

optuna.logging.set_verbosity(optuna.logging.WARNING)
CANDIDATE = {"candidate": optuna.distributions.CategoricalDistribution(["a", "b"])}
_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One PostgreSQL server for the session (pgserver), or a skip that says why there is none."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary is needed for postgresql:// storages")
    pgserver = pytest.importorskip("pgserver", reason="pgserver is needed to start a PostgreSQL here")
    try:
        server = pgserver.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    except Exception as exc:  # noqa: BLE001 - any failure to start means: no server on this machine
        pytest.skip(f"pgserver could not start PostgreSQL here: {exc}")
    yield server
    server.cleanup()


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty storage of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    if request.param == "journal":
        return f"journal:{tmp_path}/study.log"
    server = request.getfixturevalue("postgres")
    name = f"contract{next(_databases)}"
    server.psql(f"CREATE DATABASE {name};")
    return server.get_uri(name)  # postgresql://postgres:@/NAME?host=<socket folder>


def _write_trials(study: optuna.Study, n: int) -> None:
    for i in range(n):
        trial = study.ask(CANDIDATE)
        trial.set_user_attr("name", f"net-{i}")
        trial.report(50.0 + i, 1)
        study.tell(trial, 40.0 + i)


def test_storage_contract(url: str, tmp_path: Path) -> None:
    # create
    storage = open_storage(url)
    assert study_id(storage, "s") is None
    study = optuna.create_study(study_name="s", storage=storage)

    # a reader polling through its own connection while the writer writes: neither side fails
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        reader = open_storage(url, create=False)
        while not stop.is_set():
            try:
                sid = study_id(reader, "s")
                seen.append(len(reader.get_all_trials(sid, deepcopy=False)))
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)
                return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        _write_trials(study, 12)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert errors == [] and seen and seen == sorted(seen) and seen[-1] <= 12

    # a trial left RUNNING by a driver that died
    ckpt = tmp_path / "trials" / "0" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    running = study.ask(CANDIDATE)
    running.set_user_attr("seed", 3)
    running.set_user_attr("checkpoint", str(ckpt))
    running.report(80.0, 1)

    # reopen: a new storage object sees every trial as it was left
    again = optuna.load_study(study_name="s", storage=open_storage(url, create=False))
    assert [t.state.name for t in again.trials] == ["COMPLETE"] * 12 + ["RUNNING"]
    assert [t.value for t in again.trials[:12]] == [40.0 + i for i in range(12)]
    assert again.trials[3].user_attrs == {"name": "net-3"} and again.trials[3].intermediate_values == {1: 53.0}

    # RUNNING -> FAIL "interrupted", then exactly one continuation from its checkpoint
    assert mark_interrupted(again) == [running.number]
    t = again.trials[running.number]
    assert t.state.name == "FAIL" and t.user_attrs["fail_reason"] == INTERRUPTED
    assert t.intermediate_values == {1: 80.0}
    assert enqueue_continuations(again) == [(running.number, str(ckpt))]
    assert enqueue_continuations(again) == []  # one continuation per interrupted trial, ever
    waiting = [t for t in again.trials if t.state.name == "WAITING"]
    assert len(waiting) == 1
    assert waiting[0].user_attrs == {"seed": 3, "resumed_from": running.number, "resume_checkpoint": str(ckpt)}
    nxt = again.ask()  # the continuation re-samples the same architecture
    assert nxt.suggest_categorical("candidate", ["a", "b"]) == running.params["candidate"]

    # the driver's lock and heartbeat live in the study's system attributes
    sid = again._study_id
    lock = DriverLock(again._storage, sid, tmp_path / "driver.lock", interval=0.2)
    lock.acquire()
    try:
        assert driver_status(again._storage, sid, tmp_path / "driver.lock")[0]
    finally:
        lock.release("finished")
    assert open_storage(url, create=False).get_study_system_attrs(sid)[DRIVER_ATTR]["state"] == "finished"


# ---------------------------------------------------------------------------------- what only files have


def test_sqlite_storage_is_wal_with_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="x")
    with sqlite3.connect(tmp_path / "s.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with storage.engine.connect() as con:
        assert con.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/missing.db", "journal:{tmp}/missing.log"])
def test_a_missing_file_is_not_created_when_reading(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        open_storage(url.format(tmp=tmp_path), create=False)
    assert list(tmp_path.iterdir()) == []


def test_missing_driver_names_the_driver_it_needs() -> None:
    """A URL whose SQLAlchemy driver is not installed is one line naming it, with the fix for that database."""
    from archsearch.study.storage import StorageOpenError

    with pytest.raises(StorageOpenError) as err:
        open_storage("mysql://u:secret@127.0.0.1:1/db", where="study.yaml")
    text = str(err.value)
    assert "'MySQLdb' is not installed" in text and "psycopg2" not in text and "secret" not in text
    assert "\n" not in text
