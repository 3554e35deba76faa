"""archsearch run on Ray Tune: honest Optuna records, crash-safe resume, placement, dashboard, PostgreSQL.

The searcher's bookkeeping is tested directly with the event sequences Ray produces (fast). Real
studies run `archsearch run` in a subprocess on a CIFAR-10 subset (ARCHSEARCH_DATA, default
/work/shared/data/cifar10-jpg.tar.gz): one tiny ASHA study is shared by several tests (session
fixture), one is SIGKILLed and resumed, one writes to a real PostgreSQL started by pgserver.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from ray.tune.search import Searcher
from rich.console import Console

from archsearch.orchestrate.prepare import prepare, trial_static
from archsearch.orchestrate.progress import StudyProgress
from archsearch.orchestrate.ray_backend import (
    PromotingASHA,
    RaySearcher,
    RungASHA,
    cluster_slots,
    init_ray,
    trial_resources,
    with_trial_resources,
)
from archsearch.orchestrate.searcher import FINISHED, StudySearcher
from archsearch.study.config import Resources, load_study
from archsearch.study.records import INTERRUPTED, record_of
from archsearch.study.storage import open_storage

DATA = os.environ.get("ARCHSEARCH_DATA", str(Path(__file__).resolve().parents[3] / "shared/data/cifar10-jpg.tar.gz"))
TINY_SPACE = {"candidates": [{"name": "resnet-8"}, {"name": "multiresnet-8-k2"}, {"name": "dmrnet-8"}]}
TRAIN = {"subset": 256, "val_size": 256, "batch_size": 64, "lr": 0.05, "schedule": "cosine"}
optuna.logging.set_verbosity(optuna.logging.WARNING)
needs_data = pytest.mark.skipif(not Path(DATA).exists(), reason=f"no CIFAR-10 archive at {DATA} (ARCHSEARCH_DATA)")


def study_dict(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name, "space": TINY_SPACE, "sampler": "tpe", "n_trials": 6, "seeds": 1,
        "asha": {"max_epochs": 3, "grace_period": 1, "reduction_factor": 2},
        "resources": {"cpus": 1, "gpus": 0}, "train": dict(TRAIN),
    }
    data.update(changes)
    return data


def write_study(directory: Path, data: dict[str, Any]) -> Path:
    path = directory / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
    full_env = {**os.environ, "ARCHSEARCH_DATA": DATA, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "archsearch.cli", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 540) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"archsearch did not finish in {timeout} s:\n{out[-4000:]}")
    return proc.returncode, out


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reap_group(pgid: int) -> None:
    """Kill what is left of a process group we started (Ray agents orphaned by a SIGKILLed driver)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# ---------------------------------------------------------------------------------- searcher logic (no cluster)


class FakeScheduler:
    def __init__(self) -> None:
        self.stopped: set[str] = set()
        self.seeded: dict[str, dict[int, float]] = {}

    def seed(self, key: str, values: dict[int, float]) -> None:
        self.seeded[key] = dict(values)


def make_searcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> Any:
    from archsearch.study.lifecycle import load_space_of, open_study

    monkeypatch.chdir(tmp_path)
    config = load_study(write_study(tmp_path, study_dict("unit", **changes)))
    prep = prepare(config, resume=False)
    study = open_study(prep)
    progress = StudyProgress("unit", config.n_trials, config.max_epochs, console=Console(file=io.StringIO()))
    return StudySearcher(study, load_space_of(config), config, scheduler=FakeScheduler(), progress=progress,
                         static={"train": {}}, n_trials=config.n_trials, deadline=None, inject_nan={2})


def epochs(searcher: Any, rid: str, upto: int, start: int = 1) -> list[dict[str, float]]:
    results = [{"epoch": e, "val_error": 90.0 - 5 * e} for e in range(start, upto + 1)]
    for r in results[:-1]:
        searcher.on_trial_result(rid, r)
    return results


def trial_of(searcher: Any, number: int) -> optuna.trial.FrozenTrial:
    return searcher.study.trials[number]


def test_searcher_tells_complete_pruned_fail_and_interrupted(tmp_path: Path, monkeypatch) -> None:
    s = make_searcher(tmp_path, monkeypatch)
    configs = {rid: s.suggest(rid) for rid in ("a", "b", "c", "d", "e")}
    assert [c["number"] for c in configs.values()] == [0, 1, 2, 3, 4]
    assert configs["c"]["inject_nan"] and not configs["a"]["inject_nan"]
    assert configs["a"]["checkpoint_dir"].endswith("runs/unit/trials/0")
    assert trial_of(s, 0).state.name == "RUNNING" and trial_of(s, 0).user_attrs["ray_trial_id"] == "a"

    # finished: every epoch, then the final report with latency (Ray sends done=True last)
    last = epochs(s, "a", 3)[-1]
    s.on_trial_result("a", last)
    final = {"epoch": 3, "val_error": last["val_error"], "final": 1.0, "latency_b1_ms": 1.5, "latency_b128_ms": 90.0,
             "trial_seconds": 12.0, "done": True}
    s.on_trial_complete("a", final)
    t = trial_of(s, 0)
    assert t.state.name == "COMPLETE" and t.value == 75.0
    assert t.intermediate_values == {1: 85.0, 2: 80.0, 3: 75.0}
    assert t.user_attrs["full_fidelity"] and t.user_attrs["epochs"] == 3 and t.user_attrs["latency_b1_ms"] == 1.5

    # ASHA stop at epoch 1: the stopping result reaches the searcher only through on_trial_complete
    s.scheduler.stopped.add("b")
    s.on_trial_complete("b", {"epoch": 1, "val_error": 88.0, "done": True})
    t = trial_of(s, 1)
    assert t.state.name == "PRUNED" and t.intermediate_values == {1: 88.0} and not t.user_attrs["full_fidelity"]

    # an error: Ray tells the searcher first, then the callback brings the reason
    s.on_trial_complete("c", None, error=True)
    assert trial_of(s, 2).state.name == "RUNNING"
    s.trial_errored("c", "non_finite_loss: loss is nan at epoch 1, step 1")
    t = trial_of(s, 2)
    assert t.state.name == "FAIL" and t.user_attrs["fail_reason"].startswith("non_finite_loss")

    # stopped with no ASHA decision before the last epoch (Ctrl-C): interrupted, resumable
    epochs(s, "d", 2)
    s.on_trial_complete("d", {"epoch": 2, "val_error": 80.0})
    t = trial_of(s, 3)
    assert t.state.name == "FAIL" and t.user_attrs["fail_reason"] == INTERRUPTED and s.interrupted
    # still running when the session ends
    s.finalize()
    assert trial_of(s, 4).state.name == "FAIL" and trial_of(s, 4).user_attrs["fail_reason"] == INTERRUPTED
    assert s.counted == 2 and s.failures == 1


def test_searcher_counts_toward_n_trials_and_replaces_failures(tmp_path: Path, monkeypatch) -> None:
    s = make_searcher(tmp_path, monkeypatch, n_trials=2)
    assert s.suggest("a")["number"] == 0 and s.suggest("b")["number"] == 1
    assert s.suggest("c") is None  # two in flight already: wait
    s.on_trial_complete("a", None, error=True)
    s.trial_errored("a", "boom")
    assert s.suggest("c")["number"] == 2  # a failure does not count: replace it
    for rid in ("b", "c"):
        s.scheduler.stopped.add(rid)
        s.on_trial_complete(rid, {"epoch": 1, "val_error": 80.0})
    assert s.suggest("d") == FINISHED


def test_searcher_asks_optuna_only_for_a_free_slot(tmp_path: Path, monkeypatch) -> None:
    s = make_searcher(tmp_path, monkeypatch)
    s.slots = 1
    assert s.suggest("a")["number"] == 0
    assert s.suggest("b") is None and len(s.study.trials) == 1  # no RUNNING trial waiting in Ray's queue
    s.scheduler.stopped.add("a")
    s.on_trial_complete("a", {"epoch": 1, "val_error": 80.0})
    assert s.suggest("b")["number"] == 1


def test_searcher_seeds_enqueued_together_and_no_identical_reruns(tmp_path: Path, monkeypatch) -> None:
    s = make_searcher(tmp_path, monkeypatch, seeds=2, n_trials=20, sampler="random")
    first = s.suggest("a")
    second = s.suggest("b")
    assert (first["name"], first["seed"]) != (second["name"], second["seed"])
    assert second["name"] == first["name"] and second["seed"] == 1  # the sibling seed came from the queue
    seen = {(first["name"], first["seed"]), (second["name"], second["seed"])}
    for i in range(10):  # a 3-candidate space: the sampler repeats architectures, never (arch, seed) pairs
        c = s.suggest(f"x{i}")
        assert (c["name"], c["seed"]) not in seen
        seen.add((c["name"], c["seed"]))
    assert {n for n, _ in seen} <= {c["name"] for c in TINY_SPACE["candidates"]}


def test_searcher_multi_objective_records(tmp_path: Path, monkeypatch) -> None:
    s = make_searcher(tmp_path, monkeypatch, sampler="nsga2")
    c = s.suggest("a")
    last = epochs(s, "a", 3)[-1]
    s.on_trial_result("a", last)
    s.on_trial_complete("a", {**last, "final": 1.0})
    t = trial_of(s, 0)
    assert t.state.name == "COMPLETE" and t.values == [75.0, float(t.user_attrs["macs"])]
    assert t.intermediate_values == {}  # Optuna forbids trial.report with several objectives
    assert t.user_attrs["intermediate_values"] == {"1": 85.0, "2": 80.0, "3": 75.0}
    assert c["name"] == t.user_attrs["name"]


def test_grid_study_enqueues_every_point_then_finishes(tmp_path: Path, monkeypatch) -> None:
    s = make_searcher(tmp_path, monkeypatch, sampler="grid", n_trials=None, seeds=2)
    names = []
    for i in range(6):
        c = s.suggest(str(i))
        names.append((c["name"], c["seed"]))
        s.on_trial_result(str(i), {"epoch": 3, "val_error": 50.0})
        s.on_trial_complete(str(i), {"epoch": 3, "val_error": 50.0, "final": 1.0})
    assert sorted(names) == sorted((c["name"], seed) for c in TINY_SPACE["candidates"] for seed in (0, 1))
    assert s.suggest("x") == FINISHED
    assert RaySearcher(s).suggest("y") == Searcher.FINISHED  # what Tune is told


def test_continuation_carries_checkpoint_history_into_optuna_and_asha(tmp_path: Path, monkeypatch) -> None:
    import torch

    from archsearch.study.lifecycle import enqueue_continuations, mark_interrupted

    s = make_searcher(tmp_path, monkeypatch)
    c = s.suggest("a")
    s.on_trial_result("a", {"epoch": 1, "val_error": 85.0})
    ckpt = Path(c["checkpoint_dir"]) / "checkpoint.pt"
    history = [{"epoch": 1, "val_error": 85.0}, {"epoch": 2, "val_error": 80.0}]  # epoch 2 never reported
    torch.save({"history": history}, ckpt)
    s.live.clear()  # the driver died here
    mark_interrupted(s.study)
    enqueue_continuations(s.study)
    s.waiting += 1
    c2 = s.suggest("b")
    assert c2["name"] == c["name"] and c2["seed"] == c["seed"] and c2["number"] == 1
    t = trial_of(s, 1)
    assert t.user_attrs["resumed_from"] == 0 and t.user_attrs["resumed_from_epoch"] == 2
    assert t.intermediate_values == {1: 85.0, 2: 80.0}
    assert (Path(c2["checkpoint_dir"]) / "checkpoint.pt").read_bytes() == ckpt.read_bytes()
    assert s.scheduler.seeded["b"] == {1: 85.0, 2: 80.0}


def test_asha_rungs_rebuilt_from_stored_values_decide_as_before() -> None:
    @dataclass
    class T:
        trial_id: str
        config: dict = field(default_factory=dict)

    history = {"t0": [80.0, 70.0], "t1": [75.0, 72.0], "t2": [78.0, 71.0], "t3": [90.0, 60.0]}

    def decisions(asha: Any, names: list[str]) -> list[str]:
        out = []
        for n in names:
            t = T(n)
            asha.on_trial_add(None, t)
            for e, v in enumerate(history[n], start=1):
                out.append(asha.on_trial_result(None, t, {"epoch": e, "val_error": v}))
                if out[-1] == "STOP":
                    break
        return out

    uninterrupted = RungASHA(4, 1, 2)
    assert uninterrupted.milestones == [1, 2]  # no rung at the last epoch: finished trials finish
    expected = decisions(uninterrupted, ["t0", "t1", "t2", "t3"])
    rebuilt = RungASHA(4, 1, 2)
    decisions_before = decisions(rebuilt, ["t0", "t1"])
    resumed = RungASHA(4, 1, 2)
    for n in ("t0", "t1"):
        resumed.seed(f"optuna-{n}", {e: v for e, v in enumerate(history[n], start=1)})
    assert decisions_before + decisions(resumed, ["t2", "t3"]) == expected
    assert resumed.stopped == {"t2", "t3"}
    assert decisions(RungASHA(4, 1, 2), ["t2", "t3"]) != expected[-3:]  # empty rungs would have let t2 go on


@dataclass
class FakeTrial:
    trial_id: str
    status: str = "RUNNING"

    def is_finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")


class FakeController:
    def __init__(self, trials: list[FakeTrial]) -> None:
        self.trials = trials
        self.stopped: list[str] = []

    def get_trials(self) -> list[FakeTrial]:
        return self.trials

    def stop_trial(self, trial: FakeTrial) -> None:
        self.stopped.append(trial.trial_id)
        trial.status = "TERMINATED"


def test_promoting_asha_pauses_at_rungs_and_promotes_as_published() -> None:
    """Li et al. 2020, Algorithm 2 with η = 2, rungs at epochs 1 and 2 of 4, worked by hand."""
    asha = PromotingASHA(4, 1, 2)
    assert asha.milestones == [1, 2]  # no rung at the last epoch
    new_allowed = [True]
    asha.may_start_new = lambda: new_allowed[0]
    trials = {f"t{i}": FakeTrial(f"t{i}") for i in range(6)}
    ctl = FakeController(list(trials.values()))

    def arrive(tid: str, epoch: int, err: float) -> str:
        action = asha.on_trial_result(ctl, trials[tid], {"epoch": epoch, "val_error": err})
        if action == "PAUSE":
            trials[tid].status = "PAUSED"
        return action

    def run_next() -> str | None:
        chosen = asha.choose_trial_to_run(ctl)
        if chosen is None:
            return None
        chosen.status = "RUNNING"
        return chosen.trial_id

    assert arrive("t0", 1, 80.0) == "PAUSE"  # alone in its rung: top ⌊1/2⌋ = 0
    assert asha.on_trial_result(ctl, trials["t1"], {"epoch": 0, "val_error": 99.0}) == "CONTINUE"  # no rung yet
    assert arrive("t1", 1, 85.0) == "PAUSE"  # rung 1's top 1 is t0, paused: t0 is the job, not t1
    assert asha.promotion_waiting()
    assert run_next() == "t0" and not asha.promotion_waiting()
    assert run_next() is None  # t1 is not in the top half: it stays paused
    assert arrive("t2", 1, 70.0) == "CONTINUE"  # 3 in rung 1, top 1 = t2 itself
    assert arrive("t0", 2, 60.0) == "PAUSE"  # alone in rung 2; rung 1's top is promoted already
    assert arrive("t3", 1, 82.0) == "PAUSE"  # 4 in rung 1, top 2 = t2, t0: both promoted
    assert arrive("t2", 2, 65.0) == "PAUSE"  # rung 2's top 1 = t0, paused: due
    assert arrive("t4", 1, 90.0) == "PAUSE"
    assert arrive("t5", 1, 95.0) == "PAUSE"  # 6 in rung 1: top 3 now holds t3 (82), due as well
    assert run_next() == "t0"  # the highest rung's promotion goes first ...
    assert run_next() == "t3"  # ... then rung 1's
    assert run_next() is None and sorted(asha.paused) == ["t1", "t2", "t4", "t5"]
    assert asha.on_trial_result(ctl, trials["t0"], {"epoch": 3, "val_error": 55.0}) == "CONTINUE"  # past rung 2
    trials["t0"].status = "TERMINATED"
    assert arrive("t3", 2, 58.0) == "CONTINUE"  # rung 2 {60, 65, 58}: top 1 = t3 itself
    trials["t3"].status = "TERMINATED"
    assert run_next() is None and not ctl.stopped  # new trials may still come: keep waiting
    new_allowed[0] = False
    assert run_next() is None
    assert sorted(ctl.stopped) == ["t1", "t2", "t4", "t5"] == sorted(asha.stopped)  # never promoted: PRUNED
    assert not asha.paused

    # After a crash the rungs are rebuilt: being recorded past a rung means having been promoted there.
    rebuilt = PromotingASHA(4, 1, 2)
    rebuilt.seed("optuna-0", {1: 80.0, 2: 60.0, 3: 55.0})
    rebuilt.seed("optuna-1", {1: 85.0})
    assert rebuilt.rungs == {1: {"optuna-0": 80.0, "optuna-1": 85.0}, 2: {"optuna-0": 60.0}}
    assert rebuilt.promoted == {1: {"optuna-0"}, 2: {"optuna-0"}}
    late = FakeTrial("c")
    # a continuation that went past rungs unjudged is judged at each, lowest first, at its first result
    assert rebuilt.on_trial_result(FakeController([late]), late, {"epoch": 2, "val_error": 70.0}) == "PAUSE"
    assert rebuilt.rungs[1]["c"] == rebuilt.rungs[2]["c"] == 70.0
    assert "c" in rebuilt.promoted[1] and rebuilt.paused == {"c": 2}  # top of rung 1, not of rung 2


# ---------------------------------------------------------------------------------- placement (logical GPUs)


def test_gpu_placement_and_fractional_packing(tmp_path: Path) -> None:
    import ray
    from ray import tune

    init_ray(num_cpus=4, num_gpus=2)
    try:
        def probe(config: dict) -> None:
            start = time.time()
            time.sleep(6)
            tune.report({"epoch": 1, "val_error": 0.0, "start": start, "end": time.time(),
                         "cvd": os.environ.get("CUDA_VISIBLE_DEVICES", "")})

        seen = {}
        for gpus in (0.5, 1.0):
            res = Resources(cpus=1, gpus=gpus)
            tuner = tune.Tuner(with_trial_resources(probe, res), param_space={"i": tune.grid_search(list(range(4)))},
                               tune_config=tune.TuneConfig(reuse_actors=True),
                               run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0,
                                                         name=f"gpus{gpus}"))
            rows = [r.metrics for r in tuner.fit()]
            spans = [(r["start"], r["end"]) for r in rows]
            overlap = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
            seen[gpus] = (sorted(r["cvd"] for r in rows), overlap)
        # half a GPU each: 4 trials at once, two per GPU, each trial sees exactly one device
        assert seen[0.5] == (["0", "0", "1", "1"], 4)
        # a whole GPU each: 2 at once
        assert seen[1.0][0] == ["0", "0", "1", "1"] and seen[1.0][1] == 2

        config = load_study(write_study(tmp_path, study_dict("gpu", resources={"cpus": 1, "gpus": 0.5})))
        assert cluster_slots(config) == 4
        assert trial_static(config)["device"] == "cuda" and trial_static(config)["threads"] == 1
    finally:
        ray.shutdown()


def test_with_trial_resources_maps_the_study_resources() -> None:
    assert trial_resources(Resources(cpus=2, gpus=0.25)) == {"cpu": 2.0, "gpu": 0.25}
    assert trial_resources(Resources(cpus=1, gpus=0)) == {"cpu": 1.0}


# ---------------------------------------------------------------------------------- a real tiny study


@dataclass
class TinyRun:
    dir: Path
    study_file: Path
    url: str
    rc: int
    out: str
    wall: float
    snapshots: list[tuple[list[dict], dict[int, str]]]
    reads: int
    read_errors: list[str]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """One real study (6 counted trials + one forced to NaN) while a dashboard and a reader poll it."""
    if not Path(DATA).exists():
        pytest.skip(f"no CIFAR-10 archive at {DATA}")
    d = tmp_path_factory.mktemp("tiny")
    study_file = write_study(d, study_dict("tiny"))
    url = f"sqlite:///{d}/runs/tiny/study.db"
    db = d / "runs" / "tiny" / "study.db"
    t0 = time.time()
    proc = cli("run", str(study_file), cwd=d, env={"ARCHSEARCH_INJECT_NAN": "1"})
    stop = threading.Event()
    snapshots: list[tuple[list[dict], dict[int, str]]] = []
    reads, errors = [0], []
    port = free_port()
    dash = None
    try:
        while not _study_created(db):
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.5)
        dash = cli("dashboard", str(study_file), "--port", str(port), cwd=d)

        def hammer() -> None:  # a naive reader: Optuna's plain RDBStorage, as `optuna-dashboard URL` opens it
            storage = optuna.storages.RDBStorage(url)
            while not stop.is_set():
                try:
                    storage.get_all_trials(storage.get_study_id_from_name("tiny"))
                    reads[0] += 1
                except Exception as exc:  # noqa: BLE001
                    errors.append(repr(exc))
                time.sleep(0.01)

        def poll_dashboard() -> None:
            sid = None
            while not stop.is_set():
                with contextlib.suppress(OSError, ValueError):
                    if sid is None:
                        studies = _get(port, "/api/studies")["study_summaries"]
                        sid = next(s["study_id"] for s in studies if s["study_name"] == "tiny")
                    trials = _get(port, f"/api/studies/{sid}?after=0")["trials"]
                    truth = {t.number: t.state.name for t in load(url, "tiny").get_trials(deepcopy=False)}
                    snapshots.append((trials, truth))
                stop.wait(1.0)

        threads = [threading.Thread(target=hammer, daemon=True), threading.Thread(target=poll_dashboard, daemon=True)]
        for t in threads:
            t.start()
        rc, out = finish(proc)
        time.sleep(1.5)  # one more dashboard snapshot after the end
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        stop.set()
        for p in (proc, dash):
            if p is not None and p.poll() is None:
                reap_group(p.pid)
                p.wait()
    return TinyRun(d, study_file, url, rc, out, time.time() - t0, snapshots, reads[0], errors)


def _study_created(db: Path) -> bool:
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=1)) as con:
            return bool(con.execute("select count(*) from studies").fetchone()[0])
    except sqlite3.Error:
        return False


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def test_tiny_asha_study_records_are_honest(tiny_run: TinyRun) -> None:
    assert tiny_run.rc == 0, tiny_run.out[-4000:]
    study = load(tiny_run.url, "tiny")
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "WAITING" not in states
    assert states.count("COMPLETE") + states.count("PRUNED") == 6  # the study completed its n_trials
    assert states.count("COMPLETE") >= 1 and states.count("PRUNED") >= 1, states
    assert states.count("FAIL") == 1

    for t in trials:
        ua = t.user_attrs
        for key in ("name", "spec", "family", "depth", "branches", "width", "params", "macs", "seed", "budget",
                    "max_epochs", "ray_trial_id", "logdir", "checkpoint", "epochs", "full_fidelity",
                    "path_length_mean"):
            assert key in ua, (t.number, key)
        assert ua["max_epochs"] == 3 and Path(ua["logdir"]).is_dir()
        if t.state.name == "FAIL":
            assert t.number == 1 and ua["fail_reason"].startswith("non_finite_loss:"), ua["fail_reason"]
            continue
        assert ua["precision"] in ("fp32", "bf16")  # what `amp: auto` resolved to on the worker
        assert ua["channels_last"] is False and ua["channels_last_reason"].startswith("CPU default: NCHW")
        # compiled or eager, and why: a 3-epoch tiny trial is too short to pay back a compile
        assert ua["compiled"] is False and ua["compile_reason"].startswith("auto: eager"), ua.get("compile_reason")
        assert record_of(t).compiled is False  # and the analysis reads it back
        assert ua["threads"] >= 1
        if ua["branches"] > 1:  # how its parallel functions ran (a rerun is bit-identical only if equal)
            assert ua["branch_strategies"].split(" #")[0].split()[0].split("×")[0] in ("grouped", "loop")
        # every epoch it trained is there, keyed 1..epochs, and the value is the last of them
        assert sorted(t.intermediate_values) == list(range(1, ua["epochs"] + 1))
        assert t.value == t.intermediate_values[ua["epochs"]]
        assert "fail_reason" not in ua
        if t.state.name == "COMPLETE":
            assert ua["epochs"] == 3 and ua["full_fidelity"] is True
            assert ua["latency_b1_ms"] > 0 and ua["latency_b128_ms"] > 0
            assert Path(ua["checkpoint"]).is_file()
        else:
            assert ua["epochs"] < 3 and ua["full_fidelity"] is False

    attrs = study.user_attrs
    assert attrs["objectives"] == ["val_error"] and len(attrs["space_fingerprint"]) == 16
    assert attrs["archsearch_version"] and attrs["config"]["name"] == "tiny"
    assert (tiny_run.dir / "runs" / "tiny" / "ray").is_dir()


def test_tiny_study_summary_and_progress(tiny_run: TinyRun) -> None:
    out = tiny_run.out
    assert "study tiny:" in out and "6 count toward n_trials=6" in out and "best: " in out
    assert "pruned   #" in out and "complete #" in out and "fail     #1" in out and "non_finite_loss" in out
    assert "archsearch dashboard" in out
    assert "Traceback" not in out and "database is locked" not in out


def test_concurrent_reads_never_fail_a_trial(tiny_run: TinyRun) -> None:
    assert tiny_run.reads > 200, tiny_run.reads
    assert tiny_run.read_errors == []
    study = load(tiny_run.url, "tiny")
    failed = [t.user_attrs.get("fail_reason") for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and failed[0].startswith("non_finite_loss")  # only the injected one


def test_dashboard_api_shows_the_running_study(tiny_run: TinyRun) -> None:
    snaps = tiny_run.snapshots
    assert len(snaps) >= 5
    finished = {"COMPLETE", "PRUNED", "FAIL"}
    saw_running = False
    for trials, truth in snaps:
        for t in trials:
            state = t["state"].upper()
            saw_running |= state == "RUNNING"
            if state in finished:  # a finished state is final: the storage must agree
                assert truth[t["number"]] == state
        assert all(isinstance(t["intermediate_values"], list) for t in trials)
    assert saw_running, "the dashboard never showed a running trial"
    last_trials, last_truth = snaps[-1]
    assert {t["number"]: t["state"].upper() for t in last_trials} == last_truth


# ---------------------------------------------------------------------------------- SIGKILL and --resume


@needs_data
def test_sigkill_then_resume_loses_nothing(tmp_path: Path) -> None:
    epochs = 4
    study_file = write_study(tmp_path, study_dict("crash", n_trials=4, asha=None, train={**TRAIN, "epochs": epochs}))
    url = f"sqlite:///{tmp_path}/runs/crash/study.db"
    db = tmp_path / "runs" / "crash" / "study.db"
    proc = cli("run", str(study_file), cwd=tmp_path)

    def wait_for(what: str, ready: Callable[[list], bool]) -> None:
        deadline = time.time() + 300
        while not (_study_created(db) and ready(load(url, "crash").get_trials(deepcopy=False))):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.time() < deadline, f"no {what} within 300 s"
            time.sleep(0.2)

    try:
        # nobody else may drive the study while it runs (checked first: a second interpreter takes
        # seconds to start on a busy machine, long enough for these short trials to finish)
        wait_for("running trial", lambda trials: any(t.state.name == "RUNNING" for t in trials))
        second = cli("run", str(study_file), "--resume", cwd=tmp_path)
        rc, out = finish(second, 120)
        assert rc == 2 and "is being run right now" in out, out
        # then kill it the moment a running trial has a checkpoint
        wait_for("checkpoint", lambda trials: any(
            t.state.name == "RUNNING" and t.user_attrs.get("epochs", 0) >= 1
            and Path(t.user_attrs["checkpoint"]).is_file() for t in trials))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        reap_group(proc.pid)
    before = {t.number: t for t in load(url, "crash").get_trials()}
    stale = [n for n, t in before.items() if t.state.name == "RUNNING"]
    assert stale, "the kill left no RUNNING trial"

    rc, out = finish(cli("run", str(study_file), cwd=tmp_path), 120)
    assert rc == 2 and "pass --resume" in out, out

    rc, out = finish(cli("run", str(study_file), "--resume", cwd=tmp_path))
    assert rc == 0, out[-4000:]
    after = {t.number: t for t in load(url, "crash").get_trials()}
    assert not [t for t in after.values() if t.state.name in ("RUNNING", "WAITING")]
    for n, t in before.items():  # what had finished is untouched
        if t.state.name in ("COMPLETE", "PRUNED", "FAIL"):
            a = after[n]
            assert (a.state, a.values, a.intermediate_values) == (t.state, t.values, t.intermediate_values)
    resumed = 0
    for n in stale:
        assert after[n].state.name == "FAIL" and after[n].user_attrs["fail_reason"] == INTERRUPTED
        conts = [t for t in after.values() if t.user_attrs.get("resumed_from") == n]
        assert len(conts) == 1
        c = conts[0]
        assert c.state.name == "COMPLETE" and c.params == after[n].params
        old = after[n].user_attrs
        assert (c.user_attrs["seed"], c.user_attrs["name"]) == (old["seed"], old["name"])
        assert sorted(c.intermediate_values) == list(range(1, epochs + 1))
        start = c.user_attrs.get("resumed_from_epoch", 0)
        for e in range(1, start + 1):  # the epochs trained before the kill, carried over bit for bit
            if e in before[n].intermediate_values:
                assert c.intermediate_values[e] == before[n].intermediate_values[e]
        resumed += start >= 1
    assert resumed >= 1  # at least one continued from its checkpoint rather than from scratch
    counted = [t for t in after.values() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 4
    assert "continued interrupted trials" in out


@needs_data
def test_promote_rule_pauses_resumes_exactly_and_prunes_the_rest(tmp_path: Path) -> None:
    """`asha.rule: promote` on Ray: paused trials resume from their checkpoints bit for bit.

    One slot, so the run is deterministic; the first trial is alone in rung 1 and must pause there.
    Every trial's per-epoch errors are compared with the same (architecture, seed) trained straight
    through in this process, so a resume that lost or replayed anything would show.
    """
    from archsearch.train import make_config, train

    data = study_dict("promote", n_trials=6, seeds=2, report=False, export_top=0,
                      asha={"max_epochs": 3, "grace_period": 1, "reduction_factor": 2, "rule": "promote"},
                      resources={"cpus": 1, "gpus": 0, "max_concurrent": 1}, train={**TRAIN, "latency": False})
    study_file = write_study(tmp_path, data)
    rc, out = finish(cli("run", str(study_file), cwd=tmp_path), 300)
    assert rc == 0, out[-4000:]
    trials = load(f"sqlite:///{tmp_path}/runs/promote/study.db", "promote").get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 6 == len(states), states
    assert states.count("COMPLETE") >= 1 and states.count("PRUNED") >= 1, states
    assert trials[0].user_attrs["asha_pauses"][0] == 1
    resumed = [t for t in trials if min(t.user_attrs.get("asha_pauses", [3])) < t.user_attrs["epochs"]]
    assert resumed, "no paused trial was ever promoted"
    assert "promoted #" in out and "paused   #" in out
    config = load_study(study_file).train_config
    straight: dict[tuple[str, int], list[float]] = {}
    for t in trials:
        ua = t.user_attrs
        assert sorted(t.intermediate_values) == list(range(1, ua["epochs"] + 1))
        if t.state.name == "PRUNED":  # paused at a rung and never promoted
            assert ua["epochs"] in (1, 2) and ua["asha_pauses"][-1] == ua["epochs"]
        key = (ua["name"], ua["seed"])
        if key not in straight:  # the same schedule (all 3 epochs), read at the epochs the trial reached
            straight[key] = []
            same = make_config(config.model_dump(mode="json"), seed=ua["seed"], threads=1)
            train(json.loads(ua["spec"]), same, data=DATA, device="cpu",
                  report=lambda e, m, k=key: straight[k].append(m["val_error"]))
        assert [t.intermediate_values[e] for e in range(1, ua["epochs"] + 1)] == straight[key][: ua["epochs"]]


# ---------------------------------------------------------------------------------- PostgreSQL


@needs_data
def test_postgresql_storage(tmp_path: Path) -> None:
    pytest.importorskip("psycopg2", reason="psycopg2-binary is needed for postgresql:// storages")
    pgserver = pytest.importorskip("pgserver")
    try:
        server = pgserver.get_server(str(tmp_path / "pg"), cleanup_mode="stop")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"pgserver could not start PostgreSQL here: {exc}")
    try:
        uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        url = uri.replace("postgresql://", "postgresql+psycopg2://", 1)
        study_file = write_study(tmp_path, study_dict("pg", n_trials=2, asha=None, storage=url,
                                                      train={**TRAIN, "subset": 128, "val_size": 128, "epochs": 1}))
        rc, out = finish(cli("run", str(study_file), cwd=tmp_path))
        assert rc == 0, out[-4000:]
        study = load(url, "pg")
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
        assert all(t.intermediate_values == {1: t.value} for t in study.trials)
        assert not (tmp_path / "runs" / "pg" / "study.db").exists()
        storage = open_storage(url)
        assert storage.get_study_system_attrs(study._study_id)["archsearch:driver"]["state"] == "finished"
    finally:
        server.cleanup()


def test_tiny_study_ends_with_report_and_exported_code(tiny_run: TinyRun) -> None:
    """End to end on real CIFAR-10: run -> report (attached to the study) -> standalone export."""
    assert tiny_run.rc == 0, tiny_run.out[-4000:]
    run_dir = tiny_run.dir / "runs" / "tiny"
    report = run_dir / "report" / "report.md"
    assert f"report: {report.relative_to(tiny_run.dir)}\n" in tiny_run.out  # as typed from the working directory
    text = report.read_text()
    assert "## Answers" in text and "Trials by architecture" in text
    assert list((run_dir / "report" / "figures").glob("*.png"))
    study = load(tiny_run.url, "tiny")
    assert study.user_attrs["report_path"] == str(report)
    exported = sorted((run_dir / "export").glob("*.py"))
    assert len(exported) == 1 and f" -> {exported[0].relative_to(tiny_run.dir)} (weights " in tiny_run.out
    best = min((t for t in study.get_trials(deepcopy=False)
                if t.state.name == "COMPLETE" and t.user_attrs.get("full_fidelity")), key=lambda t: t.value)
    source = exported[0].read_text()
    assert best.user_attrs["name"] in source and "import archsearch" not in source
    weights = exported[0].with_name(best.user_attrs["name"] + ".pt")
    assert weights.exists()
    # the exported file rebuilds the trained network in a process that cannot import archsearch
    import torch

    site_packages = str(Path(torch.__file__).resolve().parents[1])  # no .pth hook: no editable archsearch
    probe = (f"import sys; sys.path += [{site_packages!r}, {str(exported[0].parent)!r}]; import torch; "
             f"import importlib.util as u; assert u.find_spec('archsearch') is None; "
             f"m = __import__({exported[0].stem!r}).build_model(); "
             f"m.load_state_dict(torch.load({str(weights)!r}), strict=True); m.eval(); "
             f"print(tuple(m(torch.zeros(1, 3, 32, 32)).shape))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "(1, 10)", out.stderr[-2000:]
