"""Gradient accumulation: four micro-batches measure exactly like one big batch."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import gradvet


def _model(device):
    model = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.Sigmoid(), nn.Linear(6, 3)
    ).to(device)
    with torch.no_grad():
        # unit k < 4 fires only for inputs with x[:, k] > 0: only in micro-batch k below;
        # units 4..7 never fire. Per micro-batch 7/8 are dead, over the whole batch 1/2.
        model[0].weight.zero_()
        model[0].weight[:4, :4] = torch.eye(4) * 3.0
        model[0].bias[:4] = -1.0
        model[0].bias[4:] = -100.0
        model[2].weight.mul_(6.0)  # some sigmoid saturation
    return model


def _micro_batches(device):
    xs, ys = [], []
    for k in range(4):
        x = -torch.rand(4, 4, device=device)
        x[:, k] = 1.0 + torch.rand(4, device=device)
        xs.append(x)
        ys.append(torch.randint(0, 3, (4,), device=device))
    return xs, ys


def test_accumulated_micro_batches_equal_one_concatenated_batch(device):
    base = _model(device)
    xs, ys = _micro_batches(device)
    accum, whole = copy.deepcopy(base), copy.deepcopy(base)
    with gradvet.Monitor(accum, profile="full") as m_acc:
        losses = []
        for x, y in zip(xs, ys):
            loss = F.cross_entropy(accum(x), y) / 4
            loss.backward()
            losses.append(loss.detach())
        m_acc.step(sum(losses))
    with gradvet.Monitor(whole, profile="full") as m_whole:
        loss = F.cross_entropy(whole(torch.cat(xs)), torch.cat(ys))
        loss.backward()
        m_whole.step(loss)
    a, b = m_acc.run, m_whole.run
    assert a.metrics == b.metrics
    for metric in a.metrics:
        np.testing.assert_allclose(
            a.series(metric).values, b.series(metric).values, rtol=1e-5, atol=1e-7, err_msg=metric
        )
    assert a.series("layer/dead_frac").values[0, 1] == 0.5
    assert 0 < a.series("layer/sat_frac").values[0, 3] < 1


def test_forward_without_grad_between_steps_is_not_measured(device):
    """A validation pass under no_grad/inference_mode must not leak into the next step's statistics."""
    base = _model(device)
    xs, ys = _micro_batches(device)
    runs = []
    for validate in (False, True):
        model = copy.deepcopy(base)
        with gradvet.Monitor(model, profile="full") as monitor:
            for x, y in zip(xs, ys):
                model.zero_grad()
                F.cross_entropy(model(x), y).backward()
                monitor.step()
                if validate:
                    with torch.no_grad():
                        model(torch.full((8, 4), 50.0, device=device))  # every unit fires
                    with torch.inference_mode():
                        model(torch.full((8, 4), -50.0, device=device))
        runs.append(monitor.run)
    plain, validated = runs
    for metric in plain.metrics:
        np.testing.assert_array_equal(
            validated.series(metric).values, plain.series(metric).values, err_msg=metric
        )
