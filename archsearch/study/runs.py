"""Where a study's results live: one resolution of the results folder for every command.

--runs-dir DIR > ARCHSEARCH_RUNS > runs/ in the working directory. `run`, `dashboard`, `report` and
`export` all read a study file through `archsearch.study.config.load_study`, which calls this, so a
`--resume` from another directory finds the study only when the folder is named explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

RUNS_DIR = "runs"
RUNS_ENV = "ARCHSEARCH_RUNS"  # the results folder, when --runs-dir is not given


def resolve_runs_dir(runs_dir: str | os.PathLike | None = None, cwd: Path | None = None) -> tuple[Path, str]:
    """The results folder and where it comes from: --runs-dir > ARCHSEARCH_RUNS > runs/ in the working directory.

    One function for `run`, `dashboard`, `report` and `export`, so all of them find the same folder.
    """
    base = (cwd or Path.cwd()).resolve()
    if runs_dir:
        return (base / Path(runs_dir).expanduser()).resolve(), "--runs-dir"
    env = os.environ.get(RUNS_ENV)
    if env:
        return (base / Path(env).expanduser()).resolve(), RUNS_ENV
    return base / RUNS_DIR, f"the working directory {base}"
