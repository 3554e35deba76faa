"""The calibration `run --dry-run` estimates from: measured seconds per image, cached per machine and settings."""

from __future__ import annotations

import pytest
import torch

from archsearch.cache import cache_dir
from archsearch.train import calibrate as cal
from archsearch.train.config import make_config


def test_calibration_times_once_then_reads_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(batch_size=8, amp="off")
    lines: list[str] = []
    first = cal.calibrate(["resnet-8"], config, torch.device("cpu"), threads=1, progress=lines.append)
    t = first["resnet-8"]
    assert t["train_s_per_image"] > 0 and t["eval_s_per_image"] > 0
    assert lines and "calibrating 1/1: resnet-8 on cpu (batch 8, 1 thread(s))" in lines[0]
    assert (cache_dir() / cal.CACHE_FILE).is_file()

    def must_not_time(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("timed again although cached")

    monkeypatch.setattr(cal, "time_network", must_not_time)
    lines.clear()
    assert cal.calibrate(["resnet-8"], config, torch.device("cpu"), threads=1, progress=lines.append) == first
    assert lines == []
    with pytest.raises(AssertionError):  # another batch size is another key: timed anew
        cal.calibrate(["resnet-8"], make_config(batch_size=16, amp="off"), torch.device("cpu"), threads=1)
