"""Zero-initialised layers (zero-init residual branch ends, Fixup/SkipInit, a zero head) block the
gradient behind them by design at init: blocked is not vanished, and not stalled."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import gradvet
from gradvet.diagnosis import diagnose
from gradvet.remedies import Residual
from gradvet.zoo import ResMLP, digits

from .test_rules import make_run


def _with_param_norms(run, norms, steps=1):
    """Replace make_run's parameter norms (10 everywhere) by ``norms``."""
    run._blocks["param/param_norm"] = [(np.arange(steps), np.tile(np.array(norms, dtype=np.float32), (steps, 1)))]
    run._cache.pop("param/param_norm", None)
    return run


def test_exactly_zero_signal_behind_a_zero_layer_is_not_vanishing() -> None:
    # layers 0 and 1 get exactly no signal; layer 2 holds only zeros (a zero-init branch end)
    blocked = _with_param_norms(make_run([0.0, 0.0, 1e-3, 1e-3]), [1.0, 1.0, 0.0, 1.0])
    assert "vanishing_gradients" not in [f.kind for f in diagnose(blocked)]
    # the same signals with no zero layer: nothing explains the zeros, so they are vanishing
    plain = _with_param_norms(make_run([0.0, 0.0, 1e-3, 1e-3]), [1.0, 1.0, 1.0, 1.0])
    assert "vanishing_gradients" in [f.kind for f in diagnose(plain)]
    # a tiny but non-zero signal behind a zero layer is still a decay the rule measures
    tiny = _with_param_norms(make_run([1e-9, 1e-9, 1e-3, 1e-3]), [1.0, 1.0, 0.0, 1.0])
    assert "vanishing_gradients" in [f.kind for f in diagnose(tiny)]


def _fixup(scale: float) -> nn.Module:
    torch.manual_seed(0)
    model = ResMLP(8)
    with torch.no_grad():
        for block in model.blocks:
            block.fc2.weight.mul_(scale)
            block.fc2.bias.mul_(scale)
    return model


def test_fixup_resmlp_is_healthy_and_the_branch_ends_still_learn() -> None:
    batch = digits(256)
    model = _fixup(0.0)
    assert gradvet.check(model, batch, F.cross_entropy).healthy
    # plain autograd: the first layer of each branch gets exactly nothing, the zeroed end does
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    for block in model.blocks:
        assert float(block.fc1.weight.grad.abs().max()) == 0.0
        assert float(block.fc2.weight.grad.norm()) > 0
    # a branch end that is tiny but not zero gates its branch like a layer scale: the branch's first layer
    # gets ~1e-9 of the signal (measured as it is), the trunk is untouched, and nothing is reported
    report = gradvet.check(_fixup(1e-9), batch, F.cross_entropy)
    assert not [f for f in report.findings if f.severity != "info"], report.findings
    sig = {layer.name: layer.signal_norm for layer in report.layers}
    assert 0 < sig["blocks.0.fc1"] < 1e-6 * sig["blocks.0.fc2"]


def test_zero_init_training_run_is_not_stalled_and_update_ratio_has_no_nan() -> None:
    model = _fixup(0.0)
    batch = digits(256)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
            for _ in range(20):
                opt.zero_grad()
                loss = F.cross_entropy(model(batch[0]), batch[1])
                loss.backward()
                monitor.step(loss)
                opt.step()
        report = monitor.report()
    # the branch's first layers start with no signal and gain it as the zeroed ends move (20 steps:
    # from exactly 0 to about 10^-1.8 of the output side's); judged on the latest value, not the warm-up
    assert report.healthy, [(f.kind, f.layers[:3]) for f in report.findings]
    # the zeroed branch ends moved off zero: their relative update is infinite, not NaN
    end = report.layer("blocks.0.fc2")
    assert end is not None and end.update_ratio is not None and not np.isnan(end.update_ratio)


def test_a_zeroed_branch_that_ends_in_relu_is_still_called_dead() -> None:
    """x + relu(0 * x + 0): the ReLU sits at 0 with gradient 0, the branch never learns (a real fault)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), *[Residual(nn.Sequential(nn.Linear(64, 64), nn.ReLU()))
                                               for _ in range(4)], nn.Linear(64, 10))
    with torch.no_grad():
        for block in model[1:5]:
            block.fn[0].weight.zero_()
            block.fn[0].bias.zero_()
    report = gradvet.check(model, digits(256), F.cross_entropy)
    assert "dead_units" in report.kinds()
