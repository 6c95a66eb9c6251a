"""A Monitor given Accelerate's prepared optimizer, against the same loop measured with plain torch.

``accelerator.prepare(optimizer)`` returns an ``AcceleratedOptimizer``: a ``torch.optim.Optimizer``
subclass without the hook tables of one, so ``Monitor(optimizer=...)`` raised ``AttributeError``
on entering. The Monitor now hooks the optimizer it wraps, whose ``step()`` runs only on the
micro-batch that completes an accumulated gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

accelerate = pytest.importorskip("accelerate")

import gradvet  # noqa: E402
from gradvet._validate import unwrap_optimizer  # noqa: E402

ACCUM, MICRO = 2, 8


def _loop(monitored: bool) -> tuple[list[float], list[list[float]], list[list[float]], object]:
    torch.manual_seed(0)
    acc = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=ACCUM)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.AdamW(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 8, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(MICRO)]
    model, opt = acc.prepare(model, opt)
    losses, norms, ratios = [], [], []
    monitor = gradvet.Monitor(model, optimizer=opt, profile="full") if monitored else None
    with monitor if monitor is not None else torch.enable_grad():
        for x, y in data:
            with acc.accumulate(model):
                loss = nn.functional.cross_entropy(model(x), y)
                acc.backward(loss)
                if acc.sync_gradients:
                    losses.append(loss.item())
                    norms.append([p.grad.norm().item() for p in model.parameters()])
                    if monitor is not None:
                        monitor.step(loss)
                    before = [p.detach().clone() for p in model.parameters()]
                opt.step()
                if acc.sync_gradients:
                    ratios.append([((p.detach() - b).norm() / b.norm()).item()
                                   for p, b in zip(model.parameters(), before)])
                opt.zero_grad()
    return losses, norms, ratios, monitor


def test_a_monitor_on_accelerates_prepared_optimizer_measures_every_real_step():
    losses, norms, ratios, monitor = _loop(monitored=True)
    run = monitor.run  # type: ignore[attr-defined]
    assert len(losses) == MICRO // ACCUM
    assert run.series("loss").steps.tolist() == list(range(MICRO // ACCUM))
    np.testing.assert_allclose(run.series("loss").values, losses, rtol=1e-6)
    np.testing.assert_allclose(run.series("param/grad_norm").values, norms, rtol=1e-5)
    # update ratios from the wrapped optimizer's hooks, once per real step (never on a skipped micro-batch)
    u = run.series("param/update_ratio")
    assert u.steps.tolist() == list(range(MICRO // ACCUM))
    np.testing.assert_allclose(u.values, ratios, rtol=1e-5)
    assert run.meta["optimizer"] == "AdamW"


def test_the_monitor_does_not_change_the_run():
    plain = _loop(monitored=False)
    monitored = _loop(monitored=True)
    assert plain[0] == monitored[0] and plain[2] == monitored[2]


def test_wrappers_are_read_through_and_optimizers_are_not():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    acc = accelerate.Accelerator(cpu=True)
    wrapped = acc.prepare(opt)
    assert not hasattr(wrapped, "_optimizer_step_pre_hooks")  # what made register_step_pre_hook fail
    assert unwrap_optimizer(wrapped) is opt and unwrap_optimizer(opt) is opt
    pl = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.core.optimizer import LightningOptimizer

    assert unwrap_optimizer(LightningOptimizer(opt)) is opt
    monitor = gradvet.Monitor(model, optimizer=LightningOptimizer(opt))
    assert monitor.optimizer is opt
    del pl
