"""A trial whose worker died from a native crash is retried once, with the safe kernel choices.

Some kernels crash the process instead of raising (oneDNN's channels_last 1x1 strided backward on AVX2
CPUs: "double free or corruption", a segfault); Ray then reports only that the worker died. Such a
trial is FAIL with Ray's reason, and one new trial with the same parameters and seed is queued (like
an interrupted trial's continuation, `lifecycle.enqueue_continuations`), training with
`train.channels_last=false` and `train.branch_strategy=loop`. Both trials carry the user attribute
`fallback`, so the report can name the crash and the fallback; a retry that crashes again is not retried.
"""

from __future__ import annotations

from typing import Any

from archsearch.study.lifecycle import checkpoint_of
from archsearch.study.records import RETRY_PREFIX
from archsearch.study.storage import quiet_optuna, retry

SAFE_TRAIN = {"channels_last": False, "branch_strategy": "loop"}  # NCHW, one branch after another
# What Ray says when the process running a trial vanished (signal, abort, heap corruption), not a Python error.
CRASH_MARKS = ("died unexpectedly", "unexpectedly exit", "actordiederror", "rayactorerror", "workercrashederror",
               "sigsegv", "sigabrt", "segmentation fault", "core dumped", "double free", "exit code 134",
               "exit code 139")


def is_native_crash(reason: str) -> bool:
    """Did the trial's worker process die (rather than the trial raise an exception)?"""
    text = reason.lower()
    return any(mark in text for mark in CRASH_MARKS)


def crash_note(reason: str) -> str:
    """The `fallback` attribute of the crashed trial: what happened and what was done.

    Ray's reason is a paragraph of troubleshooting advice; its "Worker exit detail" sentence is the fact.
    """
    detail = reason.split("Worker exit detail:", 1)[1].strip().split(". ")[0] if "Worker exit detail:" in reason \
        else reason
    return f"native crash: worker process died ({_short(detail, 120)}); retried with NCHW + loop"


def enqueue_fallback(study: Any, trial: Any, reason: str) -> dict[str, Any] | None:
    """Queue the one safe retry of a natively crashed trial (None when it is itself a retry).

    Call before the crashed trial is told FAIL: its `fallback` attribute is set here.
    """
    if trial.user_attrs.get("fallback") or trial.user_attrs.get("retry_of") is not None:
        return None
    note = crash_note(reason)
    retry(lambda: trial.set_user_attr("fallback", note))
    attrs = {"seed": trial.user_attrs.get("seed"), "retry_of": trial.number, "train_overrides": dict(SAFE_TRAIN),
             "fallback": f"{RETRY_PREFIX}{trial.number} after a {note}", "resume_checkpoint": checkpoint_of(trial)}
    with quiet_optuna():
        retry(lambda: study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False))
    return attrs


def _short(text: str, width: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
