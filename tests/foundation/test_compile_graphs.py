"""A compiled model under a Monitor keeps its one graph and compiles it once (gradvet issue 13).

Counted with dynamo's own counters (``unique_graphs``, ``calls_captured``), against the same model
compiled without a Monitor: measured steps run eagerly (``gradvet._compiled``), the others run the
compiled graph, into which gradvet's hook gates trace to nothing.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet
from gradvet.config import PROFILES

pytestmark = pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"), reason="needs torch >= 2.6")


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln, self.fc1, self.act, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.ln(x))))


class _Net(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.emb = nn.Linear(5, d)
        self.blocks = nn.Sequential(*[_Block(d) for _ in range(3)])
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.blocks(self.emb(x))))


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 5, generator=gen), torch.randint(0, 3, (6,), generator=gen)) for _ in range(4)]


def _train(model: nn.Module, steps: int, profile=None, data=None, compile: bool = True):
    """SGD steps of ``model`` (compiled with the eager backend, from a fresh dynamo) over ``data`` in turn,
    under a Monitor of ``profile`` (None: none); dynamo's stats after each step, and the Monitor."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    run = torch.compile(model, backend="eager") if compile else model
    opt = torch.optim.SGD(run.parameters(), lr=0.05)
    data = data if data is not None else _data()
    graphs = []
    monitor = gradvet.Monitor(run, optimizer=opt, profile=profile) if profile is not None else None
    with monitor if monitor is not None else contextlib.nullcontext():
        for s in range(steps):
            x, y = data[s % len(data)]
            opt.zero_grad()
            loss = F.cross_entropy(run(x), y)
            loss.backward()
            if monitor is not None:
                monitor.step(loss)
            opt.step()
            graphs.append(dict(counters["stats"]))
    return graphs, monitor


def test_economy_keeps_one_graph_and_compiles_once() -> None:
    torch.manual_seed(0)
    model = _Net()
    plain, _ = _train(copy.deepcopy(model), 3)
    monitored, monitor = _train(model, 103, profile="economy")
    assert plain[-1]["unique_graphs"] == 1
    # the first step is measured (eager, nothing compiled); the second compiles the model's one graph;
    # nothing is compiled after it, measured steps (50, 100) included
    assert monitored[0] == {}
    assert monitored[1] == plain[-1]
    assert all(g == plain[-1] for g in monitored[1:])
    assert torch._dynamo.eval_frame._stance.stance == "default"  # restored on close
    run = monitor.run
    assert list(run.series("layer/grad_norm").steps) == [0, 50, 100]


def test_measured_steps_match_the_uncompiled_model() -> None:
    torch.manual_seed(0)
    model = _Net()
    reference = copy.deepcopy(model)
    cfg = PROFILES["economy"].replace(layer_every=3)
    _, monitor = _train(model, 7, profile=cfg)
    torch._dynamo.reset()
    opt = torch.optim.SGD(reference.parameters(), lr=0.05)
    data = _data()
    want: dict[int, list[float]] = {}
    # the compiled model's layers are its _orig_mod's (the root: "_orig_mod")
    names = [layer["name"].removeprefix("_orig_mod").removeprefix(".") for layer in monitor.run.layers]
    for s in range(7):
        x, y = data[s % len(data)]
        outs: dict[str, torch.Tensor] = {}

        def keep(o: torch.Tensor, n: str, outs: dict[str, torch.Tensor] = outs) -> None:
            o.retain_grad()
            outs[n] = o

        hooks = [
            m.register_forward_hook(lambda m, a, o, n=n: keep(o, n))
            for n, m in reference.named_modules()
            if n in names
        ]
        opt.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        for h in hooks:
            h.remove()
        if s % 3 == 0:
            want[s] = [float(outs[n].grad.norm()) if n in outs else np.nan for n in names]
        opt.step()
    got = monitor.run.series("layer/grad_norm")
    assert list(got.steps) == [0, 3, 6]
    for row, s in zip(got.values, got.steps):
        np.testing.assert_allclose(row, want[int(s)], rtol=1e-5)


def test_two_monitors_restore_the_stance_in_any_order() -> None:
    torch.compile(nn.Linear(2, 2), backend="eager")  # dynamo imported: the stance is switched
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    ma, mb = gradvet.Monitor(a, profile="full"), gradvet.Monitor(b, profile="full")
    ma.__enter__()
    mb.__enter__()
    assert torch._dynamo.eval_frame._stance.stance == "force_eager"
    ma.close()
    assert torch._dynamo.eval_frame._stance.stance == "force_eager"  # b still measures
    mb.close()
    assert torch._dynamo.eval_frame._stance.stance == "default"


def test_a_torchvision_resnet_keeps_its_graph_and_its_measurements() -> None:
    # a model other people wrote: BatchNorm, in-place ReLUs, residual adds in forward()
    import torchvision

    def resnet() -> nn.Module:
        torch.manual_seed(0)
        return torchvision.models.resnet18(num_classes=10)

    gen = torch.Generator().manual_seed(2)
    data = [(torch.randn(4, 3, 32, 32, generator=gen), torch.randint(0, 10, (4,), generator=gen))]
    plain, _ = _train(resnet(), 2, data=data)
    graphs, mon = _train(resnet(), 52, profile="economy", data=data)
    assert plain[-1]["unique_graphs"] == 1
    assert graphs[1:] == [plain[-1]] * 51  # one graph, compiled at step 1, never again
    got = mon.run.series("layer/grad_norm")
    assert list(got.steps) == [0, 50]
    _, twin = _train(resnet(), 1, profile="economy", data=data, compile=False)  # same init and batch
    np.testing.assert_allclose(got.values[0], twin.run.series("layer/grad_norm").values[0], rtol=1e-4)
