"""What went wrong, for the report's first lines: native crashes and their fallback, families that never trained.

A family whose every trial failed has no row in any answer; without a line saying so, a reader would
take the answers as covering it. A trial whose worker crashed natively (a segfault or abort in a
kernel) was retried once with the safe fallback (`train.channels_last=false`, `train.branch_strategy=
loop`); the report names the crash and says whether the retry trained.
"""

from __future__ import annotations

from collections import Counter

from archsearch.study.records import INTERRUPTED, RETRY_PREFIX, TrialRecord


def failure_lines(records: list[TrialRecord]) -> list[str]:
    """Markdown lines (possibly none) naming native crashes, their fallback, and families that all failed."""
    out = []
    retries = [r for r in records if r.fallback and r.fallback.startswith(RETRY_PREFIX)]
    crashed = [r for r in records if r.fallback and not r.fallback.startswith(RETRY_PREFIX)]
    if crashed:
        trained = sum(r.state in ("COMPLETE", "PRUNED") for r in retries)
        names = ", ".join(sorted({f"`{r.name}`" for r in crashed}))
        out.append(f"**Native crash: {len(crashed)} trial(s) died in their worker** ({names}; "
                   f"{_short(crashed[0].fallback or '')}). Each was retried once with the safe fallback "
                   f"(train.channels_last=false, train.branch_strategy=loop): {trained} of {len(retries)} "
                   "retries trained.")
    for family, n in sorted(_all_failed(records).items()):
        reasons = Counter(_short(r.fail_reason or "unknown") for r in records if r.family == family)
        why = "; ".join(f"{k} ({v})" if v > 1 else k for k, v in reasons.most_common(3))
        out.append(f"**Family {family}: all {n} trial(s) failed** ({why}), so no answer below covers it.")
    return out + [""] if out else []


def _all_failed(records: list[TrialRecord]) -> dict[str, int]:
    """Families with trials, none of which trained (FAIL only; interrupted ones are continued, not failures)."""
    by_family: dict[str, list[TrialRecord]] = {}
    for r in records:
        if r.state in ("RUNNING", "WAITING") or (r.state == "FAIL" and r.fail_reason == INTERRUPTED):
            continue
        by_family.setdefault(r.family, []).append(r)
    return {f: len(rs) for f, rs in by_family.items() if all(r.state == "FAIL" for r in rs)}


def _short(text: str, width: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"
