"""Shared fixtures. Keep each fixture small and independent: several modules' tests rely on this file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CIFAR10_ARCHIVE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz")  # ../shared


@pytest.fixture(scope="session", autouse=True)
def archsearch_cache(tmp_path_factory: pytest.TempPathFactory):
    """Decoded-dataset caches go to a session temp dir, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("archsearch-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHSEARCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def cifar10(archsearch_cache):  # depends on the cache fixture so the cache is redirected first
    """Real CIFAR-10 (from `ARCHSEARCH_DATA`, default the shared archive), decoded once per session."""
    from archsearch.train.data import load_dataset

    if not os.environ.get("ARCHSEARCH_DATA") and not os.path.exists(CIFAR10_ARCHIVE):
        pytest.skip(f"no CIFAR-10: set ARCHSEARCH_DATA or provide {CIFAR10_ARCHIVE}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCHSEARCH_DATA", os.environ.get("ARCHSEARCH_DATA", CIFAR10_ARCHIVE))
        data = load_dataset("cifar10", progress=False)
    return data


@pytest.fixture(scope="module")
def one_thread():  # noqa: ANN201
    """Small tensors: one thread is faster than two on the shared 2-core machine (and not disturbed by it).
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
