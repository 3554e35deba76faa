"""`train.model_parallel` in the trainer: a run spread over two device entries replays the one-device run."""

from __future__ import annotations

import pytest

from archsearch.errors import ConfigError
from archsearch.train import make_config, train

TINY = dict(epochs=1, subset=64, val_size=32, batch_size=32, latency=False, threads=1, branch_strategy="loop")


def test_a_model_parallel_run_equals_the_single_device_run(cifar10) -> None:
    one = train("multiresnet-8-k2", TINY, data=cifar10)
    two = train("multiresnet-8-k2", {**TINY, "model_parallel": ["cpu", "cpu"]}, data=cifar10)
    assert two["device"] == "cpu"
    for key in ("train_loss", "val_loss", "val_error"):
        assert two[key] == one[key]


def test_model_parallel_entries_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"model_parallel.0: String should match pattern"):
        make_config(model_parallel=["gpu0"])
    assert make_config(model_parallel=["cuda:0", "cuda:1"]).model_parallel == ["cuda:0", "cuda:1"]
