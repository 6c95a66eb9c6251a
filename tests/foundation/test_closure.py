"""Update/weight ratios under ``optimizer.step(closure)`` (Lightning, LBFGS), against plain torch.

The closure does what Lightning's does: zero_grad, forward, backward, then
``monitor.step(loss)``, so the optimizer's pre-step hook fires before the step is
measured. The reference is ``||W_after - W_before|| / ||W_before||`` per parameter,
from copies this test takes itself around each ``optimizer.step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import gradvet


def _net(device: torch.device) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)


def _ratios(model: nn.Module, before: list[torch.Tensor]) -> list[float]:
    return [((p.detach() - b).norm() / b.norm()).item() for p, b in zip(model.parameters(), before)]


def _train(
    model: nn.Module, opt: torch.optim.Optimizer, steps: int, device: torch.device, **overrides: Any
) -> tuple[gradvet.Run, list[int], list[list[float]]]:
    """``steps`` closure steps; returns the run, the first monitor step of each optimizer
    step and the reference ratios of each optimizer step."""
    x, y = torch.randn(16, 4, device=device), torch.randn(16, 1, device=device)
    firsts: list[int] = []
    expected: list[list[float]] = []
    with gradvet.Monitor(model, optimizer=opt, **overrides) as monitor:
        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            monitor.step(loss)
            return loss

        for _ in range(steps):
            firsts.append(monitor.steps)
            before = [p.detach().clone() for p in model.parameters()]
            opt.step(closure)
            expected.append(_ratios(model, before))
    assert monitor.run is not None
    return monitor.run, firsts, expected


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_update_ratio_with_a_closure(device, name):
    model = _net(device)
    run, firsts, expected = _train(model, OPTIMIZERS[name](model.parameters()), 4, device, profile="full")
    assert firsts == [0, 1, 2, 3]
    series = run.series("param/update_ratio")
    assert series.steps.tolist() == firsts
    np.testing.assert_allclose(series.values, np.array(expected), rtol=1e-5, atol=1e-8)


def test_update_ratio_with_a_closure_follows_update_every(device):
    model = _net(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run, _, expected = _train(model, opt, 7, device, profile="full", update_every=3)
    series = run.series("param/update_ratio")
    assert series.steps.tolist() == [0, 3, 6]
    np.testing.assert_allclose(series.values, np.array(expected)[[0, 3, 6]], rtol=1e-5, atol=1e-8)


def test_update_ratio_with_lbfgs(device):
    """LBFGS evaluates the closure several times per step: one ratio per optimizer step,
    at the first monitor step inside it, over the whole step's change of the weights."""
    model = _net(device)
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4, history_size=5)
    run, firsts, expected = _train(model, opt, 3, device, profile="full")
    assert firsts[1] - firsts[0] > 1  # several closure calls per step: the case under test
    series = run.series("param/update_ratio")
    assert series.steps.tolist() == firsts
    np.testing.assert_allclose(series.values, np.array(expected), rtol=1e-5, atol=1e-8)


def test_lbfgs_update_every_counts_monitor_steps(device):
    """With update_every=k, a ratio is taken at the first optimizer step at or after each
    multiple of k (LBFGS's monitor steps jump by several per optimizer step)."""
    model = _net(device)
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3, history_size=5)
    run, firsts, expected = _train(model, opt, 6, device, profile="full", update_every=5)
    series = run.series("param/update_ratio")
    want, next_at = [], 0
    for i, s in enumerate(firsts):
        if s >= next_at:
            want.append(i)
            next_at = (s // 5 + 1) * 5
    assert series.steps.tolist() == [firsts[i] for i in want]
    np.testing.assert_allclose(series.values, np.array(expected)[want], rtol=1e-5, atol=1e-8)


def test_closure_that_does_not_measure_records_no_ratio(device):
    """monitor.step after optimizer.step(closure): nothing measured inside, no stale ratio."""
    model = _net(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4, device=device)
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = model(x).square().mean()
            loss.backward()
            return loss

        for _ in range(2):
            opt.step(closure)
        monitor.step()
    assert monitor.run is not None and monitor.run.get("param/update_ratio") is None
