"""gradvet lets go of the model: after ``check``, a closed Monitor and ``treat``, nothing of gradvet keeps
the model (or its autograd graph) alive.

Before the fix, the model's output was held by the taps past the end of the forward; its graph's hooks
hold the taps, and the taps the output: a cycle through autograd's C++ nodes that the garbage collector
cannot see, so every ``check`` leaked its model (the corpus tests grew to 22 GB of memory).
"""

from __future__ import annotations

import gc
import weakref

import torch
import torch.nn.functional as F
from torch import nn

import gradvet


class _Net(nn.Module):
    """A model class of its own, as real ones are (a bare ``nn.Sequential`` root is not a tapped layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Sigmoid())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x) + 0.5)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return _Net()


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 8, generator=g), torch.randint(0, 3, (6,), generator=g)


def _gone(ref: weakref.ref) -> bool:
    gc.collect()
    return ref() is None


def test_check_lets_go_of_the_model() -> None:
    model = _model()
    ref = weakref.ref(model)
    report = gradvet.check(model, _batch(), F.cross_entropy)
    assert report.findings is not None
    del model
    assert _gone(ref)


def test_closed_monitor_lets_go_of_the_model() -> None:
    model = _model()
    ref = weakref.ref(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch()
    with gradvet.Monitor(model, optimizer=opt, profile="full") as mon:
        for _ in range(3):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            mon.step(loss)
            opt.step()
    run = mon.load()
    assert len(run.steps) == 3
    del model, opt, mon, loss
    assert _gone(ref)


def test_treat_lets_go_of_the_model_and_its_copies() -> None:
    model = _model()
    ref = weakref.ref(model)
    result = gradvet.treat(model, _batch(), F.cross_entropy)
    treated = weakref.ref(result.model)
    del model, result
    assert _gone(ref) and _gone(treated)
    assert not [o for o in gc.get_objects() if type(o).__name__ == "LayerTaps"]
