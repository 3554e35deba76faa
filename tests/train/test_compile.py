"""`compile`: when a trial compiles its step, and a compile that fails (or succeeds) changes no trained number."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

import archsearch.train.loop as loop_module
from archsearch.train.compiling import COMPILE_MIN_STEPS, resolve_compile, warm_up
from archsearch.train.config import make_config
from archsearch.train.loop import train

TINY = dict(epochs=2, subset=128, val_size=64, batch_size=32, latency=False, threads=1)
CPU = torch.device("cpu")


@pytest.mark.parametrize(("setting", "device", "amp", "steps", "family", "want", "why"), [
    (True, "cpu", None, 1, "dmrnet", True, "compile: on (config)"),
    (False, "cpu", None, 10**6, "resnet", False, "compile: off (config)"),
    ("auto", "cpu", None, COMPILE_MIN_STEPS, "resnet", True, "auto: compiled, fp32 CPU"),
    ("auto", "cpu", None, COMPILE_MIN_STEPS, "warpnet", True, "warpnet measured"),
    ("auto", "cpu", None, 10**6, "dmrnet", False, "compiling dmrnet was not measured to pay"),
    ("auto", "cpu", None, 10**6, None, False, "this network"),
    ("auto", "cpu", None, COMPILE_MIN_STEPS - 1, "resnet", False, "to pay back the compile"),
    ("auto", "cpu", torch.bfloat16, 10**6, "resnet", False, "under autocast"),
    ("auto", "cuda", None, 10**6, "resnet", False, "eager on cuda"),
])
def test_auto_compiles_long_fp32_cpu_trials_of_measured_families_only(setting, device, amp, steps, family, want, why):
    compiled, reason = resolve_compile(setting, torch.device(device), amp, steps, family)
    assert compiled is want and why in reason


def test_auto_keeps_networks_with_narrow_strided_pointwise_convolutions_eager():
    """inductor runs a CPU graph's convolutions channels_last, whose AVX2 kernel crashes narrow strided 1x1s."""
    from archsearch.nn.build import build
    from archsearch.train.compiling import narrow_strided_pointwise

    narrow = narrow_strided_pointwise(build("resnet-56-c7.13.27-proj", num_classes=10))
    assert narrow is not None and "7->13, 1x1 stride 2" in narrow
    assert narrow_strided_pointwise(build("resnet-20", num_classes=10)) is None  # option-A (pad) shortcuts
    assert narrow_strided_pointwise(build("resnet-20-proj", num_classes=10)) is None  # 16 input channels
    grouped = nn.Sequential(nn.Conv2d(32, 64, 1, stride=2, groups=4))  # 8 input channels per group
    assert "32->64, 1x1 stride 2, 4 groups" in narrow_strided_pointwise(grouped)
    assert narrow_strided_pointwise(nn.Sequential(nn.Conv2d(8, 16, 1, stride=1))) is None  # not strided
    compiled, reason = resolve_compile("auto", CPU, None, 10**6, "resnet", narrow)
    assert not compiled and "7->13" in reason and "crashes" in reason
    assert resolve_compile(True, CPU, None, 10**6, "resnet", narrow)[0]  # asked for explicitly: compiled


def test_compile_setting_is_checked():
    assert make_config().compile == "auto"
    assert make_config(compile=True).compile is True
    with pytest.raises(Exception, match="compile"):
        make_config(compile="sometimes")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def test_warm_up_failure_leaves_the_network_and_generator_as_they_were():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(8, 3, 8, 8)
    rng = torch.get_rng_state()

    def broken(model):
        model(x)  # BN statistics move and dropout draws, then the "compiler" fails
        raise RuntimeError("backend compiler failed\nlong traceback")

    ok, seconds, error = warm_up(net, net, broken)
    assert not ok and seconds >= 0 and error == "RuntimeError: backend compiler failed"
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in net.parameters())


def _train_with(monkeypatch, cifar10, compiler):
    monkeypatch.setattr(loop_module.torch, "compile", compiler)
    return train("resnet-8", {**TINY, "compile": True}, data=cifar10)


def test_failed_compile_trains_eagerly_and_says_why(monkeypatch, cifar10):
    eager = train("resnet-8", {**TINY, "compile": False}, data=cifar10)
    assert eager["compiled"] is False and eager["compile_reason"] == "compile: off (config)"

    def failing(net, **options):
        def call(x):
            net(x)
            raise RuntimeError("inductor: no C++ compiler")
        return call

    failed = _train_with(monkeypatch, cifar10, failing)
    assert failed["compiled"] is False
    assert failed["compile_reason"] == "compile failed, eager: RuntimeError: inductor: no C++ compiler"
    assert failed["history"][0]["compile_reason"] == failed["compile_reason"]  # what a trial records
    # the failed warm-up step left no trace: the same numbers as the eager run
    for a, b in zip(failed["history"], eager["history"], strict=True):
        assert (a["train_loss"], a["val_error"]) == (b["train_loss"], b["val_error"])

    worked = _train_with(monkeypatch, cifar10, lambda net, **options: net)  # a "compiler" that changes nothing
    assert worked["compiled"] is True and worked["compile_seconds"] >= 0
    assert [h["train_loss"] for h in worked["history"]] == [h["train_loss"] for h in eager["history"]]
    assert worked["threads"] == 1


def test_trials_compile_with_the_measured_inductor_options_and_record_them(monkeypatch, cifar10):
    from archsearch.train.compiling import INDUCTOR_OPTIONS

    seen = []

    def capture(net, **kwargs):
        seen.append(kwargs)
        return net

    worked = _train_with(monkeypatch, cifar10, capture)
    assert seen == [{"dynamic": False, "options": INDUCTOR_OPTIONS}]
    assert worked["compile_options"] == INDUCTOR_OPTIONS == {"realize_reads_threshold": 1}
    assert worked["compile_reason"] == "compile: on (config); inductor realize_reads_threshold=1"  # what Optuna keeps
    assert train("resnet-8", {**TINY, "compile": False}, data=cifar10)["compile_options"] is None


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="inductor needs a C++ compiler")
def test_a_compiled_step_computes_what_the_eager_step_computes():
    """The inductor options change which intermediates are stored, not the arithmetic: same loss and gradients."""
    from archsearch.nn.build import build
    from archsearch.train.compiling import compile_module

    torch.manual_seed(0)
    net = build("resnet-8", num_classes=10)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))

    def step(model):
        net.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters()]

    state = {k: v.clone() for k, v in net.state_dict().items()}
    eager_loss, eager_grads = step(net)
    eager_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)  # the eager step moved BN's running statistics
    compiled_loss, compiled_grads = step(compile_module(net))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    moved = [k for k in state if "running" in k]
    assert moved and not torch.equal(eager_state[moved[0]], state[moved[0]])
    for k, v in net.state_dict().items():  # the compiled step moved BN's statistics as the eager one did
        torch.testing.assert_close(v, eager_state[k], rtol=1e-5, atol=1e-6)
