"""The training loop of the training-sweep tests: a corpus case trained under a Monitor, as
``bench/train_sweep.py`` trains it, with hooks for the plain-PyTorch measurements each test makes."""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import pytest
import torch

import gradvet
from gradvet.corpus import call, cases


def build(case_id: str) -> Any:
    """``(model, (inputs, targets), loss_fn)`` of corpus case ``case_id`` (seed 0), on 1 thread; the test is
    skipped where the case's library is not installed."""
    torch.set_num_threads(1)
    case = next(c for c in cases() if c.id == case_id)
    if not case.available:
        pytest.skip(f"{case.library} not installed")
    return case.build(0)


def adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3)


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def train(
    case_id: str,
    make_optimizer: Callable[[Any], torch.optim.Optimizer],
    steps: int,
    *,
    profile: Optional[str] = None,
    after_backward: Optional[Callable[[int, torch.nn.Module, torch.Tensor], None]] = None,
    after_step: Optional[Callable[[int, torch.nn.Module], None]] = None,
) -> tuple[torch.nn.Module, np.ndarray, gradvet.Monitor]:
    """Train ``case_id`` for ``steps`` steps under a Monitor (``profile``; default: the default profile).

    ``after_backward(step, model, loss)`` runs after ``monitor.step``, before ``optimizer.step``;
    ``after_step(step, model)`` after ``optimizer.step``. Returns the model, the losses and the monitor.
    """
    model, (x, y), loss_fn = build(case_id)
    opt = make_optimizer(model.parameters())
    losses = []
    with gradvet.Monitor(model, optimizer=opt, profile=profile) as mon:
        for step in range(steps):
            opt.zero_grad()
            loss = loss_fn(call(model, x), y)
            loss.backward()
            mon.step(loss)
            if after_backward is not None:
                after_backward(step, model, loss)
            opt.step()
            if after_step is not None:
                after_step(step, model)
            losses.append(float(loss))
    return model, np.asarray(losses), mon
