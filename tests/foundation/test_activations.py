"""Activation statistics: saturation and dead units, with known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet

from ._reference import (
    assert_close,
    dead_fraction,
    layer_value,
    monitored_step,
    reference_outputs,
    twin,
)


def _loss(out):
    return out.square().mean()


# activation module -> saturation predicate on its output at threshold t
SATURATION = {
    "sigmoid": (nn.Sigmoid, lambda y, t: y * (1 - y) < 0.25 * t),
    "tanh": (nn.Tanh, lambda y, t: 1 - y * y < t),
    "hardtanh": (lambda: nn.Hardtanh(-0.5, 0.5), lambda y, t: (y <= -0.5) | (y >= 0.5)),
    "softsign": (nn.Softsign, lambda y, t: (1 - y.abs()).square() < t),
}


@pytest.mark.parametrize("threshold", [0.1, 0.3])
@pytest.mark.parametrize("kind", sorted(SATURATION))
def test_sat_frac_matches_predicate(device, kind, threshold):
    make, predicate = SATURATION[kind]
    model = nn.Sequential(nn.Linear(5, 32), make(), nn.Linear(32, 1)).to(device)
    with torch.no_grad():
        model[0].weight.mul_(
            torch.linspace(0.1, 8.0, 32, device=device)[:, None]
        )  # from linear to saturated
    x = torch.randn(16, 5, device=device)
    ref = reference_outputs(twin(model), x, _loss, ["1"])
    y = ref["1"][0][0]
    expected = predicate(y, threshold).double().mean().item()
    assert 0.05 < expected < 0.95  # a mix of saturated and live units: the case discriminates
    run, _ = monitored_step(model, x, _loss, saturation_threshold=threshold)
    assert run.layers[1]["activation"] == kind and run.layers[1]["role"] == "activation"
    assert_close(layer_value(run, "sat_frac", "1"), expected, rtol=1e-6)
    assert_close(layer_value(run, "act_mean", "1"), y.double().mean().item(), rtol=1e-5)
    assert_close(layer_value(run, "act_std", "1"), y.double().std(unbiased=False).item(), rtol=1e-5)
    assert layer_value(run, "sat_frac", "0") == 0.0  # the Linear itself does not saturate


def test_sigmoid_default_threshold_is_quarter_of_max_derivative(device):
    """At the default threshold 0.1 a sigmoid unit is saturated where y(1-y) < 0.025."""
    model = nn.Sequential(nn.Linear(1, 4, bias=True), nn.Sigmoid()).to(device)
    with torch.no_grad():
        model[0].weight.zero_()
        # y(1-y) at these pre-activations: 0.25, 0.105, 0.0259 (just live), 0.0235 (just saturated)
        model[0].bias.copy_(torch.tensor([0.0, 2.0, 3.6, 3.7]))
    run, _ = monitored_step(model, torch.randn(3, 1, device=device), _loss)
    assert gradvet.MonitorConfig().saturation_threshold == 0.1
    assert_close(layer_value(run, "sat_frac", "1"), 0.25)


@pytest.mark.parametrize("shape", [(12, 8), (3, 4, 8)], ids=["BF", "BTF"])
def test_relu_dead_frac_linear_features(device, shape):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)).to(device)
    with torch.no_grad():
        model[0].bias[:8] = -100.0  # units 0..7 never fire
        model[0].bias[8:] = 100.0  # units 8..15 always fire
        model[0].weight.mul_(0.1)
    run, _ = monitored_step(model, torch.randn(*shape, device=device), _loss)
    assert layer_value(run, "dead_frac", "1") == 0.5
    assert run.layers[1]["activation"] == "relu"


def test_relu_dead_frac_counts_units_not_entries(device):
    """A unit that fires for one sample only is alive; zeros elsewhere do not make it dead."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.ReLU()).to(device)
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4, device=device))
    x = -torch.ones(5, 4, device=device)
    x[2, 0] = 1.0  # unit 0 fires once; units 1..3 never
    run, _ = monitored_step(model, x, lambda out: out.sum() + model[0].weight.sum())
    assert layer_value(run, "dead_frac", "1") == 0.75


def test_relu_dead_frac_conv_channels(device):
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 2, 1)
    ).to(device)
    with torch.no_grad():
        model[0].bias[:3] = -100.0
        model[0].bias[3:] = 0.0
    x = torch.randn(4, 3, 7, 7, device=device)
    ref = reference_outputs(twin(model), x, _loss, ["1"])
    y = ref["1"][0][0]
    # channels 3..5 are zero at many positions but alive somewhere: per-entry counting would differ
    assert (y[:, 3:] == 0).double().mean() > 0.2
    assert dead_fraction(y, 1) == 0.5
    run, _ = monitored_step(model, x, _loss)
    assert layer_value(run, "dead_frac", "1") == 0.5


class _FunctionalSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 24)
        self.out = nn.Linear(24, 1)

    def forward(self, x):
        return self.out(torch.sigmoid(self.fc(x)))


class _FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.head(F.relu(self.conv(x)))


class _MethodTanh(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 24)
        self.out = nn.Linear(24, 1)

    def forward(self, x):
        return self.out(self.fc(x).tanh())


def test_functional_sigmoid_attributed_to_linear(device):
    model = _FunctionalSigmoid().to(device)
    with torch.no_grad():
        model.fc.weight.mul_(torch.linspace(0.1, 8.0, 24, device=device)[:, None])
    x = torch.randn(16, 5, device=device)
    pre = reference_outputs(twin(model), x, _loss, ["fc"])["fc"][0][0]
    y = torch.sigmoid(pre)
    expected = (y * (1 - y) < 0.025).double().mean().item()
    assert 0.05 < expected < 0.95
    run, _ = monitored_step(model, x, _loss)
    fc = [layer for layer in run.layers if layer["name"] == "fc"][0]
    assert fc["activation"] == "sigmoid"
    assert_close(layer_value(run, "sat_frac", "fc"), expected, rtol=1e-6)
    # act_mean/std stay those of the layer's own output (the pre-activation)
    assert_close(layer_value(run, "act_mean", "fc"), pre.double().mean().item(), rtol=1e-5)
    assert [layer["activation"] for layer in run.layers if layer["name"] == "out"] == [""]


def test_functional_tanh_method_attributed_to_linear(device):
    model = _MethodTanh().to(device)
    with torch.no_grad():
        model.fc.weight.mul_(torch.linspace(0.1, 8.0, 24, device=device)[:, None])
    x = torch.randn(16, 5, device=device)
    pre = reference_outputs(twin(model), x, _loss, ["fc"])["fc"][0][0]
    expected = (1 - pre.tanh().square() < 0.1).double().mean().item()
    run, _ = monitored_step(model, x, _loss)
    assert [layer["activation"] for layer in run.layers if layer["name"] == "fc"] == ["tanh"]
    assert_close(layer_value(run, "sat_frac", "fc"), expected, rtol=1e-6)


def test_functional_relu_dead_channels_attributed_to_conv(device):
    model = _FunctionalRelu().to(device)
    with torch.no_grad():
        model.conv.bias[:2] = -100.0  # 2 of 8 channels dead
        model.conv.bias[2:] = 0.0
    x = torch.randn(3, 2, 6, 6, device=device)
    pre = reference_outputs(twin(model), x, _loss, ["conv"])["conv"][0][0]
    expected = dead_fraction(F.relu(pre), 1)
    assert expected == 0.25
    run, _ = monitored_step(model, x, _loss)
    assert [layer["activation"] for layer in run.layers if layer["name"] == "conv"] == ["relu"]
    assert layer_value(run, "dead_frac", "conv") == expected
    assert layer_value(run, "dead_frac", "head") == 0.0


def test_act_std_is_accurate_for_a_large_mean(device):
    """Near-saturated sigmoid outputs: mean ~1, tiny spread (E[y^2]-E[y]^2 cancels)."""
    model = nn.Sequential(nn.Linear(16, 256), nn.Sigmoid()).to(device)
    with torch.no_grad():
        model[0].weight.mul_(0.01)
        model[0].bias.fill_(6.0)
    x = torch.randn(64, 16, device=device)
    y = reference_outputs(twin(model), x, _loss, ["1"])["1"][0][0]
    run, _ = monitored_step(model, x, _loss)
    assert_close(layer_value(run, "act_std", "1"), y.double().std(unbiased=False).item(), rtol=1e-4)


class _SharedRelu(nn.Module):
    """One ReLU instance used after two layers, as torchvision's ResNet blocks do."""

    def __init__(self, width2: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, width2)
        self.relu = nn.ReLU()
        self.out = nn.Linear(width2, 1)

    def forward(self, x):
        return self.out(self.relu(self.fc2(self.relu(self.fc1(x)))))


@pytest.mark.parametrize("width2", [8, 4])
def test_shared_relu_counts_units_of_each_use(device, width2):
    model = _SharedRelu(width2).to(device)
    with torch.no_grad():
        model.fc1.bias[:4] = -100.0  # 4 of the 8 units of the first use are dead
        model.fc1.bias[4:] = 100.0
        model.fc2.weight.mul_(0.01)
        model.fc2.bias.fill_(100.0)  # no unit of the second use is dead
    x = torch.randn(6, 4, device=device)
    calls = reference_outputs(twin(model), x, _loss, ["relu"])["relu"]
    dead = sum(dead_fraction(y, -1) * y.shape[-1] for y, _ in calls)
    expected = dead / sum(y.shape[-1] for y, _ in calls)
    assert expected == 4 / (8 + width2)
    run, _ = monitored_step(model, x, _loss)
    assert layer_value(run, "dead_frac", "relu") == pytest.approx(expected, rel=1e-6)


def test_shared_relu_over_micro_batches(device):
    """Each use keeps its own units across micro-batches (alive in any micro-batch = alive)."""
    model = _SharedRelu(8).to(device)
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.weight[0, 0] = 1.0  # unit 0 of use 1 fires only where x[:, 0] > 0
        model.fc1.bias.fill_(-0.5)
        model.fc1.bias[4:] = 100.0
        model.fc2.weight.zero_()
        model.fc2.bias.fill_(1.0)
    xs = [torch.full((3, 4), -1.0, device=device), torch.full((3, 4), 1.0, device=device)]
    with gradvet.Monitor(model, profile="full") as monitor:
        for x in xs:
            _loss(model(x)).backward()
        monitor.step()
    # use 1: units 1..3 dead, unit 0 alive in micro-batch 2 only; use 2: all alive
    assert layer_value(monitor.run, "dead_frac", "relu") == pytest.approx(3 / 16)


class _FunctionalReluInplace(nn.Module):
    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.out = nn.Linear(8, 1)
        self.inplace = inplace

    def forward(self, x):
        return self.out(F.relu(self.fc(x), inplace=self.inplace))


def test_functional_inplace_relu_gives_pre_activation_grad_and_dead_units(device):
    model = _FunctionalReluInplace().to(device)
    with torch.no_grad():
        model.fc.bias[:4] = -100.0
    x = torch.randn(6, 4, device=device)
    ref_model = twin(model)
    ref_model.inplace = False
    ((pre, g_pre),) = reference_outputs(ref_model, x, _loss, ["fc"])["fc"]
    run, _ = monitored_step(model, x, _loss)
    assert [layer["activation"] for layer in run.layers if layer["name"] == "fc"] == ["relu"]
    assert_close(layer_value(run, "grad_norm", "fc"), g_pre.norm().item())
    assert_close(layer_value(run, "act_mean", "fc"), pre.double().mean().item())
    assert layer_value(run, "dead_frac", "fc") == 0.5
