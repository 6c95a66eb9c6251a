"""A model trained by several optimizers (Muon for matrices and AdamW for the rest; a GAN's
generator and discriminator): ``Monitor(optimizer=[...])``.

Every parameter gets its update ratio from the optimizer that owns it, equal to
``||W_after - W_before|| / ||W_before||`` from copies this test takes around each step; the
diagnosis sees every parameter as trained (with only one of the optimizers given, the others'
layers read as held by no param group: the stalled-layers warning a GAN got in Lightning).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradvet


def _split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Matrices and the rest, as a Muon + AdamW setup splits them."""
    mats = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return mats, rest


def _ratios(params: list[nn.Parameter], before: list[torch.Tensor]) -> list[float]:
    return [((p.detach() - b).norm() / b.norm()).item() for p, b in zip(params, before)]


@pytest.mark.parametrize("profile", ["full", "economy"])
def test_each_optimizer_gives_its_parameters_their_ratios(device, profile):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).to(device)
    mats, rest = _split(model)
    o1, o2 = torch.optim.SGD(mats, lr=0.05, momentum=0.9), torch.optim.AdamW(rest, lr=1e-2)
    params = list(model.parameters())
    x, y = torch.randn(32, 6, device=device), torch.randint(0, 3, (32,), device=device)
    expected = []
    with gradvet.Monitor(model, optimizer=[o1, o2], profile=profile) as monitor:
        for _ in range(4):
            o1.zero_grad()
            o2.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            monitor.step(loss)
            before = [p.detach().clone() for p in params]
            o1.step()
            o2.step()
            expected.append(_ratios(params, before))
    s = monitor.run.series("param/update_ratio")
    every = monitor.config.update_every
    assert s.steps.tolist() == [k for k in range(4) if k % every == 0]
    np.testing.assert_allclose(s.values, np.array(expected)[s.steps], rtol=1e-5)
    lrs = [p["lr"] for p in monitor.run.params]
    assert lrs == [0.05, 0.01, 0.05, 0.01]  # weight, bias, weight, bias: each from its own optimizer
    assert monitor.run.meta["optimizer"] == "SGD, AdamW"


def _gan(device: torch.device) -> tuple[nn.Module, nn.Module, nn.Module]:
    g = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))
    d = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    model = nn.ModuleDict({"G": g, "D": d}).to(device)
    return model, g, d


def _gan_loop(device, optimizers_given: str) -> tuple[gradvet.Report, gradvet.Run, list, list]:
    """A GAN loop: the discriminator steps first, then the generator; one monitor.step() per iteration,
    before the generator's step."""
    torch.manual_seed(0)
    model, g, d = _gan(device)
    og, od = torch.optim.Adam(g.parameters(), 2e-3), torch.optim.Adam(d.parameters(), 2e-3)
    bce = nn.functional.binary_cross_entropy_with_logits
    real = torch.randn(32, 8, device=device) + 2
    ones, zeros = torch.ones(32, 1, device=device), torch.zeros(32, 1, device=device)
    opt = [og, od] if optimizers_given == "both" else og
    d_updates, g_updates = [], []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        for _ in range(6):
            fake = g(torch.randn(32, 4, device=device))
            od.zero_grad()
            (bce(d(real), ones) + bce(d(fake.detach()), zeros)).backward()
            before = [p.detach().clone() for p in d.parameters()]
            od.step()
            d_updates.append(_ratios(list(d.parameters()), before))
            og.zero_grad()
            loss = bce(d(fake), ones)
            loss.backward()
            monitor.step(loss)
            before = [p.detach().clone() for p in g.parameters()]
            og.step()
            g_updates.append(_ratios(list(g.parameters()), before))
    return monitor.report(), monitor.run, d_updates, g_updates


def test_a_gan_with_both_optimizers_is_healthy_and_every_update_is_measured(device):
    report, run, d_updates, g_updates = _gan_loop(device, "both")
    assert [f.kind for f in report.findings if f.severity != "info"] == []
    s = run.series("param/update_ratio")
    names = [p["name"] for p in run.params]
    gi = [i for i, n in enumerate(names) if n.startswith("G.")]
    di = [i for i, n in enumerate(names) if n.startswith("D.")]
    assert s.steps.tolist() == list(range(6))
    np.testing.assert_allclose(s.values[:, gi], np.array(g_updates), rtol=1e-5)
    # the discriminator steps before monitor.step() in this loop: its update of iteration k + 1 is
    # recorded at step k (the last measured one); iteration 0's, before any measured step, is not recorded
    np.testing.assert_allclose(s.values[:5, di], np.array(d_updates[1:]), rtol=1e-5)
    assert np.isnan(s.values[5, di]).all()


def test_a_gan_given_only_the_generators_optimizer_warns_that_the_discriminator_is_not_trained(device):
    """The contrast: what a user who passes one optimizer is told (true of what gradvet was shown)."""
    report, _, _, _ = _gan_loop(device, "generator only")
    stalled = [f for f in report.findings if f.kind == "stalled_layers"]
    assert stalled and set(stalled[0].layers) == {"D.0", "D.2"}


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([], ValueError, "empty"),
        ("adam", TypeError, "got str"),
        (["x"], TypeError, "a list holding str"),
    ],
)
def test_bad_optimizer_arguments_are_refused_clearly(value, error, match):
    with pytest.raises(error, match=match):
        gradvet.Monitor(nn.Linear(2, 1), optimizer=value)


def test_the_same_optimizer_twice_is_refused():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="twice"):
        gradvet.Monitor(model, optimizer=[opt, opt])


@pytest.mark.parametrize("unscale", [False, True])
def test_a_grad_scaler_over_two_optimizers_gives_true_units(unscale):
    """With a GradScaler the recorded norms are in true units, whether the user unscaled every optimizer's
    gradients before monitor.step() (scaler.unscale_ for each, as before clipping) or none of them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    mats, rest = _split(model)
    o1, o2 = torch.optim.SGD(mats, lr=0.01), torch.optim.Adam(rest, lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    expected = []
    with gradvet.Monitor(model, optimizer=[o1, o2], scaler=scaler, profile="full") as monitor:
        for _ in range(3):
            o1.zero_grad()
            o2.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            if unscale:
                scaler.unscale_(o1)
                scaler.unscale_(o2)
            factor = 1.0 if unscale else 1.0 / scaler.get_scale()
            expected.append([p.grad.norm().item() * factor for p in model.parameters()])
            monitor.step(loss)
            scaler.step(o1)
            scaler.step(o2)
            scaler.update()
    np.testing.assert_allclose(monitor.run.series("param/grad_norm").values, expected, rtol=1e-5)
