"""Model parallelism (`train.model_parallel`): same outputs and gradients; placement and transfers checked."""

from __future__ import annotations

import copy

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.nn.build import build
from archsearch.nn.parallel import place, placement, record_transfers

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py



def _grads(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name,k", [("multiresnet-8-k3", 3), ("dmrnet-8-K2", 2), ("warpnet-13-1-K2-v2", 2),
                                    ("dvanet-8-K3-w2", 3)])
def test_two_cpu_entries_give_the_same_outputs_and_gradients(name: str, k: int) -> None:
    torch.manual_seed(0)
    single = build(name, strategy="loop")
    spread = place(copy.deepcopy(single), ["cpu", "cpu"])
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1])
    outs = []
    for net in (single, spread):
        net.train()
        out = net(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        outs.append(out)
    with record_transfers() as moves:
        spread(x)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    ga, gb = _grads(single), _grads(spread)
    assert ga.keys() == gb.keys() and len(ga) == len(list(single.parameters()))
    for key in ga:
        torch.testing.assert_close(gb[key], ga[key], rtol=0, atol=0)
    assert spread.state_dict().keys() == single.state_dict().keys()
    # placement: function i of every unit on entry i mod 2; each sends its input there and its output home
    where = placement(spread)
    assert where and all(entry == int(key.rsplit(".", 1)[1]) % 2 for key, entry in where.items())
    units = {key.rsplit(".", 1)[0] for key in where}
    assert all(sum(k_.startswith(u + ".") for k_ in where) == k for u in units)
    assert {entry for entry, _ in moves} == {0, 1}
    assert sum(entry == 1 for entry, _ in moves) > 0
    assert sum(entry == 0 for entry, _ in moves) >= sum(entry == 1 for entry, _ in moves)


def test_parameters_go_to_their_function_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (fake) second device, each function's parameters are moved there, the rest stays on the first."""
    net = build("multiresnet-8-k2", strategy="loop")
    moved: dict[int, str] = {}
    real_to = torch.nn.Module.to

    def recorded_to(self: torch.nn.Module, *args: object, **kwargs: object) -> torch.nn.Module:
        moved[id(self)] = str(args[0]) if args else str(kwargs.get("device"))
        return real_to(self, torch.device("cpu"))

    monkeypatch.setattr(torch.nn.Module, "to", recorded_to)
    monkeypatch.setattr("archsearch.nn.parallel._usable", lambda d: torch.device(d))
    place(net, ["cpu", "meta"])
    for unit in net.body:
        first, second = unit.functions.branches
        assert moved[id(first)] == "cpu" and moved[id(second)] == "meta"
        assert unit.functions.devices == [torch.device("cpu"), torch.device("meta")]
    assert moved[id(net)] == "cpu"


def test_a_missing_cuda_device_is_one_line() -> None:
    n = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=rf"train.model_parallel: cuda:{n} is not here: this machine has {n} CUDA"):
        place(build("multiresnet-8-k2"), ["cpu", f"cuda:{n}"])


def test_the_benchmark_says_when_there_are_not_two_gpus(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "parallel.py"
    spec = importlib.util.spec_from_file_location("parallel_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert bench.main([]) == 0
    assert capsys.readouterr().out == ("benchmarks/parallel.py: model parallelism needs at least 2 GPUs, this "
                                       "machine has 1; nothing measured\n")
