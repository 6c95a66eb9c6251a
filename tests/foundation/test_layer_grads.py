"""Per-layer dL/d(output) and output statistics against retain_grad on module outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ._reference import (
    RTOL,
    assert_close,
    expected_layer_stats,
    layer_index,
    layer_value,
    monitored_step,
    reference_outputs,
    twin,
)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x)[0])


class _Recurrent(nn.Module):
    def __init__(self, cls: type, batch_first: bool) -> None:
        super().__init__()
        self.rnn = cls(5, 7, batch_first=batch_first)
        self.head = nn.Linear(7, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


class _Scale(nn.Module):
    """A custom layer with its own parameter (no torch layer inside)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, x):
        return x * self.gain


class _Block(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n, n)
        self.act = nn.GELU()
        self.scale = _Scale(n)

    def forward(self, x):
        return x + self.scale(self.act(self.fc(x)))


class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.blocks = nn.Sequential(_Block(6), _Block(6))
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(self.blocks(self.inp(x)))


def _seq(*mods):
    return nn.Sequential(*mods)


# name -> (model factory, input factory)
CASES = {
    "linear": (
        lambda: _seq(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)),
        lambda: torch.randn(8, 6),
    ),
    "linear_3d_input": (
        lambda: _seq(nn.Linear(6, 10), nn.Sigmoid(), nn.Linear(10, 3)),
        lambda: torch.randn(4, 5, 6),
    ),
    "conv1d": (
        lambda: _seq(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 2, 3)),
        lambda: torch.randn(4, 3, 12),
    ),
    "conv2d": (
        lambda: _seq(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.GroupNorm(2, 4)
        ),
        lambda: torch.randn(3, 3, 9, 9),
    ),
    "conv3d": (
        lambda: _seq(nn.Conv3d(2, 3, 3), nn.BatchNorm3d(3), nn.Tanh(), nn.Conv3d(3, 2, 2)),
        lambda: torch.randn(2, 2, 6, 6, 6),
    ),
    "layernorm": (
        lambda: _seq(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3)),
        lambda: torch.randn(5, 6),
    ),
    "embedding": (
        lambda: _seq(nn.Embedding(11, 6), nn.Linear(6, 3)),
        lambda: torch.randint(0, 11, (4, 7)),
    ),
    "attention": (_Attention, lambda: torch.randn(3, 5, 8)),
    "encoder_post_norm": (
        lambda: _seq(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=False),
            nn.Linear(8, 2),
        ),
        lambda: torch.randn(3, 5, 8),
    ),
    "encoder_pre_norm": (
        lambda: _seq(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True),
            nn.Linear(8, 2),
        ),
        lambda: torch.randn(3, 5, 8),
    ),
    "lstm": (lambda: _Recurrent(nn.LSTM, True), lambda: torch.randn(3, 6, 5)),
    "gru_time_first": (lambda: _Recurrent(nn.GRU, False), lambda: torch.randn(6, 3, 5)),
    "rnn": (lambda: _Recurrent(nn.RNN, True), lambda: torch.randn(3, 6, 5)),
    "nested": (_Nested, lambda: torch.randn(5, 4)),
}


def _loss(out):
    # weights break the symmetry a plain sum would have (e.g. through a LayerNorm)
    w = torch.linspace(-1.0, 2.0, out.numel(), device=out.device).reshape(out.shape)
    return (out * w).sum() + out.square().mean()


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_stats_match_retain_grad(device, case):
    make_model, make_input = CASES[case]
    model = make_model().to(device)
    x = make_input().to(device)
    ref_model = twin(model)
    run, _ = monitored_step(model, x, _loss)
    names = [layer["name"] for layer in run.layers]
    ref = reference_outputs(ref_model, x, _loss, names)
    checked = 0
    for name in names:
        calls = ref.get(name)
        if calls is None:  # the module never ran as a module (e.g. MultiheadAttention.out_proj)
            for metric in ("grad_norm", "act_mean", "act_std"):
                assert math.isnan(layer_value(run, metric, name)), (name, metric)
            continue
        exp = expected_layer_stats(calls)
        for metric, value in exp.items():
            assert_close(
                layer_value(run, metric, name),
                value,
                rtol=2e-5,
                atol=1e-7,
                what=f"{case}/{name}/{metric}",
            )
        assert layer_value(run, "out_nonfinite", name) == 0
        if "grad_norm" in exp:
            assert layer_value(run, "grad_nonfinite", name) == 0
        checked += 1
    param_layers = [
        n for n, m in model.named_modules() if list(m.parameters(recurse=False)) and n in ref
    ]
    assert checked >= len(param_layers) >= 2


def test_module_called_twice_accumulates_both_calls(device):
    shared = nn.Linear(5, 5)
    model = nn.Sequential(shared, nn.Tanh(), shared).to(device)
    x = torch.randn(4, 5, device=device)
    ref_model = twin(model)
    run, _ = monitored_step(model, x, _loss)
    calls = reference_outputs(ref_model, x, _loss, ["0"])["0"]
    assert len(calls) == 2
    exp = expected_layer_stats(calls)
    for metric, value in exp.items():
        assert_close(layer_value(run, metric, "0"), value, rtol=2e-5, what=metric)


def test_inplace_relu_linear_gets_grad_of_pre_activation(device):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(inplace=True), nn.Linear(12, 2)).to(device)
    x = torch.randn(9, 6, device=device)
    ref_model = twin(
        model
    )  # out-of-place ReLU: retain_grad on the Linear output is dL/d pre-activation
    run, _ = monitored_step(model, x, _loss)
    ref = reference_outputs(ref_model, x, _loss, ["0", "1"])
    (pre, g_pre), (post, g_post) = ref["0"][0], ref["1"][0]
    assert (pre < 0).any() and not torch.allclose(
        g_pre.norm(), g_post.norm()
    )  # the case discriminates
    assert_close(layer_value(run, "grad_norm", "0"), g_pre.norm().item(), what="linear grad")
    assert_close(layer_value(run, "grad_norm", "1"), g_post.norm().item(), what="relu grad")
    assert_close(layer_value(run, "act_mean", "0"), pre.double().mean().item(), what="pre mean")
    assert_close(layer_value(run, "act_mean", "1"), post.double().mean().item(), what="post mean")
    # training through the in-place ReLU still matches the out-of-place twin
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=RTOL, atol=1e-7)


def test_layers_are_ordered_input_side_first(device):
    model = _Nested().to(device)
    run, _ = monitored_step(model, torch.randn(2, 4, device=device), _loss)
    names = run.layer_names
    assert (
        names.index("inp")
        < names.index("blocks.0.fc")
        < names.index("blocks.0.scale")
        < names.index("blocks.1.fc")
    )
    assert names.index("blocks.1.scale") < names.index("out")
    cols = [layer["index"] for layer in run.ordered_layers()]
    assert sorted(cols) == list(range(len(run.layers)))
    assert layer_index(run, "blocks.0.scale") == cols[names.index("blocks.0.scale")]


def test_grad_rms_is_width_independent(device):
    """RMS of dL/d output is norm / sqrt(numel): the same for a layer and its 4x-wide copy."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1)).to(device)
    x = torch.randn(6, 3, device=device)
    run, _ = monitored_step(model, x, lambda out: out.sum())
    g = layer_value(run, "grad_norm", "0")
    n = 6 * 4
    assert_close(layer_value(run, "grad_rms", "0"), g / np.sqrt(n), rtol=1e-6)
    # dL/d h = w2 for every sample, so rms = ||w2|| / 2
    assert_close(layer_value(run, "grad_rms", "0"), model[1].weight.norm().item() / 2, rtol=1e-5)


class _Checkpointed(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.a, self.act, self.b = nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)
        self.reentrant = reentrant

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        inner = checkpoint(lambda t: self.act(self.a(t)), x, use_reentrant=self.reentrant)
        return self.b(inner)


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing_is_measured_once(device, reentrant):
    model = _Checkpointed(reentrant).to(device)
    ref_model = twin(model)
    ref_model.forward = lambda x: ref_model.b(ref_model.act(ref_model.a(x)))  # no checkpointing
    x = torch.randn(5, 4, device=device, requires_grad=reentrant)
    run, _ = monitored_step(model, x, _loss)
    ref = reference_outputs(ref_model, x, _loss, ["a", "act", "b"])
    for name, calls in ref.items():
        for metric, value in expected_layer_stats(calls).items():
            assert_close(layer_value(run, metric, name), value, rtol=2e-5, what=f"{name}/{metric}")


class _Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.out = nn.Linear(4, 1)

    def forward(self, x):
        h = self.fc(x)
        return self.out(torch.nan_to_num(h, posinf=0.0, neginf=0.0))


def test_non_finite_outputs_are_counted_and_excluded_from_moments(device):
    model = _Exploding().to(device)
    with torch.no_grad():
        model.fc.bias[1] = float("inf")
    x = torch.randn(6, 3, device=device)
    run, _ = monitored_step(model, x, _loss)
    h = model.fc(x).detach()
    finite = h[torch.isfinite(h)].double()
    assert layer_value(run, "out_nonfinite", "fc") == 6
    assert_close(layer_value(run, "act_mean", "fc"), finite.mean().item(), rtol=1e-5)
    assert_close(layer_value(run, "act_std", "fc"), finite.std(unbiased=False).item(), rtol=1e-5)
    assert layer_value(run, "out_nonfinite", "out") == 0
