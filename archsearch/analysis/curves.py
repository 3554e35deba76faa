"""Tabulated learning curves: a study's trials as a CSV table, and its search replayed on such a table.

    name,seed,epoch,val_error[,seconds]      canonical name, integer seed, epoch (1-based), error in percent,
                                             training seconds of that epoch (optional)

`archsearch curves` writes every stored COMPLETE or PRUNED trial's per-epoch validation errors; `archsearch
replay` runs the study's search (a race, or the exhaustive grid) against a table with simulated time and no
training, as Syne Tune replays tabulated benchmarks. The search is a pure function of "train candidate c,
seed s, to epoch e → validation error" (`archsearch.analysis.race`), so the replay asks exactly what a run asks.
"""

from __future__ import annotations

import csv
import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from archsearch.analysis.questions import Answer, answer, as_json
from archsearch.analysis.race import Job, RaceResult, RaceSettings, race, race_json, samples_over_pool
from archsearch.errors import ConfigError
from archsearch.study.questions import ResolvedQuestion

HEADER = ("name", "seed", "epoch", "val_error")
NOMINAL_MACS_PER_S = 1e10  # simulated time without a seconds column: 3 x MACs per image (forward + backward)


@dataclass
class CurveTable:
    """(name, seed, epoch) → (val_error, seconds of that epoch or None)."""

    rows: dict[tuple[str, int, int], tuple[float, float | None]]
    source: str = "curves"

    def value(self, job: Job) -> float:
        """The error of a job; a one-line ConfigError naming the (name, seed, epoch) the table lacks."""
        row = self.rows.get((job.name, job.seed, job.epoch))
        if row is None:
            raise ConfigError(f"{self.source}: no row for name={job.name}, seed={job.seed}, epoch={job.epoch} "
                              "(the search asks for it)")
        return row[0]

    def seconds(self, job: Job) -> float | None:
        """Training seconds of the job's epochs 1..epoch, or None when a row has no seconds."""
        secs = [self.rows.get((job.name, job.seed, e), (0.0, None))[1] for e in range(1, job.epoch + 1)]
        return None if any(s is None for s in secs) else float(sum(secs))

    def grid_epochs(self) -> int:
        """Every (name, seed) of the table trained to its last epoch."""
        last: dict[tuple[str, int], int] = {}
        for name, seed, epoch in self.rows:
            last[(name, seed)] = max(epoch, last.get((name, seed), 0))
        return sum(last.values())

    def seeds_of(self, name: str) -> list[int]:
        return sorted({s for n, s, _ in self.rows if n == name})


def read_curves(path: str | Path) -> CurveTable:
    """Read and check a curves CSV; malformed input → ConfigError "FILE: line N: reason"."""
    where = str(path)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{where}: no such curves file")
    with p.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if tuple(header[:4]) != HEADER or header[4:] not in ([], ["seconds"]):
            raise ConfigError(f"{where}: line 1: expected the header {','.join(HEADER)}[,seconds], got "
                              f"{','.join(header) or 'nothing'}")
        rows: dict[tuple[str, int, int], tuple[float, float | None]] = {}
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            key, value = _parse_row(row, len(header), f"{where}: line {line}")
            if key in rows:
                raise ConfigError(f"{where}: line {line}: a second row for name={key[0]}, seed={key[1]}, "
                                  f"epoch={key[2]}")
            rows[key] = value
    if not rows:
        raise ConfigError(f"{where}: no rows below the header")
    return CurveTable(rows, where)


def _parse_row(row: list[str], width: int, where: str) -> tuple[tuple[str, int, int], tuple[float, float | None]]:
    if len(row) != width:
        raise ConfigError(f"{where}: {len(row)} fields, the header has {width}")
    name = row[0].strip()
    if not name:
        raise ConfigError(f"{where}: name: empty")
    try:
        seed = int(row[1])
    except ValueError:
        raise ConfigError(f"{where}: seed: not an integer ({row[1]!r})") from None
    try:
        epoch = int(row[2])
    except ValueError:
        raise ConfigError(f"{where}: epoch: not an integer ({row[2]!r})") from None
    if epoch < 1:
        raise ConfigError(f"{where}: epoch: epochs count from 1 (got {epoch})")
    error = _number(row[3], f"{where}: val_error")
    if not 0 <= error <= 100:
        raise ConfigError(f"{where}: val_error: a percentage in [0, 100] (got {row[3]!r})")
    seconds = _number(row[4], f"{where}: seconds") if width > 4 else None
    if seconds is not None and seconds < 0:
        raise ConfigError(f"{where}: seconds: negative ({row[4]!r})")
    return (name, seed, epoch), (error, seconds)


def _number(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{where}: not a number ({text!r})") from None
    if not math.isfinite(v):
        raise ConfigError(f"{where}: not finite ({text!r})")
    return v


def curve_rows(records: Iterable[Any]) -> list[tuple[str, int, int, float, float | None]]:
    """Every COMPLETE or PRUNED trial's per-epoch errors (a later trial of the same name and seed wins)."""
    out: dict[tuple[str, int, int], tuple[float, float | None]] = {}
    for r in sorted(records, key=lambda r: r.number):
        if r.state not in ("COMPLETE", "PRUNED") or r.seed is None or not r.intermediate:
            continue
        per_epoch = r.train_seconds / max(r.intermediate) if r.train_seconds else None
        for epoch, error in r.intermediate.items():
            out[(r.name, int(r.seed), int(epoch))] = (float(error), per_epoch)
    return [(n, s, e, v, sec) for (n, s, e), (v, sec) in sorted(out.items())]


def write_curves(records: Iterable[Any], out: TextIO) -> int:
    """Write the CSV (with the seconds column when every row has it); returns the number of rows."""
    rows = curve_rows(records)
    timed = bool(rows) and all(r[4] is not None for r in rows)
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*HEADER, "seconds"] if timed else HEADER)
    for n, s, e, v, sec in rows:
        w.writerow([n, s, e, repr(v), f"{sec:.4f}"] if timed else [n, s, e, repr(v)])
    return len(rows)


# ------------------------------------------------------------------------------------------ replay
@dataclass
class Replayed:
    """A search replayed on a table: what it trained, how long that would take, and what it decided."""

    method: str
    requested: list[Job]
    rounds: list[list[Job]]
    answers: list[Answer]
    grid_epochs: int
    simulated_seconds: float
    time_source: str
    race: RaceResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs_trained(self) -> int:
        return sum(j.epoch for j in self.requested)

    def as_json(self) -> dict[str, Any]:
        out = {"method": self.method, "epochs_trained": self.epochs_trained, "grid_epochs": self.grid_epochs,
               "epochs_ratio": self.epochs_trained / self.grid_epochs if self.grid_epochs else None,
               "trials": len(self.requested), "rounds": len(self.rounds),
               "simulated_seconds": round(self.simulated_seconds, 3), "time_source": self.time_source,
               "answers": [as_json(a) for a in self.answers]}
        if self.race is not None:
            out["race"] = race_json(self.race)
        return {**out, **self.extra}


def grid_answers(questions: list[ResolvedQuestion], values: dict[tuple[str, int], float], pool: list[int],
                 level: float) -> list[Answer]:
    """The grid's answers: every question from all pool seeds of its candidates, at the nominal level."""
    by_name: dict[str, dict[int, float]] = {}
    for (name, seed), v in values.items():
        by_name.setdefault(name, {})[seed] = v
    samples = samples_over_pool(by_name, pool)
    return [answer(rq, samples, level=level, seed=i) for i, rq in enumerate(questions)]


def replay(questions: list[ResolvedQuestion], candidates: list[str], pool: list[int], *, method: str,
           settings: RaceSettings, table: CurveTable, slots: int,
           job_seconds: Callable[[Job], float] | None = None) -> Replayed:
    """Replay the study's search on `table` (see the module docstring); missing rows → ConfigError."""
    if method == "race":
        result = race(questions, pool, settings, table.value)
        rounds = [x.jobs for x in result.rounds]
        answers = result.answers
    elif method == "grid":
        rounds = [[Job(n, s, settings.epochs) for s in pool for n in candidates]]
        values = {(j.name, j.seed): table.value(j) for j in rounds[0]}
        answers, result = grid_answers(questions, values, pool, settings.confidence), None
    else:
        raise ConfigError(f"search.method: replay runs method race or grid, not {method}")
    requested = [j for rnd in rounds for j in rnd]
    timed = all(table.seconds(j) is not None for j in requested)
    secs = (lambda j: float(table.seconds(j))) if timed or job_seconds is None else job_seconds
    wall = sum(_makespan([secs(j) for j in rnd], slots) for rnd in rounds)
    source = "the table's seconds" if timed else f"MACs at a nominal {NOMINAL_MACS_PER_S:.0e} MAC/s"
    return Replayed(method, requested, rounds, answers, table.grid_epochs(), wall, source, result)


def _makespan(durations: list[float], slots: int) -> float:
    """Wall time of jobs started in order on `slots` workers, each taking the first free one."""
    free = [0.0] * max(1, slots)
    for d in durations:
        heapq.heapreplace(free, free[0] + d)
    return max(free) if durations else 0.0
