"""Mixed precision: gradients are measured in true units; skipped steps are recorded."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet


def _model():
    return nn.Sequential(
        nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3)
    )


def _data(n=4):
    g = torch.Generator().manual_seed(7)
    return [
        (torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)
    ]


def _scaler(**kw):
    if not hasattr(torch.amp, "GradScaler"):  # pragma: no cover - torch < 2.3
        pytest.skip("torch.amp.GradScaler is not available")
    return torch.amp.GradScaler("cpu", init_scale=2.0**12, **kw)


def _run(model, scaler, unscale_first):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gradvet.Monitor(model, optimizer=opt, scaler=scaler, profile="full") as monitor:
        for x, y in _data():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            if scaler is None:
                loss.backward()
                monitor.step(loss)
                opt.step()
                continue
            scaler.scale(loss).backward()
            if unscale_first:
                scaler.unscale_(opt)
            monitor.step(loss)
            scaler.step(opt)
            scaler.update()
    return monitor.run


@pytest.mark.parametrize("unscale_first", [False, True], ids=["scaled_grads", "unscaled_first"])
def test_scaled_run_records_true_gradients(unscale_first):
    torch.manual_seed(0)
    base = _model()
    plain = _run(copy.deepcopy(base), None, False)
    amp = _run(copy.deepcopy(base), _scaler(), unscale_first)
    for metric in (
        "param/grad_norm",
        "param/grad_max",
        "param/param_norm",
        "layer/grad_norm",
        "layer/grad_rms",
    ):
        np.testing.assert_allclose(
            amp.series(metric).values, plain.series(metric).values, rtol=1e-5, err_msg=metric
        )
    for metric in ("layer/act_mean", "layer/act_std", "param/update_ratio"):
        np.testing.assert_allclose(
            amp.series(metric).values, plain.series(metric).values, rtol=1e-5, err_msg=metric
        )
    np.testing.assert_allclose(amp.series("loss_scale").values, 2.0**12)
    assert plain.get("loss_scale") is None
    assert not amp.skipped.any() and amp.meta["amp"] is True


def test_scaled_time_profile_is_unscaled():
    class Rec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    torch.manual_seed(0)
    base, x = Rec(), torch.randn(2, 5, 3)
    runs = []
    for scaler in (None, _scaler()):
        model = copy.deepcopy(base)
        with gradvet.Monitor(model, scaler=scaler, profile="full") as monitor:
            loss = model(x).square().mean()
            (loss if scaler is None else scaler.scale(loss)).backward()
            monitor.step(loss)
        runs.append(monitor.run)
    np.testing.assert_allclose(
        runs[1].series("time/rnn").values, runs[0].series("time/rnn").values, rtol=1e-5
    )


def test_step_with_inf_gradient_is_recorded_as_skipped():
    torch.manual_seed(0)
    model = _model()
    poison = {"on": False}
    model[0].weight.register_hook(lambda g: g * float("inf") if poison["on"] else g)
    scaler = _scaler()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gradvet.Monitor(model, optimizer=opt, scaler=scaler, profile="full") as monitor:
        for i, (x, y) in enumerate(_data(5)):
            poison["on"] = i == 2
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            monitor.step(loss)
            before = model[2].weight.detach().clone()
            scaler.step(opt)
            scaler.update()
            assert torch.equal(before, model[2].weight) == (
                i == 2
            )  # the scaler really skipped step 2
    run = monitor.run
    assert run.skipped.tolist() == [False, False, True, False, False]
    scale = run.series("loss_scale").values
    assert scale[3] == scale[2] / 2
    assert run.series("param/grad_nonfinite").values[2, 0] > 0
    assert run.meta["final_loss_scale"] == scaler.get_scale()


def test_last_step_skipped_is_seen_through_final_scale():
    torch.manual_seed(0)
    model = _model()
    scaler = _scaler()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gradvet.Monitor(model, optimizer=opt, scaler=scaler, profile="full") as monitor:
        for i, (x, y) in enumerate(_data(2)):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y) * (float("inf") if i == 1 else 1.0)
            scaler.scale(loss).backward()
            monitor.step(loss)
            scaler.step(opt)
            scaler.update()
    assert monitor.run.skipped.tolist() == [False, True]
