"""Property tests: random MLPs, every recorded statistic against the recomputation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import gradvet

from ._reference import (
    dead_fraction,
    expected_layer_stats,
    layer_value,
    monitored_step,
    reference_outputs,
    twin,
)
from .conftest import DEVICE

pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(),
    reason="GRADVET_TEST_DEVICE=cuda without CUDA",
)

ACTS = {
    "relu": (nn.ReLU, None),
    "relu_inplace": (lambda: nn.ReLU(inplace=True), None),
    "tanh": (nn.Tanh, lambda y: 1 - y * y < 0.1),
    "sigmoid": (nn.Sigmoid, lambda y: y * (1 - y) < 0.025),
    "leaky": (nn.LeakyReLU, None),
    "none": (None, None),
}


@st.composite
def mlps(draw):
    depth = draw(st.integers(1, 5))
    widths = draw(st.lists(st.integers(1, 32), min_size=depth + 1, max_size=depth + 1))
    act = draw(st.sampled_from(sorted(ACTS)))
    batch = draw(st.integers(1, 16))
    scale = draw(st.sampled_from([0.5, 1.0, 4.0]))  # 4.0 saturates / kills units
    seed = draw(st.integers(0, 2**16))
    return widths, act, batch, scale, seed


def _build(widths, act, scale, seed):
    torch.manual_seed(seed)
    make_act = ACTS[act][0]
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.mul_(scale)
        mods.append(lin)
        if make_act is not None and i < len(widths) - 2:
            mods.append(make_act())
    return nn.Sequential(*mods)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mlps())
def test_random_mlp_stats_match_recomputation(case):
    widths, act, batch, scale, seed = case
    model = _build(widths, act, scale, seed).to(DEVICE)
    x = torch.randn(batch, widths[0], device=DEVICE)
    target = torch.randn(batch, widths[-1], device=DEVICE)

    def loss_fn(out):
        return (out - target).square().mean()

    ref_model = twin(model)
    run, _ = monitored_step(model, x, loss_fn)

    params = list(ref_model.parameters())
    ref = reference_outputs(ref_model, x, loss_fn, [str(i) for i in range(len(model))])
    grads = [p.grad for p in params]
    got = np.stack([run.series(f"param/{s}").values[0] for s in gradvet.stats.PARAM_STATS], axis=1)
    exp = np.array(
        [
            [g.norm().item(), g.abs().max().item(), 0.0, p.detach().norm().item()]
            for p, g in zip(params, grads)
        ]
    )
    np.testing.assert_allclose(got, exp, rtol=2e-5, atol=1e-7)

    sat_pred = ACTS[act][1]
    for name, calls in ref.items():
        mod = model[int(name)]
        for metric, value in expected_layer_stats(calls).items():
            np.testing.assert_allclose(
                layer_value(run, metric, name),
                value,
                rtol=5e-5,
                atol=1e-6,
                err_msg=f"{name}/{metric}",
            )
        y = calls[0][0]
        if isinstance(mod, nn.ReLU):
            assert layer_value(run, "dead_frac", name) == np.float32(
                dead_fraction(y, -1)
            )  # stored as float32
        if sat_pred is not None and not isinstance(mod, nn.Linear):
            np.testing.assert_allclose(
                layer_value(run, "sat_frac", name), sat_pred(y).double().mean().item(), atol=1e-6
            )
