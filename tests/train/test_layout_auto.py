"""`train.channels_last: auto` on CPU: a child-process probe keeps a crashing NHWC kernel out of the trial."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.train import layout
from archsearch.train.config import make_config
from archsearch.train.loop import train

NARROW = "dmrnet-8-K3-c6.14.28"  # strided 1x1 projections with 6 input channels: oneDNN AVX2 NHWC backward crashes


def tree_32(root: Path, per_class: int = 40) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for c, cls in enumerate(("ant", "zebra")):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 2):
                Image.new("RGB", (32, 32), (100 * c + i, 50, 200 - i)).save(d / f"{i}.png")
    return root


CONFIG = {"epochs": 1, "batch_size": 64, "val_size": 8, "threads": 1, "channels_last": "auto", "latency": False}


def test_auto_picks_nchw_when_channels_last_crashes_and_reuses_the_verdict(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN's AVX2 kernels in the probe's child process
    data = tree_32(tmp_path / "toy")
    result = train(NARROW, CONFIG, data=data, device="cpu")
    assert result["channels_last"] is False and result["epochs"] == 1
    assert "channels_last crashed the probe" in result["channels_last_reason"], result["channels_last_reason"]
    assert result["history"][0]["channels_last_reason"] == result["channels_last_reason"]  # what a trial records
    cached = json.loads((tmp_path / "cache" / "memory_layout.json").read_text())
    [verdict] = cached.values()
    assert verdict["channels_last"] is False

    def no_child(*args, **kwargs):
        raise AssertionError("probed again although a verdict is cached")

    monkeypatch.setattr(layout.subprocess, "run", no_child)
    again = train(NARROW, CONFIG, data=data, device="cpu")
    assert again["channels_last"] is False and again["channels_last_reason"].endswith("(cached)")


def test_layout_settings(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(layout, "choose_channels_last", lambda *a: (True, "probed"))
    assert layout.resolve_layout(None, cpu, "resnet-8", (3, 32, 32), 64, 10) == (
        False, "CPU default: NCHW (train.channels_last: auto probes channels_last)")
    assert layout.resolve_layout("auto", cpu, "resnet-8", (3, 32, 32), 64, 10) == (True, "probed")
    assert layout.resolve_layout("auto", cuda, "resnet-8", (3, 32, 32), 64, 10)[0] is True
    assert layout.resolve_layout(False, cuda, "resnet-8", (3, 32, 32), 64, 10) == (False, "train.channels_last: false")
    assert layout.resolve_layout("auto", cpu, None, (3, 32, 32), 64, 10)[0] is False
    assert make_config({"channels_last": "auto"}).channels_last == "auto"
    with pytest.raises(ConfigError, match="channels_last"):
        make_config({"channels_last": "sometimes"})


def test_a_hanging_probe_means_nchw(monkeypatch) -> None:
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 1)

    monkeypatch.setattr(layout.subprocess, "run", hang)
    verdict = layout.probe(NARROW, (3, 32, 32), 64, 2, 10, timeout=1)
    assert verdict["channels_last"] is False and "hung" in verdict["reason"]
