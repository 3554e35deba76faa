"""`archsearch run` meets its environment: the results folder, a resume that never starts over, faults as one line.

All in-process and Ray-free (the checks run before Ray starts); the Ray-backed SIGTERM and crash tests
are in test_run_signals.py.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import optuna
import pytest
import yaml
from cli_errors import one_error

from archsearch.cli import main
from archsearch.orchestrate.prepare import prepare
from archsearch.orchestrate.signals import Stopped, stop_like_ctrl_c
from archsearch.study.config import load_study

STUDY = {"name": "env", "space": {"candidates": [{"name": "resnet-8"}]}, "n_trials": 1,
         "resources": {"cpus": 1, "gpus": 0}, "train": {"epochs": 1, "subset": 64, "val_size": 64}}


@pytest.fixture
def study_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("ARCHSEARCH_RUNS", raising=False)
    path = work / "env.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    return path


def seed_trials(db: Path, name: str = "env") -> list[int]:
    """A study with one finished trial, as a run would have left it; returns the stored trial numbers."""
    db.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{db}")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=50.0))
    return [t.number for t in study.get_trials()]


def test_resume_from_another_directory_is_one_line_and_creates_nothing(study_file: Path, tmp_path: Path,
                                                                        capsys, monkeypatch) -> None:
    seed_trials(study_file.parent / "runs" / "env" / "study.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    line = one_error(capsys, ["run", str(study_file), "--resume"])
    assert f"--resume: study 'env' has no stored trials in sqlite:///{elsewhere}/runs/env/study.db" in line
    assert f"from the working directory {elsewhere}" in line and "--runs-dir" in line
    assert list(elsewhere.iterdir()) == []  # no new study, no folder: it did not start over


def test_resume_finds_the_study_with_runs_dir_or_the_environment(study_file: Path, tmp_path: Path,
                                                                  monkeypatch) -> None:
    runs = study_file.parent / "runs"
    before = seed_trials(runs / "env" / "study.db")
    monkeypatch.chdir(tmp_path)
    by_flag = load_study(study_file, runs_dir=runs)
    assert by_flag.run_dir == runs / "env" and by_flag.runs_source == "--runs-dir"
    assert prepare(by_flag, resume=True).exists
    monkeypatch.setenv("ARCHSEARCH_RUNS", str(runs))
    by_env = load_study(study_file)
    assert by_env.storage_url == f"sqlite:///{runs}/env/study.db" and by_env.runs_source == "ARCHSEARCH_RUNS"
    assert prepare(by_env, resume=True).exists
    assert load_study(study_file, runs_dir=tmp_path / "x").run_dir == tmp_path / "x" / "env"  # the flag wins
    stored = optuna.load_study(study_name="env", storage=by_env.storage_url).get_trials()
    assert [t.number for t in stored] == before and stored[0].value == 50.0


def test_resume_of_a_study_that_never_ran_is_an_error(study_file: Path, capsys) -> None:
    line = one_error(capsys, ["run", str(study_file), "--resume"])
    assert "--resume: study 'env' has no stored trials" in line
    assert not (study_file.parent / "runs").exists()
    optuna.create_study(study_name="env", storage=f"sqlite:///{study_file.parent}/db.sqlite")  # created, 0 trials
    line = one_error(capsys, ["run", str(study_file), "--resume", "--set", f"storage=sqlite:///{study_file.parent}/db.sqlite"])
    assert "has no stored trials" in line and f"the storage: key of {study_file}" in line


def test_run_without_resume_on_a_stored_study_says_how_to_go_on(study_file: Path, capsys) -> None:
    seed_trials(study_file.parent / "runs" / "env" / "study.db")
    line = one_error(capsys, ["run", str(study_file)])
    assert "already has 1 trials" in line and "pass --resume to continue it, or choose another name" in line


def test_a_file_where_the_results_folder_goes_is_one_line(study_file: Path, capsys) -> None:
    blocker = study_file.parent / "runs"
    blocker.write_text("not a folder")
    line = one_error(capsys, ["run", str(study_file)])
    assert f"results folder {blocker}/env: {blocker} is a file, not a folder" in line
    assert "--runs-dir DIR or set ARCHSEARCH_RUNS" in line
    assert blocker.read_text() == "not a folder"
    assert "is a file" in one_error(capsys, ["run", str(study_file), "--dry-run"])


def test_dry_run_reports_every_mismatch_at_once_with_its_fix(study_file: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ARCHSEARCH_DATA", str(study_file.parent / "missing.tar.gz"))
    monkeypatch.setattr("archsearch.orchestrate.preflight.local_gpus", lambda: 0)
    cpus = os.cpu_count() or 1
    argv = ["run", str(study_file), "--dry-run", "--set", f"resources.cpus={cpus + 2}", "--set", "resources.gpus=1"]
    line = one_error(capsys, argv)
    assert f"ARCHSEARCH_DATA={study_file.parent / 'missing.tar.gz'}: no such file or folder" in line
    fix = f"(--set resources.cpus={cpus})"
    assert f"resources.cpus: {cpus + 2} per trial, but this machine has {cpus} CPUs {fix}" in line
    assert "resources.gpus: 1 per trial, but this machine has 0 GPUs (--set resources.gpus=0)" in line
    assert one_error(capsys, argv[:2] + argv[3:]) == line  # `run` refuses with the same line, before Ray
    assert not (study_file.parent / "runs").exists()


def test_dry_run_prints_the_resolved_folder_and_storage(study_file: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ARCHSEARCH_RUNS", str(tmp_path / "results"))
    assert main(["run", str(study_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"storage        sqlite:///{tmp_path}/results/env/study.db  [new]" in out
    assert f"results        {tmp_path}/results/env/  (from ARCHSEARCH_RUNS)" in out


def test_sigterm_and_sighup_act_as_ctrl_c_and_a_second_signal_ends_at_once() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with stop_like_ctrl_c() as stops:
            with pytest.raises(KeyboardInterrupt) as first:  # Python's SIGINT handler, as outside Tune's fit()
                os.kill(os.getpid(), sig)
            assert not isinstance(first.value, Stopped) and stops.first == sig
            assert stops.exit_code() == 128 + sig
            with pytest.raises(Stopped) as second:
                os.kill(os.getpid(), signal.SIGTERM)
            assert second.value.signum == sig
        assert signal.getsignal(sig) is not stops._handler  # restored after the run


def test_a_stop_signal_stops_a_run_started_in_the_background() -> None:
    """`archsearch run ... &` (or nohup) starts with SIGINT ignored: SIGTERM must still act as Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_like_ctrl_c() as stops, pytest.raises(KeyboardInterrupt) as first:
            os.kill(os.getpid(), signal.SIGTERM)
        assert not isinstance(first.value, Stopped) and stops.exit_code() == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ray_token_notice_is_silenced(caplog) -> None:
    from archsearch.orchestrate.quiet import quiet_token_notice

    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    quiet_token_notice()
    with caplog.at_level(logging.WARNING, logger=log.name):
        log.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        log.warning("another warning")
    assert [r.getMessage() for r in caplog.records if r.name == log.name] == ["another warning"]


def test_dashboard_report_and_export_resolve_the_same_folder(study_file: Path, tmp_path: Path, capsys,
                                                             monkeypatch) -> None:
    from archsearch.commands.report import study_file_location

    runs = tmp_path / "results"
    monkeypatch.setenv("ARCHSEARCH_RUNS", str(runs))
    assert study_file_location(study_file) == ("env", f"sqlite:///{runs}/env/study.db")  # report and export
    line = one_error(capsys, ["dashboard", str(study_file)])
    assert f"storage: sqlite:///{runs}/env/study.db does not exist yet" in line
    line = one_error(capsys, ["dashboard", str(study_file), "--runs-dir", str(tmp_path / "flag")])
    assert f"sqlite:///{tmp_path}/flag/env/study.db" in line
