"""A vanishing that begins after a loss spike names the learning rate first (``loss_spike``, with
``lr:lower`` and clipping first, no norms or skips for a net that has them); a net vanishing from its
first step keeps its own causes, however its loss spikes later. The spike measure against numpy."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet
from gradvet.data import digits
from gradvet.diagnosis import diagnose
from gradvet.diagnosis._measures import early_loss
from gradvet.diagnosis._spike import SPIKE, SPIKE_WINDOW, loss_spikes


class _Block(nn.Module):
    """A pre-LN residual MLP block: ``h + fc2(gelu(fc1(norm(h))))``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(F.gelu(self.fc1(self.norm(h))))


def _residual(width: int = 32) -> nn.Sequential:
    """Normalised and residual: 8 pre-LN blocks, a final LayerNorm, a head."""
    return nn.Sequential(nn.Linear(64, width), *[_Block(width) for _ in range(8)], nn.LayerNorm(width),
                         nn.Linear(width, 10))


def _plain(width: int = 32) -> nn.Sequential:
    """Plain and unnormalised: 10 GELU layers at PyTorch's default init, which vanishes from the start."""
    layers: list[nn.Module] = [nn.Linear(64, width)]
    for _ in range(8):
        layers += [nn.GELU(), nn.Linear(width, width)]
    return nn.Sequential(*layers, nn.GELU(), nn.Linear(width, 10))


def _train(
    model: nn.Module, peak: float, warmup: int = 10, steps: int = 40
) -> tuple[np.ndarray, Optional[gradvet.Finding]]:
    """AdamW on 8 digits (scaled to [-1, 1]) with a linear warm-up to ``peak``, under the full profile;
    the losses and the vanishing finding (None if none)."""
    torch.set_num_threads(1)
    data = digits()
    x, y = (data.x_train[:8] - 8) / 8, data.y_train[:8]
    opt = torch.optim.AdamW(model.parameters(), lr=peak)
    losses = []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as mon:
        for t in range(steps):
            for g in opt.param_groups:
                g["lr"] = peak * min(1.0, (t + 1) / warmup)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            mon.step(loss)
            opt.step()
            losses.append(float(loss.detach()))
    found = next((f for f in diagnose(mon.load()) if f.kind == "vanishing_gradients"), None)
    return np.asarray(losses), found


def test_a_residual_layernorm_net_that_spikes_then_vanishes_names_the_learning_rate() -> None:
    torch.manual_seed(0)
    losses, f = _train(_residual(), peak=1.0)
    assert f is not None and f.severity == "warning"
    assert f.causes[0].id == "loss_spike"
    spike = f.data["loss_spike"]
    assert spike["step"] == 4 and spike["loss"] == float(np.float32(losses[4]))  # 16.8 after 2.6 .. 2.77
    assert spike["ratio"] >= SPIKE and spike["onset_step"] > spike["step"]
    assert f"spiked to {losses[4]:.3g} at step 4" in f.causes[0].reason
    ids = [r.id for r in f.remedies]
    assert ids[:2] == ["lr:lower", "clip:norm"]
    assert not {"norm:layer", "norm:batch", "residual", "optim:adam"} & set(ids)  # it has them, or Adam


def test_the_same_net_at_a_sane_learning_rate_does_not_vanish() -> None:
    torch.manual_seed(0)
    losses, f = _train(_residual(), peak=1e-3, warmup=1)
    assert f is None and losses[-1] < 0.5 * losses[0]


def test_a_plain_net_vanishing_from_the_start_keeps_depth_at_a_sane_learning_rate() -> None:
    torch.manual_seed(0)
    _, f = _train(_plain(), peak=1e-3, warmup=1)
    assert f is not None and f.severity == "error"
    assert [c.id for c in f.causes] == ["init_scale", "depth", "no_normalisation"]
    assert "loss_spike" not in f.data


def test_a_spike_after_the_vanishing_began_is_not_its_cause() -> None:
    torch.manual_seed(0)
    losses, f = _train(_plain(), peak=1.0)
    assert max(x / m for _, x, m in loss_spikes(losses)) > 10  # the loss spikes, to 1e4, after step 2
    assert f is not None and f.causes[0].id == "init_scale"
    assert "loss_spike" not in {c.id for c in f.causes}


def _numpy_spikes(loss: np.ndarray) -> list[tuple[int, float, float]]:
    """Plain loop: a finite loss >= SPIKE x the median of the (<= SPIKE_WINDOW) finite losses before it
    (>= 3 of them) and >= the early level."""
    early = early_loss(loss)
    out = []
    for t in range(len(loss)):
        before = [v for v in loss[:t] if np.isfinite(v)][-SPIKE_WINDOW:]
        if len(before) >= 3 and np.isfinite(loss[t]):
            med = float(np.median(before))
            if loss[t] >= SPIKE * med and loss[t] >= early:
                out.append((t, float(loss[t]), med))
    return out


def test_the_spike_measure_matches_numpy() -> None:
    hiera = np.array([2.3026, 1.4537, 1.309, 0.7985, 0.6631, 0.2037, 4.009, 1.1064, 0.1044, 0.1292, 0.4985,
                      2.029, 1.4113, 0.812])  # timm Hiera-T, AdamW lr 1e-3, full profile
    assert [(t, round(m, 4)) for t, _, m in loss_spikes(hiera)] == [(6, 1.0537), (11, 0.7985)]
    rng = np.random.default_rng(0)
    for _ in range(50):
        loss = np.exp(rng.normal(0.0, 1.0, size=60))
        loss[rng.random(60) < 0.1] = np.nan
        assert loss_spikes(loss) == _numpy_spikes(loss)
    assert loss_spikes(np.array([2.3, 1e-5, 1e-5, 1e-5, 5e-3])) == []  # a fitted loss's noise: below the start


def test_a_conv_bn_stack_with_small_gains_has_one_init_scale_cause() -> None:
    """The gains' cause; not also the weights' std, whose scale a BatchNorm after each conv makes free."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(12):
        layers += [nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1), nn.BatchNorm2d(16, eps=1e-3), nn.SiLU()]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    f = gradvet.check(model, batch, F.cross_entropy).finding("vanishing_gradients")
    assert f is not None and [c.id for c in f.causes] == ["init_scale", "depth"]
    assert "normalisation layers' gains" in f.causes[0].reason and f.remedies[0].id == "init:reset_norm"


# -- the remedies a net has are never prescribed, spike or not; dead units after a spike ----------------------
def _sigmoid_chain(width: int = 32) -> nn.Sequential:
    """A chain normalised at every layer (Linear, LayerNorm, sigmoid): it vanishes through the sigmoids."""
    layers: list[nn.Module] = [nn.Linear(64, width)]
    for _ in range(8):
        layers += [nn.LayerNorm(width), nn.Sigmoid(), nn.Linear(width, width)]
    return nn.Sequential(*layers, nn.LayerNorm(width), nn.Sigmoid(), nn.Linear(width, 10))


def test_a_normalised_chain_vanishing_without_a_spike_gets_no_norm_and_no_adam_under_adamw() -> None:
    torch.manual_seed(0)
    losses, f = _train(_sigmoid_chain(), peak=1e-3, warmup=1, steps=20)
    assert not loss_spikes(losses)
    assert f is not None and "loss_spike" not in {c.id for c in f.causes}
    ids = [r.id for r in f.remedies]
    assert ids[0] == "activation:relu" and "residual" in ids  # a chain: skips it does not have
    assert not [i for i in ids if i.startswith("norm:") or i == "optim:adam"]  # LayerNorm at every layer; AdamW


def test_a_normalised_residual_net_vanishing_without_a_spike_gets_no_norm_or_skip() -> None:
    """timm's CaiT (the corpus case): its layer scale reads as an ``info`` vanishing along the trunk; a
    pre-LN residual transformer is not prescribed LayerNorm or skips (it was, without a spike)."""
    pytest.importorskip("timm")
    from gradvet.corpus import cases, run_case

    torch.set_num_threads(1)
    case = next(c for c in cases() if c.id == "timm/cait_xxs24_224")
    f = next(f for f in run_case(case).findings if f.kind == "vanishing_gradients")
    assert f.severity == "info" and [c.id for c in f.causes] == ["depth"]
    assert [r.id for r in f.remedies] == ["optim:adam"]  # gradvet.check: no optimizer, so Adam is not there


def _bias_steps(die: Optional[int], spike: Optional[int], steps: int = 24) -> tuple[np.ndarray, list[gradvet.Finding]]:
    """A ReLU MLP fitting 32 Gaussian inputs under AdamW (lr 1e-2, the full profile), with steps too large
    on its biases by hand: after step ``die``, -10 on each of the second layer's (every unit off on every input,
    as a large step can leave them, Lu et al., 2019); after step ``spike``, +10 on the head's first class, so
    the loss jumps from ~0.15 to ~9, far above its start."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.randn(32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as mon:
        for t in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            mon.step(loss)
            opt.step()
            with torch.no_grad():
                if t == die:
                    model[2].bias -= 10.0
                if t == spike:
                    model[4].bias[0] += 10.0
            losses.append(float(loss.detach()))
    return np.asarray(losses), diagnose(mon.load())


def test_units_that_die_with_a_loss_spike_name_it_first() -> None:
    losses, found = _bias_steps(die=12, spike=12)
    assert loss_spikes(losses)[0][0] == 13
    f = next(f for f in found if f.kind == "dead_units")
    assert f.severity == "error" and f.causes[0].id == "loss_spike"
    assert "the units died from step 13" in f.causes[0].reason
    assert [r.id for r in f.remedies] == ["lr:lower", "clip:norm", "activation:leaky_relu", "init:reset_bias",
                                          "init:kaiming"]
    assert f.data["loss_spike"]["step"] == f.data["loss_spike"]["onset_step"] == 13


def test_units_dead_before_the_loss_spiked_keep_their_causes() -> None:
    losses, found = _bias_steps(die=8, spike=14)
    assert loss_spikes(losses)[0][0] == 15
    f = next(f for f in found if f.kind == "dead_units")
    assert [c.id for c in f.causes] == ["large_updates", "init"] and "loss_spike" not in f.data


def test_units_alive_throughout_give_no_dead_finding() -> None:
    _, found = _bias_steps(die=None, spike=None)
    assert "dead_units" not in {f.kind for f in found}
