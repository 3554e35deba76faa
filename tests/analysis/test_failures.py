"""The report's first lines name native crashes, their fallback, and families whose every trial failed."""

from __future__ import annotations

from pathlib import Path

from archsearch.analysis.answers import analyze
from archsearch.analysis.failures import failure_lines
from archsearch.analysis.report import render_markdown
from archsearch.study.records import INTERRUPTED, TrialRecord

CRASH = "worker error: The actor died unexpectedly before finishing this task (SIGABRT)"


def rec(number: int, name: str, family: str, state: str, **kw) -> TrialRecord:
    value = kw.pop("value", 10.0 + number if state == "COMPLETE" else None)
    return TrialRecord(number=number, state=state, value=value, name=name, family=family, depth=8, branches=1,
                       seed=0, budget="0.1M", epochs=2 if state == "COMPLETE" else 1, max_epochs=2,
                       full_fidelity=state == "COMPLETE", **kw)


def records() -> list[TrialRecord]:
    note = f"native crash: {CRASH}; retried with NCHW + loop"
    return [
        rec(0, "resnet-8", "resnet", "COMPLETE"),
        rec(1, "resnet-8", "resnet", "FAIL", fail_reason=INTERRUPTED),  # continued: not a failure of the family
        rec(2, "dmrnet-8-K3", "dmrnet", "FAIL", fail_reason=CRASH, fallback=note),
        rec(3, "dmrnet-8-K3", "dmrnet", "FAIL", fail_reason=CRASH,
            fallback=f"retry of trial #2 after a {note}"),
        rec(4, "dmrnet-8-K4", "dmrnet", "FAIL", fail_reason="non_finite_loss: loss is nan at epoch 1, step 3"),
        rec(5, "multiresnet-8-k2", "multiresnet", "FAIL", fail_reason=CRASH, fallback=note),
        rec(6, "multiresnet-8-k2", "multiresnet", "COMPLETE", fallback=f"retry of trial #5 after a {note}"),
    ]


def test_crash_fallback_and_families_that_all_failed_are_named() -> None:
    lines = failure_lines(records())
    assert lines[0] == (f"**Native crash: 2 trial(s) died in their worker** (`dmrnet-8-K3`, `multiresnet-8-k2`; "
                        f"native crash: {CRASH}; retried with NCHW + loop). Each was retried once with the safe "
                        "fallback (train.channels_last=false, train.branch_strategy=loop): 1 of 2 retries trained.")
    assert lines[1] == (f"**Family dmrnet: all 3 trial(s) failed** ({CRASH} (2); non_finite_loss: loss is nan at "
                        "epoch 1, step 3), so no answer below covers it.")
    assert lines[2:] == [""]  # resnet trained (its interrupted trial is continued); multiresnet's retry trained


def test_the_report_opens_with_them() -> None:
    text = render_markdown("s", analyze(records(), n_boot=50), [], Path("."))
    head = text.splitlines()
    assert head[0] == "# Study report: s"
    assert head[2].startswith("**Native crash: 2 trial(s)") and head[3].startswith("**Family dmrnet: all 3")


def test_nothing_is_said_when_nothing_failed() -> None:
    assert failure_lines([rec(0, "resnet-8", "resnet", "COMPLETE"), rec(1, "wrn-10-1", "wrn", "PRUNED")]) == []


def test_crash_note_keeps_rays_fact_not_its_advice() -> None:
    from archsearch.study.fallback import crash_note, is_native_crash

    ray_reason = ("worker error: The actor is dead because its worker process has died. Worker exit type: "
                  "SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2. End "
                  "of file. Some common causes include: (1) the process was killed by the OOM killer ...")
    assert is_native_crash(ray_reason) and not is_native_crash("non_finite_loss: loss is nan at epoch 1, step 3")
    assert crash_note(ray_reason) == ("native crash: worker process died (Worker unexpectedly exits with a "
                                      "connection error code 2); retried with NCHW + loop")
