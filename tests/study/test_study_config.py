"""Study files, overrides, bad input and liveness (no Ray cluster here; storages: study/test_storage_contract.py)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from archsearch.cli import main
from archsearch.errors import ConfigError
from archsearch.orchestrate.asha import asha_rungs, expected_epochs
from archsearch.study.config import apply_overrides, load_study, parse_duration
from archsearch.study.driver import DRIVER_ATTR, DriverLock, driver_status
from archsearch.study.lifecycle import open_study
from archsearch.study.storage import _with_installed_postgres_driver, open_storage

REPO = Path(__file__).resolve().parents[2]
TINY_SPACE = {"candidates": [{"name": "resnet-8"}, {"name": "multiresnet-8-k2"}, {"name": "dmrnet-8"}]}
optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "t",
        "space": TINY_SPACE,
        "sampler": "tpe",
        "n_trials": 4,
        "asha": {"max_epochs": 3, "grace_period": 1, "reduction_factor": 2},
        "train": {"subset": 256, "val_size": 256, "batch_size": 64},
    }
    data.update(changes)
    return data


def write(tmp_path: Path, data: dict[str, Any], name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def digest(path: Path) -> str:
    """What an SQLite study file stores (its SQL dump, WAL included), not its bytes: SQLite may fold the
    WAL into the main file whenever a connection closes, which changes the bytes but no data."""
    if not path.exists():
        return "absent"
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()
    finally:
        con.close()


# ---------------------------------------------------------------------------------- schema


def test_shipped_tiny_study_loads(in_tmp: Path) -> None:
    config = load_study(REPO / "studies" / "tiny.yaml")
    assert config.name == "tiny"
    assert config.objective_names == ["val_error"]
    assert config.max_epochs == 3 and config.train_config.epochs == 3
    assert config.seed_list == [0]
    assert config.run_dir == in_tmp.resolve() / "runs" / "tiny"
    assert config.storage_url == f"sqlite:///{in_tmp.resolve()}/runs/tiny/study.db"
    assert config.space_path is None  # inline space


def test_defaults_and_derived_values(in_tmp: Path) -> None:
    config = load_study(write(in_tmp, study_dict(sampler="nsga2", seeds=3, time_budget="1h30m")))
    assert config.objective_names == ["val_error", "macs"] and config.multi_objective
    assert config.seed_list == [0, 1, 2]
    assert config.time_budget == 5400
    assert config.resources.cpus == 1 and config.resources.gpus == 0
    snap = config.snapshot()
    assert snap["train"]["epochs"] == 3 and snap["seeds"] == [0, 1, 2]
    json.dumps(snap)  # stored as a study user attribute


def test_space_file_relative_to_study_file_then_cwd(in_tmp: Path) -> None:
    (in_tmp / "spaces").mkdir()
    (in_tmp / "studies").mkdir()
    (in_tmp / "spaces" / "s.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    beside = write(in_tmp / "studies", study_dict(space="../spaces/s.yaml"))
    assert load_study(beside).space_path == (in_tmp / "spaces" / "s.yaml").resolve()
    from_cwd = write(in_tmp / "studies", study_dict(space="spaces/s.yaml"), "b.yaml")
    assert load_study(from_cwd).space_path == (in_tmp / "spaces" / "s.yaml").resolve()


def test_storage_urls_are_made_absolute(in_tmp: Path) -> None:
    path = write(in_tmp, study_dict())
    cwd = in_tmp.resolve()
    assert load_study(path, ["storage=sqlite:///x/y.db"]).storage_url == f"sqlite:///{cwd}/x/y.db"
    assert load_study(path, ["storage=sqlite:////abs/y.db"]).storage_url == "sqlite:////abs/y.db"
    assert load_study(path, ["storage=journal:j.log"]).storage_url == f"journal:{cwd}/j.log"
    assert load_study(path, ["storage=journal:///tmp/j.log"]).storage_url == "journal:/tmp/j.log"
    pg = "postgresql+psycopg2://u:secret@db:5432/s"
    assert load_study(path, [f"storage={pg}"]).storage_url == pg


def test_set_overrides_parse_yaml_values(in_tmp: Path) -> None:
    path = write(in_tmp, study_dict())
    config = load_study(path, ["train.epochs=2", "asha.max_epochs=2", "resources.gpus=0.5", "seeds=[3, 5]",
                               "train.lr=1e-2", "description=hello world"], n_trials=9)
    assert config.max_epochs == 2 and config.resources.gpus == 0.5
    assert config.seed_list == [3, 5] and config.train_config.lr == 0.01 and config.n_trials == 9
    assert load_study(path, ["asha=null"]).asha is None
    data: dict[str, Any] = {"a": 1}
    assert apply_overrides(data, ["b.c.d=[1, 2]"], "f") == {"a": 1, "b": {"c": {"d": [1, 2]}}}


@pytest.mark.parametrize(
    ("changes", "overrides", "key", "reason"),
    [
        ({"colour": "red"}, [], "colour", "unknown key"),
        ({}, ["asha.grace=2"], "asha.grace", "unknown key"),
        ({"n_trials": "many"}, [], "n_trials", "integer"),
        ({"n_trials": 0}, [], "n_trials", "must be ≥ 1 (got 0)"),
        ({"sampler": "cmaes"}, [], "sampler", "tpe"),
        ({"space": "missing.yaml"}, [], "space", "no such search-space file"),
        ({"space": "."}, [], "space", "is a directory"),
        ({}, ["train.lrr=0.1"], "train.lrr", "unknown key"),
        ({}, ["train.lr=-1"], "train.lr", "must be > 0"),
        ({}, ["train.epochs=0"], "train.epochs", "must be ≥ 1 (got 0)"),  # its own bound, not the max_epochs clash
        ({}, ["train.epochs=0", "asha.max_epochs=0"], "asha.max_epochs", "must be ≥ 1 (got 0)"),
        ({}, ["train.epochs=5"], "asha.max_epochs", "differs from train.epochs 5: drop asha.max_epochs"),
        ({"asha": {"grace_period": 4}}, ["train.epochs=3"], "asha.grace_period", "more than the 3 epochs"),
        ({}, ["asha.grace_period=1.5"], "asha.grace_period", "whole epochs, or a fraction"),
        ({}, ["train.val_size=0"], "train.val_size", "validation split"),
        ({"sampler": "nsga2", "objectives": ["val_error"]}, [], "objectives", "at least two"),
        ({"objectives": ["macs", "val_error"]}, [], "objectives", "first objective is val_error"),
        ({}, ["resources.gpus=0.3"], "resources.gpus", "divide one GPU evenly"),
        ({}, ["resources.gpus=2"], "resources.gpus", "must be ≤ 1"),
        ({"time_budget": "soon"}, [], "time_budget", "duration"),
        ({"name": "a b"}, [], "name", "letters, digits"),
        ({"storage": "mongodb://x"}, [], "storage", "expected sqlite"),
        ({"n_trials": None}, [], "n_trials", "give n_trials and/or time_budget"),
        ({}, ["asha.grace_period=4"], "asha.grace_period", "larger than asha.max_epochs"),
        ({"data": "nowhere.tar.gz"}, [], "data", "no such dataset"),
        ({}, ["n_trials"], "--set n_trials", "expected KEY.PATH=VALUE"),
        ({}, ["name.x=1"], "name", "not a mapping"),
        ({"search": {"method": "race"}, "asha": None, "seeds": 4, "sampler": "grid", "n_trials": None}, [], "seeds",
         "max_seeds=10 seeds per candidate"),
        ({"search": {"method": "race", "max_seeds": 4}, "sampler": "grid", "n_trials": None}, [], "search.method",
         "drop asha:"),
        ({"search": {"method": "race"}, "asha": None, "n_trials": None}, ["sampler=random"], "search.method",
         "drop sampler: random"),
        ({"search": {"method": "race", "min_seeds": 2}}, [], "search.min_seeds", "must be ≥ 3 (got 2)"),
        ({"search": {"method": "race", "min_seeds": 5, "max_seeds": 4}}, [], "search.max_seeds", "below min_seeds"),
        ({"search": {"method": "grid", "grace_period": 2}}, [], "search.grace_period", "only for method: asha"),
        ({"search": {"method": "bandit"}}, [], "search.method", "'grid', 'asha' or 'race'"),
        ({"search": {"method": "race", "max_seeds": 3}, "asha": None, "sampler": "grid"}, [], "n_trials",
         "drop n_trials"),
    ],
)
def test_bad_study_files_name_file_key_and_reason(in_tmp: Path, changes: dict, overrides: list, key: str,
                                                  reason: str) -> None:
    path = write(in_tmp, study_dict(**changes))
    with pytest.raises(ConfigError) as err:
        load_study(path, overrides)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}:"), message
    assert reason in message, message
    assert "\n" not in message


SHIPPED_STUDIES = sorted((REPO / "studies").glob("*.yaml"))


def test_search_section_sets_the_older_keys(in_tmp: Path) -> None:
    """A race draws max_seeds seeds from the pool; `--set search.method=grid` keeps that pool for the grid."""
    racing = study_dict(search={"method": "race", "max_seeds": 5}, asha=None, sampler="grid", n_trials=None)
    race = load_study(write(in_tmp, racing))
    assert (race.sampler, race.asha, race.seed_list) == ("grid", None, [0, 1, 2, 3, 4])
    grid = load_study(write(in_tmp, racing), ["search.method=grid"])
    assert (grid.sampler, grid.asha, grid.seed_list) == ("grid", None, [0, 1, 2, 3, 4])
    asha = load_study(write(in_tmp, study_dict(search={"method": "asha", "grace_period": 2}, asha=None)))
    assert (asha.asha.grace_period, asha.asha.max_epochs, asha.sampler) == (2, asha.max_epochs, "tpe")


def test_a_race_without_questions_is_refused_before_anything_is_stored(in_tmp: Path, capsys) -> None:
    space = {"candidates": [{"name": "resnet-8"}, {"name": "resnet-14"}]}  # no budget, one family: none derived
    path = write(in_tmp, study_dict(space=space, search={"method": "race"}, asha=None, sampler="grid", n_trials=None))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "questions: a race allocates seeds to open questions, and this study asks none" in err
    assert not (in_tmp / "runs" / "t" / "study.db").exists()


@pytest.mark.parametrize("study_file", SHIPPED_STUDIES, ids=lambda p: p.name)
def test_set_train_epochs_composes_on_every_shipped_study(study_file: Path) -> None:
    """The README's override: ASHA's max_epochs follows train.epochs, a fractional grace period scales."""
    original = load_study(study_file)
    config = load_study(study_file, ["train.epochs=20"])
    assert config.train_config.epochs == 20 and config.max_epochs == 20
    if config.asha is not None:
        assert config.asha.max_epochs == 20 and 1 <= config.asha.grace_period <= 20
        assert original.asha.max_epochs == original.train_config.epochs  # resolved, not None


def test_fractional_grace_period_keeps_the_published_rungs(in_tmp: Path) -> None:
    per_trial = ["search.method=asha", "search.grace_period=0.125", "search.reduction_factor=3"]
    config = load_study(REPO / "studies" / "cifar10_budget1.7M.yaml", per_trial)  # the race's file, run by ASHA
    assert (config.asha.grace_period, config.asha.max_epochs, config.sampler) == (25, 200, "grid")
    assert load_study(REPO / "studies" / "wrn_depth_width.yaml").asha.grace_period == 61  # after the LR drop at 60
    assert load_study(REPO / "studies" / "wrn_depth_width.yaml", ["train.epochs=20"]).asha.grace_period == 7
    same = write(in_tmp, study_dict(), "same.yaml")  # an explicit max_epochs equal to train.epochs is fine
    assert load_study(same, ["train.epochs=3"]).max_epochs == 3


def test_unreadable_study_files(in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match="no such study file"):
        load_study(in_tmp / "nope.yaml")
    bad = in_tmp / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: invalid YAML"):
        load_study(bad)
    (in_tmp / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_study(in_tmp / "list.yaml")


@pytest.mark.parametrize("study_file, stored", [("quickstart.yaml", "16eddb7d8335de46"),
                                                 ("answer_cost_grid.yaml", "186b55326bad0536"),
                                                 ("cifar10_budget1.7M.yaml", "bd5e162fc5f6dc40")])
def test_training_fingerprint_of_a_stored_study_stays_put(monkeypatch: pytest.MonkeyPatch, study_file: str,
                                                          stored: str) -> None:
    """Studies stored by earlier versions must still resume: a new trainer option at its neutral value
    leaves the fingerprint as it was (hashes recorded by the version before `train.precise_bn`)."""
    monkeypatch.delenv("ARCHSEARCH_DATA", raising=False)
    config = load_study(REPO / "studies" / study_file, overrides=["train.precise_bn=0"])  # the neutral value
    assert config.train_fingerprint() == stored
    changed = load_study(REPO / "studies" / study_file, overrides=["train.precise_bn=512"])
    assert changed.train_fingerprint() != stored


def test_durations() -> None:
    assert parse_duration(90) == 90
    assert parse_duration("90m") == 5400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    for bad in ("-5", "1x", "", "h", True, 0):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_asha_rungs_match_rays_bracket() -> None:
    assert asha_rungs(3, 1, 2) == [1, 2]
    assert asha_rungs(100, 1, 3) == [1, 3, 9, 27, 81]
    assert asha_rungs(200, 10, 4) == [10, 40, 160]
    # all epochs up to the first rung, then a 1/rf share of the trials for each later stretch
    assert expected_epochs(3, [1, 2], 2) == pytest.approx(1 + 0.5 + 0.25)
    assert expected_epochs(5, [], 2) == 5


# ---------------------------------------------------------------------------------- dry run


def test_dry_run_prints_the_plan_and_stores_nothing(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(in_tmp, study_dict(n_trials=6, seeds=2))
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    for text in ("resnet-8", "multiresnet-8-k2", "dmrnet-8", "3 candidates", "[new]",
                 "rungs at epochs [1, 2]", "upper bound    6 trials x 3 epochs = 18 trial-epochs", "[0, 1]"):
        assert text in out, text
    assert not (in_tmp / "runs").exists()


def test_dry_run_names_an_unreadable_storage_once(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"postgresql://u@127.0.0.1:{_free_port()}/db"
    path = write(in_tmp, study_dict(storage=url))
    assert main(["run", str(path), "--dry-run"]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("storage")]
    assert line.count(url) == 1 and "storage:" not in line and "[cannot read: " in line, line


def test_dry_run_of_a_grid_study(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(in_tmp, study_dict(sampler="grid", n_trials=None, seeds=2, asha=None))
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "trials         6 (grid: 3 points x 2 seeds)" in out
    assert "ASHA           off" in out


# ---------------------------------------------------------------------------------- bad input, nothing changed


def _prepared_study(path: Path, trials: int = 1) -> optuna.Study:
    """Create the study of a study file as `archsearch run` would, with `trials` finished trials."""
    from archsearch.orchestrate.prepare import prepare

    study = open_study(prepare(load_study(path), resume=False))
    for i in range(trials):
        t = study.ask()
        t.set_user_attr("name", f"fake-{i}")
        study.tell(t, 50.0)
    return study


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_bad_input_is_one_line_exit_2(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(in_tmp, study_dict(colour="red"))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"archsearch run: error: {path}: colour: unknown key"
    assert not (in_tmp / "runs").exists()


def test_unreachable_address_refused_before_anything_is_stored(in_tmp: Path, capsys) -> None:
    path = write(in_tmp, study_dict())
    t0 = time.time()
    assert main(["run", str(path), "--address", f"127.0.0.1:{_free_port()}"]) == 2
    assert time.time() - t0 < 30
    err = capsys.readouterr().err
    assert "--address" in err and "no Ray cluster reachable" in err and len(err.strip().splitlines()) == 1
    assert not (in_tmp / "runs").exists()


def test_space_whose_budget_no_candidate_meets(in_tmp: Path, capsys) -> None:
    space = {"budgets": [{"label": "tiny", "params": 10, "tolerance": "1%"}], "families": {"resnet": {"depth": [8]}}}
    path = write(in_tmp, study_dict(space=space))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "cannot meet budget" in err and len(err.strip().splitlines()) == 1
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("url", ["sqlite:////nonexistent-dir/x/study.db", "postgresql+psycopg2://u:pw@127.0.0.1:{port}/db",
                                 "postgresql://u:pw@127.0.0.1:{port}/db",
                                 "mysql://u@127.0.0.1:{port}/db", "journal:/nonexistent-dir/j.log"])
def test_storage_that_cannot_be_opened(in_tmp: Path, capsys, url: str) -> None:
    path = write(in_tmp, study_dict(storage=url.format(port=_free_port())))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "storage: cannot open" in err and len(err.splitlines()) == 1, err
    assert "pw" not in err  # passwords are not echoed


def test_plain_postgresql_url_uses_the_installed_driver(monkeypatch) -> None:
    """SQLAlchemy 2.1 reads `postgresql://` as psycopg 3; with only psycopg2 installed that URL failed."""
    import importlib.util

    installed = {"psycopg2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in installed else None)
    assert _with_installed_postgres_driver("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    installed = {"psycopg", "psycopg2"}
    assert _with_installed_postgres_driver("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert _with_installed_postgres_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert _with_installed_postgres_driver("sqlite:///x.db") == "sqlite:///x.db"
    installed = set()
    assert _with_installed_postgres_driver("postgresql://u@h/db") == "postgresql://u@h/db"


def test_existing_study_needs_resume_and_same_space(in_tmp: Path, capsys) -> None:
    path = write(in_tmp, study_dict())
    _prepared_study(path, trials=2)
    db = in_tmp / "runs" / "t" / "study.db"
    before = digest(db)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already has 2 trials (2 complete)" in err and "pass --resume" in err

    other_space = write(in_tmp, study_dict(space={"candidates": [{"name": "resnet-14"}]}), "other.yaml")
    assert main(["run", str(other_space), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "space: study 't'" in err and "different search space" in err

    other_objectives = write(in_tmp, study_dict(objectives=["val_error", "params"]), "mo.yaml")
    assert main(["run", str(other_objectives), "--resume"]) == 2
    assert "different objectives" in capsys.readouterr().err

    other_training = write(in_tmp, study_dict(), "lr.yaml")
    assert main(["run", str(other_training), "--resume", "--set", "train.lr=0.5", "--set", "train.subset=128"]) == 2
    err = capsys.readouterr().err.strip()
    assert "was created with other training settings: train.lr: 0.1 → 0.5; train.subset: 256 → 128; --set them " \
           "back to resume" in err and len(err.splitlines()) == 1, err
    assert digest(db) == before


def test_a_live_driver_keeps_others_out(in_tmp: Path, capsys) -> None:
    path = write(in_tmp, study_dict())
    study = _prepared_study(path, trials=0)
    config = load_study(path)
    # another process holds the study (its flock and heartbeat), as a running `archsearch run` does
    code = (
        "import sys, time\n"
        "from archsearch.study.driver import DriverLock\n"
        "from archsearch.study.storage import open_storage\n"
        "from pathlib import Path\n"
        f"s = open_storage({config.storage_url!r})\n"
        f"lock = DriverLock(s, {study._study_id}, Path({str(config.run_dir / 'driver.lock')!r}))\n"
        "lock.acquire(); print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        for args in (["run", str(path)], ["run", str(path), "--resume"]):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert "is being run right now" in err and f"pid {proc.pid}" in err
    finally:
        proc.kill()
        proc.wait()
    alive, info = driver_status(study._storage, study._study_id, config.run_dir / "driver.lock")
    assert not alive and info["pid"] == proc.pid  # SIGKILL left "running" behind; the flock says otherwise


# ---------------------------------------------------------------------------------- liveness


def test_driver_status_rules(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    sid = optuna.create_study(storage=storage, study_name="x")._study_id
    host = socket.gethostname()
    lock = tmp_path / "driver.lock"
    assert driver_status(storage, sid, lock) == (False, {})

    def record(**info: Any) -> None:
        storage.set_study_system_attr(sid, DRIVER_ATTR, {"state": "running", "last_seen": time.time(), **info})

    record(pid=os.getpid(), host=host, lock="elsewhere")
    assert driver_status(storage, sid, lock)[0]  # same host, live pid
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record(pid=dead.pid, host=host, lock="elsewhere")
    assert not driver_status(storage, sid, lock)[0]
    record(pid=1, host="other-host")
    assert driver_status(storage, sid, lock)[0]  # seen just now
    record(pid=1, host="other-host", last_seen=time.time() - 3600)
    assert not driver_status(storage, sid, lock)[0]  # stale heartbeat

    mine = DriverLock(storage, sid, lock, interval=0.2)
    mine.acquire()
    try:
        with pytest.raises(ConfigError, match="another archsearch run holds"):
            DriverLock(storage, sid, lock).acquire()
        seen = storage.get_study_system_attrs(sid)[DRIVER_ATTR]["last_seen"]
        time.sleep(0.6)
        assert storage.get_study_system_attrs(sid)[DRIVER_ATTR]["last_seen"] > seen  # heartbeat
    finally:
        mine.release("finished")
    alive, info = driver_status(storage, sid, lock)
    assert not alive and info["state"] == "finished"


def test_dashboard_needs_an_existing_storage(in_tmp: Path, capsys) -> None:
    path = write(in_tmp, study_dict())
    assert main(["dashboard", str(path), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "does not exist yet" in err and "archsearch run" in err
    assert not (in_tmp / "runs").exists()


def test_grid_runs_each_distinct_architecture_once(in_tmp: Path, capsys) -> None:
    from archsearch.orchestrate.prepare import prepare

    space = {"candidates": [{"name": "resnet-8", "id": "a"}, {"name": "resnet-8", "id": "b"}, {"name": "resnet-14"}]}
    path = write(in_tmp, study_dict(space=space, sampler="grid", n_trials=None))
    assert len(prepare(load_study(path), resume=False).grid) == 2
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "3 candidates (2 distinct architectures" in capsys.readouterr().out


@pytest.mark.parametrize("argv, reason", [(["export", "s.yaml", "--top", "0"], "argument --top: must be >= 1, got 0"),
                                          (["run", "s.yaml", "--n-trials", "x"], "expected a whole number, got 'x'"),
                                          (["space", "sample", "s.yaml", "-n", "-1"], "must be >= 1, got -1"),
                                          (["report", "--n-boot", "0"], "must be >= 1"),
                                          (["nosuch"], "invalid choice")])
def test_usage_errors_are_one_line_with_exit_2(argv: list[str], reason: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and len(err.splitlines()) == 1, err


def test_summary_best_is_the_lowest_seed_mean_of_counting_trials(tmp_path: Path) -> None:
    """`run`'s "best" is the report's: seed means of full-fidelity COMPLETE trials, with the seed count."""
    from archsearch.study.lifecycle import summary

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/s.db"), study_name="x")
    for name, value, attrs in (("a", 5.0, {"full_fidelity": True}), ("a", 9.0, {"full_fidelity": True}),
                               ("b", 6.0, {"full_fidelity": True}), ("b", 7.0, {"epochs": 3, "max_epochs": 3}),
                               ("c", 1.0, {"epochs": 1, "max_epochs": 3}),  # reduced fidelity: never counts
                               ("d", 0.5, {"full_fidelity": False})):
        trial = study.ask()
        for key, v in {"name": name, **attrs}.items():
            trial.set_user_attr(key, v)
        study.tell(trial, value)
    best = summary(study)["best"]
    assert best == {"name": "b", "val_error": 6.5, "std": pytest.approx(0.7071, abs=1e-4), "seeds": 2, "number": 2}
