"""The trial trainer on real CIFAR-10: beats chance, replays exactly, resumes exactly, fails by name."""

from __future__ import annotations

import json

import pytest
import torch
from networks import NARROW_PROJECTION_NETS
from torch import nn

import archsearch.train.evaluate as evaluate_module
from archsearch.cli import main
from archsearch.errors import ConfigError
from archsearch.nn.build import build
from archsearch.train.augment import Normalizer
from archsearch.train.checkpoint import load_checkpoint, load_checkpoint_metrics
from archsearch.train.config import TrainConfig, lr_factor, make_config
from archsearch.train.evaluate import measure_latency, precise_bn_images, recalibrate_bn
from archsearch.train.loop import NonFiniteLossError, TrainingFailure, TrialOutOfMemoryError, train
from archsearch.train.precision import cpu_has_native_bf16

# A small net, briefly: 2 epochs on 2,000 images in a few seconds on 2 CPU cores. One thread: on a
# shared machine two OpenMP threads wait on each other's time slices (4x slower at load 4).
QUICK = dict(epochs=2, subset=2000, val_size=2000, batch_size=32, lr=0.05, schedule="cosine", latency=False,
             threads=1)
TINY = dict(epochs=1, subset=64, val_size=10, batch_size=32, latency=False, threads=1)
EXACT = ("epoch", "train_loss", "train_error", "val_loss", "val_error", "lr")


def _exact(history):
    return [{k: h[k] for k in EXACT} for h in history]


@pytest.fixture(scope="module")
def run_a(cifar10, tmp_path_factory):
    """One uninterrupted reference run, checkpointed, with test evaluation and latency."""
    ckpt = tmp_path_factory.mktemp("run_a")
    reports = []
    threads = torch.get_num_threads()
    result = train("resnet-8", {**QUICK, "latency": True}, data=cifar10, checkpoint_dir=ckpt,
                   report=lambda e, m: reports.append((e, m)), evaluate_test=True)
    assert torch.get_num_threads() == threads  # the config's thread count is not left behind
    return result, reports, ckpt


def test_beats_chance(run_a):
    result, reports, _ = run_a
    assert result["name"] == "resnet-8" and result["epochs"] == 2
    assert result["val_error"] <= 80.0, result["history"]  # ≥ 2× chance accuracy (10 classes)
    assert result["test_error"] <= 80.0
    assert result["train_images"] == 2000 and result["val_images"] == 2000
    assert result["train_seconds"] > 0 and result["latency_b1_ms"] > 0 and result["latency_b128_ms"] > 0
    assert [e for e, _ in reports] == [1, 2]
    for epoch, m in reports:
        assert m["epoch"] == epoch and 0 <= m["val_error"] <= 100
        for key in ("train_loss", "val_loss", "lr", "epoch_seconds", "images_per_s"):
            assert m[key] > 0 or (key == "lr" and epoch == 2)
    json.dumps({k: v for k, v in result.items()})  # plain values only


def test_checkpoint_holds_history(run_a):
    result, reports, ckpt = run_a
    assert load_checkpoint_metrics(ckpt) == [m for _, m in reports] == result["history"]
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and not list(ckpt.glob("*.tmp"))


def test_same_seed_and_resume_replay_exactly(run_a, cifar10, tmp_path):
    result_a, _, ckpt_a = run_a

    class Stop(Exception):
        pass

    def stop_after_first(epoch, metrics):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train("resnet-8", QUICK, data=cifar10, checkpoint_dir=tmp_path, report=stop_after_first)
    assert load_checkpoint(tmp_path)["epoch"] == 1
    # same seed → the first epoch is bitwise the reference's
    assert _exact(load_checkpoint_metrics(tmp_path)) == _exact(result_a["history"][:1])
    reports = []
    resumed = train("resnet-8", QUICK, data=cifar10, checkpoint_dir=tmp_path,
                    report=lambda e, m: reports.append(e))
    assert reports == [2] and resumed["resumed_from_epoch"] == 1
    assert _exact(resumed["history"]) == _exact(result_a["history"])
    final_a, final_b = load_checkpoint(ckpt_a), load_checkpoint(tmp_path)
    for key, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][key]), key


def test_resume_refuses_another_config(run_a, cifar10):
    _, _, ckpt = run_a
    with pytest.raises(ConfigError, match="lr"):
        train("resnet-8", {**QUICK, "lr": 0.1}, data=cifar10, checkpoint_dir=ckpt)


def test_diverging_run_raises_named_error(cifar10):
    config = dict(epochs=1, subset=256, val_size=100, batch_size=32, lr=1e6, latency=False, threads=1)
    with pytest.raises(NonFiniteLossError, match="epoch 1") as info:
        train("resnet-8", config, data=cifar10)
    assert isinstance(info.value, TrainingFailure) and isinstance(info.value, RuntimeError)
    assert info.value.reason == "non_finite_loss"


class _NaNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3))) * float("nan")


def test_nan_is_caught_after_the_first_step(cifar10):
    with pytest.raises(NonFiniteLossError, match="step 1$"):
        train(_NaNNet(), TINY, data=cifar10)


def test_oom_becomes_named_error(cifar10, monkeypatch):
    class Hungry(_NaNNet):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")

    with pytest.raises(TrialOutOfMemoryError, match="out of memory") as info:
        train(Hungry(), TINY, data=cifar10)
    assert info.value.reason == "out_of_memory" and isinstance(info.value, TrainingFailure)


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="lr_typo"):
        make_config({"lr_typo": 1})
    with pytest.raises(ConfigError, match="milestones"):
        make_config({"milestones": [0.8, 0.5]})
    with pytest.raises(ConfigError, match="amp"):
        make_config({"amp": "fp8"})


def test_amp_off_survives_yaml():
    import yaml

    assert make_config(yaml.safe_load("amp: off")).amp == "off"
    with pytest.raises(ConfigError, match="amp"):
        make_config({"amp": True})


def test_presets_fill_and_yield():
    wrn = make_config({"preset": "wrn"})
    assert (wrn.epochs, wrn.batch_size, wrn.weight_decay, wrn.nesterov, wrn.gamma, wrn.padding) == (
        200, 128, 5e-4, True, 0.2, "reflect")
    assert make_config({"preset": "wrn", "dataset": "svhn"}).epochs == 160
    assert make_config({"preset": "dmrnet", "dataset": "svhn"}).epochs == 40
    mine = make_config({"preset": "dmrnet", "lr": 0.05})
    assert mine.lr == 0.05 and mine.batch_size == 64 and mine.milestones == [0.5, 0.75, 0.875]
    assert make_config(mine, epochs=8).batch_size == 64  # the preset survives an override
    assert make_config({"preset": "warpnet"}).epochs == 204


def _epoch_lrs(config: TrainConfig, steps: int = 10) -> list[float]:
    return [lr_factor(config, e * steps, steps) for e in range(config.epochs)]


def test_step_milestones_scale_with_epochs():
    full = make_config({"preset": "wrn"})
    lrs = _epoch_lrs(full)
    assert [lrs[e] for e in (59, 60, 119, 120, 159, 160)] == pytest.approx([1, 0.2, 0.2, 0.04, 0.04, 0.008])
    short = _epoch_lrs(make_config({"preset": "wrn", "epochs": 10}))
    assert short == pytest.approx([1, 1, 1, 0.2, 0.2, 0.2, 0.04, 0.04, 0.008, 0.008])
    warp = _epoch_lrs(make_config({"preset": "warpnet"}))
    assert [warp[e] for e in (59, 60, 120, 160)] == pytest.approx([1, 0.1, 0.01, 0.001])


def test_warmup_and_cosine():
    c = make_config({"epochs": 4, "schedule": "cosine", "warmup_epochs": 1})
    assert lr_factor(c, 0, 10) == pytest.approx(0.1) and lr_factor(c, 9, 10) == pytest.approx(1.0)
    assert lr_factor(c, 10, 10) == pytest.approx(1.0) and lr_factor(c, 39, 10) < 0.01


def test_measure_latency():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    lat = measure_latency(model, "cpu", budget_s=0.05)
    assert set(lat) == {"latency_b1_ms", "latency_b128_ms"} and min(lat.values()) > 0
    assert model.training  # mode restored


def test_latency_measured_once_per_architecture_and_setting(cifar10, monkeypatch):
    calls = []
    monkeypatch.setattr(evaluate_module, "_LATENCY_SEEN", {})
    monkeypatch.setattr(evaluate_module, "measure_latency",
                        lambda net, *a, **k: calls.append(type(net).__name__) or {"latency_b1_ms": float(len(calls))})
    tiny = {**TINY, "latency": True, "amp": "bf16"}  # explicit: "auto" is fp32 on CPUs without AMX
    first = train("resnet-8", {**tiny, "seed": 0}, data=cifar10)
    again = train("resnet-8", {**tiny, "seed": 1}, data=cifar10)  # another seed: same network, same latency
    assert len(calls) == 1 and first["latency_b1_ms"] == again["latency_b1_ms"] == 1.0
    train("resnet-8", {**tiny, "amp": "off"}, data=cifar10)  # another precision is timed anew
    train("resnet-8", {**tiny, "threads": 2}, data=cifar10)  # and so is another thread count
    train("multiresnet-8-k2", tiny, data=cifar10)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    train(module, tiny, data=cifar10)
    train(module, tiny, data=cifar10)  # a module has no canonical name: always timed
    assert len(calls) == 6


@pytest.mark.parametrize("name", ["multiresnet-8-k2", "wrn-10-2-drop0.3"])
def test_recalibrate_bn_sets_the_mean_of_batch_statistics(cifar10, name):
    torch.manual_seed(0)
    images = cifar10.train_x[:96]
    normalize = Normalizer(cifar10.mean, cifar10.std, torch.device("cpu"))
    nets = {s: build(name, strategy=s) for s in ("loop", "grouped")}  # the grouped one stacks its branch BNs
    nets["grouped"].load_state_dict(nets["loop"].state_dict())
    bn = next(m for m in nets["loop"].modules() if isinstance(m, nn.BatchNorm2d))
    seen = []
    hook = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    for net in nets.values():
        net.eval()
        rng = torch.get_rng_state()
        assert recalibrate_bn(net, images, normalize, batch_size=32) > 0  # 96 images: 3 whole batches
        assert torch.equal(torch.get_rng_state(), rng)  # dropout stayed off: no random numbers drawn
        assert not any(m.training for m in net.modules())  # every mode restored
    hook.remove()
    assert len(seen) == 3
    mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in seen]).mean(0)
    var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in seen]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1
    for (key, a), b in zip(nets["loop"].state_dict().items(), nets["grouped"].state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=key)


def test_precise_bn_sample_is_random_augmented_and_replayable(cifar10):
    """The sample spans the classes of a class-ordered set (the first images did not: 12 points worse on
    a trained network), is augmented like training, depends on (seed, epoch) only, and draws nothing from
    the global generator."""
    images, labels = cifar10.train_x[:512], cifar10.train_y[:512]
    order = labels.argsort(stable=True)
    images, labels = images[order], labels[order]  # class by class, as an image-folder tree is read
    rng = torch.get_rng_state()
    sample = precise_bn_images(images, 128, seed=3, epoch=2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert sample.shape == (128, *images.shape[1:]) and sample.dtype == torch.uint8
    assert torch.equal(sample, precise_bn_images(images, 128, seed=3, epoch=2))
    assert not torch.equal(sample, precise_bn_images(images, 128, seed=3, epoch=3))
    clean = precise_bn_images(images, 128, seed=3, epoch=2, augment=False)  # same draw, no crop or flip
    assert not torch.equal(sample, clean)
    flat = images.flatten(1)
    drawn = [int((flat == x.flatten()).all(1).nonzero()[0]) for x in clean]
    assert len(set(drawn)) == 128 and len(set(labels[drawn].tolist())) == len(set(labels.tolist()))  # every class


def test_precise_bn_changes_only_evaluation(cifar10):
    base = {**TINY, "subset": 256, "val_size": 200, "epochs": 2}
    plain = train("multiresnet-8-k2", base, data=cifar10)
    precise = train("multiresnet-8-k2", {**base, "precise_bn": 128}, data=cifar10)
    assert [h["train_loss"] for h in precise["history"]] == [h["train_loss"] for h in plain["history"]]
    assert precise["val_error"] != plain["val_error"] or precise["val_loss"] != plain["val_loss"]


def test_cli_trains_and_reports_json(cifar10, tmp_path, capsys, monkeypatch):
    spec = tmp_path / "arch.yaml"
    spec.write_text("name: resnet-8\n")
    monkeypatch.setenv("ARCHSEARCH_DATA", cifar10.source)
    argv = ["train", str(spec), "--epochs", "1", "--subset", "256", "--val-size", "200", "--batch-size", "64",
            "--threads", "1", "--out", str(tmp_path / "out"), "--json"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(line)
    assert summary["name"] == "resnet-8" and summary["epochs"] == 1 and "history" not in summary
    # throughput, comparable with any other loop: the training loop's images/s and a whole epoch's seconds
    assert summary["train_images_per_s"] > 0 and summary["epoch_seconds"] > 0
    assert summary["train_images_per_s"] * summary["epoch_seconds"] > summary["train_images"]  # epoch adds validation
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["spec"]["units"] == [1, 1, 1] and len(saved["history"]) == 1
    assert (tmp_path / "out" / "checkpoint.pt").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "resnet-7"], "resnet"),
    (["train", "resnet-8", "--data", "mnist"], "unknown dataset"),
    (["train", "missing.yaml"], "missing.yaml"),
    (["train", "resnet-8", "--epochs", "0"], "epochs"),
    (["train", "resnet-8", "--device", "tpu9"], "device"),
])
def test_cli_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("name", "amp"), [("warpnet-13-1-K2", "bf16"), ("warpnet-19-2-K3-nobn", "bf16"),
                                           ("warpnet-13-1-K2", "off"), ("dmrnet-8", "bf16"),
                                           ("multiresnet-8-k2", "bf16")])
def test_every_family_trains_and_validates(name, amp, cifar10):
    """Autocast reaches every family; the warp operator's forward-mode AD runs in fp32 inside it and
    still works under the validation pass's inference mode."""
    r = train(name, {**TINY, "amp": amp}, data=cifar10)
    assert r["precision"] == {"bf16": "bf16", "off": "fp32"}[amp] and r["channels_last"] is False  # CPU default
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in r["history"])
    assert 0 <= r["val_error"] <= 100


@pytest.mark.parametrize("name", ["warpnet-19-1-K3", "warpnet-13-1-K2"])
def test_warp_operator_in_inference_mode_and_autocast(name):
    """Inference mode gives the no-grad output exactly; bf16 autocast stays within bf16 rounding."""
    torch.manual_seed(0)
    net = build(name, num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x).float()
    with torch.inference_mode():
        assert torch.equal(net(x), ref)
    assert (low - ref).abs().max() <= 0.05 * ref.abs().max()


def test_auto_precision_follows_the_cpu(cifar10):
    auto = train("resnet-8", TINY, data=cifar10, device="cpu")
    assert auto["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")
    off = train("resnet-8", {**TINY, "amp": "off", "channels_last": False}, data=cifar10, device="cpu")
    assert off["precision"] == "fp32" and off["channels_last"] is False


def test_branch_strategy_pinned_and_recorded(cifar10, tmp_path):
    """Which strategy ran is in every epoch's metrics; a pinned one reruns bit for bit and may resume."""
    cfg = {**TINY, "epochs": 2}
    loop_a = train("multiresnet-8-k2", {**cfg, "branch_strategy": "loop"}, data=cifar10)
    loop_b = train("multiresnet-8-k2", {**cfg, "branch_strategy": "loop"}, data=cifar10)
    grouped = train("multiresnet-8-k2", {**cfg, "branch_strategy": "grouped"}, data=cifar10)
    used = [h["branch_strategies"] for h in loop_a["history"]]
    assert used[0].startswith("loop×") and "grouped" not in used[0] and "#" in used[0]
    assert grouped["history"][0]["branch_strategies"].startswith("grouped×")
    assert used == [h["branch_strategies"] for h in loop_b["history"]]
    assert _exact(loop_a["history"]) == _exact(loop_b["history"])
    assert train("resnet-8", TINY, data=cifar10)["history"][0]["branch_strategies"] == ""  # nothing parallel
    # how the functions run is not what is trained: a checkpoint resumes under another strategy

    class Stop(Exception):
        pass

    def stop_after_first(epoch, metrics):
        raise Stop

    with pytest.raises(Stop):
        train("multiresnet-8-k2", {**cfg, "branch_strategy": "loop"}, data=cifar10, checkpoint_dir=tmp_path,
              report=stop_after_first)
    resumed = train("multiresnet-8-k2", {**cfg, "branch_strategy": "grouped"}, data=cifar10, checkpoint_dir=tmp_path)
    assert resumed["resumed_from_epoch"] == 1 and resumed["history"][-1]["branch_strategies"].startswith("grouped")


_TRAIN_NARROW = """
import json, sys
from archsearch.train import load_dataset, train
data = load_dataset("cifar10", progress=False)
for name in sys.argv[2:]:
    r = train(name, dict(epochs=1, subset=128, val_size=10, batch_size=64, latency=False, threads=int(sys.argv[1])),
              data=data, device="cpu")
    print(json.dumps({"name": name, "channels_last": r["channels_last"], "loss": r["history"][-1]["train_loss"]}))
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_defaults_train_narrow_projection_nets(threads, cifar10):
    """Every family's narrow strided 1x1 projections (< 8 input channels) train one epoch in the CPU defaults.

    oneDNN's AVX2 channels_last backward of such a convolution corrupts the heap (1 thread) or hangs (2 threads);
    ONEDNN_MAX_CPU_ISA=AVX2 makes an AVX-512 machine take that kernel too. A child process, so a crash is a
    failure here, not the end of the test session."""
    import math
    import os
    import subprocess
    import sys

    from conftest import CIFAR10_ARCHIVE

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2",
           "ARCHSEARCH_DATA": os.environ.get("ARCHSEARCH_DATA", CIFAR10_ARCHIVE)}
    proc = subprocess.run([sys.executable, "-c", _TRAIN_NARROW, str(threads), *NARROW_PROJECTION_NETS],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["name"] for r in rows] == NARROW_PROJECTION_NETS
    assert all(r["channels_last"] is False and math.isfinite(r["loss"]) for r in rows)
