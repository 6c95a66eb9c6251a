"""``init:reset_norm``: norm affines back to the identity, against plain-PyTorch expectations; prescribed first
when the norm gains start small (and only then); and ``treat`` cures transformers' EfficientNet with it."""

from __future__ import annotations

import copy
import doctest
import importlib

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradvet
from gradvet.errors import GradvetUsageError
from gradvet.remedies import RemedyNotApplicable, applicable, apply_remedy, reset_norm_affine
from gradvet.remedies._norm_affine import norm_identity


class OnePlusRMSNorm(nn.Module):
    """Gemma's RMSNorm: scales by ``1 + weight``, ``weight`` starting at 0 (transformers' GemmaRMSNorm)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)


class PlainRMSNorm(nn.Module):
    """Llama's RMSNorm: scales by ``weight``, starting at 1 (a norm torch does not know, found by its name)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class LayerScale(nn.Module):
    """A layer-scale gain (CaiT): a 1-D parameter that is not a norm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(1e-5 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * x


def small_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.InstanceNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 16), nn.LayerNorm(16), OnePlusRMSNorm(16), PlainRMSNorm(16), LayerScale(16),
        nn.Linear(16, 4),
    )


def perturbed() -> nn.Sequential:
    """Every parameter drawn away from its default; BatchNorm's running stats moved by two forwards."""
    model = small_model()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.02 * torch.randn(p.shape, generator=g) + 0.1)
        model.train()
        for _ in range(2):
            model(torch.randn(4, 3, 8, 8, generator=g))
    return model


NORMS = {"1": 1.0, "4": 1.0, "10": 1.0, "11": 0.0, "12": 1.0}  # module name -> its identity weight


def test_norm_affines_reset_everything_else_untouched() -> None:
    model = perturbed()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = apply_remedy("init:reset_norm", model)
    assert sorted(c.module for c in result.changes) == sorted(NORMS)
    assert all(c.what == "init" for c in result.changes)
    treated = dict(result.model.named_modules())
    for name, one in NORMS.items():
        m = treated[name]
        assert torch.equal(m.weight, torch.full_like(m.weight, one)), name
        if getattr(m, "bias", None) is not None:
            assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
    after = result.model.state_dict()
    touched = {f"{n}.{p}" for n in NORMS for p in ("weight", "bias")}
    for key, value in before.items():  # running stats, convs, linears, layer scale: bit-equal
        if key not in touched:
            assert torch.equal(after[key], value), key
    assert float(after["13.gamma"][0]) == pytest.approx(0.1, abs=0.1)  # the layer scale kept its value
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original: a copy was edited


def test_reset_norms_compute_the_plain_normalisation() -> None:
    """After the reset each norm is the bare normalisation, recomputed here by hand."""
    model = apply_remedy("init:reset_norm", perturbed()).model.eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 8, 5, 5, generator=g)
    bn = model[1]
    ref = (x - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps)
    torch.testing.assert_close(bn(x), ref)
    xg = x.reshape(3, 2, -1)
    ref_g = ((xg - xg.mean(-1, keepdim=True)) / torch.sqrt(xg.var(-1, unbiased=False, keepdim=True) + 1e-5))
    torch.testing.assert_close(model[4](x), ref_g.reshape_as(x))
    h = torch.randn(6, 16, generator=g)
    ref_ln = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(model[10](h), ref_ln)
    ref_rms = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(model[11](h), ref_rms)  # Gemma-style: weight 0, so the scale 1 + 0 = 1
    torch.testing.assert_close(model[12](h), ref_rms)


def test_idempotent_and_applicable() -> None:
    model = apply_remedy("init:reset_norm", perturbed()).model
    assert not apply_remedy("init:reset_norm", model)
    assert applicable("init:reset_norm", model)[0] is False
    ok, why = applicable("init:reset_norm", perturbed())
    assert ok and "weight=1, bias=0" in why
    fresh = small_model()  # torch's defaults and Gemma's zeros are the identity already
    assert reset_norm_affine(fresh) == []


def test_no_norm_and_bad_layer_names() -> None:
    with pytest.raises(RemedyNotApplicable, match="no normalisation layer"):
        apply_remedy("init:reset_norm", nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    model = perturbed()
    with pytest.raises(GradvetUsageError, match="not normalisation layers"):
        reset_norm_affine(model, layers=["0"])
    with pytest.raises(GradvetUsageError, match="no module named"):
        reset_norm_affine(model, layers=["nope"])
    changes = reset_norm_affine(model, layers=["1"])
    assert [c.module for c in changes] == ["1"] and float(model[10].weight[0].detach()) != 1.0


def test_which_modules_are_norms() -> None:
    assert norm_identity(nn.SyncBatchNorm(4)) == 1.0
    assert norm_identity(nn.RMSNorm(4)) == 1.0
    assert norm_identity(nn.InstanceNorm1d(4)) is None  # affine=False: nothing to reset
    assert norm_identity(nn.LayerNorm(4, elementwise_affine=False)) is None
    assert norm_identity(OnePlusRMSNorm(4)) == 0.0
    assert norm_identity(PlainRMSNorm(4)) == 1.0
    assert norm_identity(LayerScale(4)) is None and norm_identity(nn.Linear(4, 4)) is None


def test_transformers_gemma_rmsnorm_is_reset_to_zero() -> None:
    pytest.importorskip("transformers")
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norms = nn.ModuleDict({"gemma": GemmaRMSNorm(8), "llama": LlamaRMSNorm(8)})
    with torch.no_grad():
        for p in norms.parameters():
            p.fill_(0.5)
    changes = reset_norm_affine(norms)
    assert {c.module for c in changes} == {"gemma", "llama"}
    assert torch.equal(norms["gemma"].weight, torch.zeros(8)) and torch.equal(norms["llama"].weight, torch.ones(8))
    h = torch.randn(3, 8)
    torch.testing.assert_close(norms["gemma"](h), norms["llama"](h))


def test_docstring_examples_run() -> None:
    module = importlib.import_module("gradvet.remedies._norm_affine")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# -- prescription ---------------------------------------------------------------------
def plain_stack(gain_std: float | None) -> nn.Sequential:
    """12 conv-BatchNorm(eps 1e-3)-SiLU blocks, BatchNorm gains from N(0, gain_std) (None: torch's 1)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(12):
        layers += [nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1), nn.BatchNorm2d(16, eps=1e-3), nn.SiLU()]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    if gain_std is not None:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 0.0, gain_std)
    return model


def image_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)


def _vanishing(report: gradvet.Report) -> list[gradvet.Finding]:
    return [f for f in report.findings if f.kind == "vanishing_gradients" and f.severity != "info"]


def test_depth_rule_prescribes_the_reset_first_when_the_gains_are_small() -> None:
    report = gradvet.check(plain_stack(0.02), image_batch(), F.cross_entropy)
    (finding,) = _vanishing(report)
    assert finding.remedies[0].id == "init:reset_norm"
    assert any(c.id == "init_scale" and "normalisation layers' gains" in c.reason for c in finding.causes)
    result = gradvet.treat(plain_stack(0.02), image_batch(), F.cross_entropy)
    assert [r.id for r in result.applied] == ["init:reset_norm"] and not _vanishing(result.after)


def test_not_prescribed_without_small_gains() -> None:
    assert not _vanishing(gradvet.check(plain_stack(None), image_batch(), F.cross_entropy))
    torch.manual_seed(0)  # a sick net with no norm at all: 12 sigmoid layers
    sick = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(32, 32), nn.Sigmoid())], nn.Linear(32, 10))
    g = torch.Generator().manual_seed(0)
    report = gradvet.check(sick, (torch.randn(64, 32, generator=g), torch.randint(0, 10, (64,), generator=g)),
                           F.cross_entropy)
    assert _vanishing(report)
    assert all(r.id != "init:reset_norm" for f in report.findings for r in f.remedies)


def test_zero_init_residual_gains_are_not_a_cause() -> None:
    """torchvision's ResNet with zero_init_residual (Goyal et al., 2017): the last BatchNorm of every block starts
    at 0 by design; the median gain is 1, so nothing prescribes a reset."""
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10, zero_init_residual=True)
    report = gradvet.check(model, image_batch(), F.cross_entropy)
    assert all(r.id != "init:reset_norm" for f in report.findings for r in f.remedies)
    assert not [f for f in report.findings if f.severity in ("warning", "error")]


# -- transformers' EfficientNet: sick at its own init, cured -------------------------
def _efficientnet() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    return transformers.EfficientNetForImageClassification(transformers.EfficientNetConfig(
        image_size=64, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, num_labels=10))


def _ce(out: object, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.logits, y)  # type: ignore[attr-defined]


def _top_conv_std(model: nn.Module, x: torch.Tensor) -> float:
    seen: list[float] = []
    h = model.efficientnet.encoder.top_conv.register_forward_hook(
        lambda _m, _i, out: seen.append(float(out.double().std())))
    try:
        with torch.no_grad():
            model.train()(pixel_values=x)
    finally:
        h.remove()
    return seen[0]


def _adamw_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = _ce(model(pixel_values=x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_treat_cures_transformers_efficientnet() -> None:
    model = _efficientnet()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 64, 64, generator=g), torch.randint(0, 10, (2,), generator=g)
    result = gradvet.treat(model, ({"pixel_values": x}, y), _ce)
    (finding,) = _vanishing(result.before)
    assert finding.severity == "error" and finding.remedies[0].id == "init:reset_norm"
    assert [r.id for r in result.applied] == ["init:reset_norm"]
    assert len(result.applied[0].changes) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not _vanishing(result.after) and result.healthy

    # independently, in plain PyTorch: the signal reaches top_conv, and AdamW trains the treated model
    xs, ys = torch.randn(8, 3, 64, 64, generator=g), torch.randint(0, 10, (8,), generator=g)
    assert _top_conv_std(model, xs) < 1e-20
    assert _top_conv_std(result.model, xs) > 1e-3
    sick, cured = _adamw_losses(model, xs, ys, 8), _adamw_losses(result.model, xs, ys, 8)
    assert sick[0] - sick[-1] < 0.2
    assert cured[0] - cured[-1] > 1.0 and cured[-1] < sick[-1] - 0.5
