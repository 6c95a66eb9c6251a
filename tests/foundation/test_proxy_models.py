"""The launch-bound proxies of bench/models.py (issue 13) against plain-PyTorch recomputation.

The proxies keep the module graph of GPT-2 (12 blocks, tied head) and ResNet-50
(3-4-6-3 bottlenecks, BatchNorm, in-place ReLUs shared within a block). Every
tapped layer's dL/d output norm, RMS and output moments, and every ReLU's dead
fraction, must equal a retain_grad recomputation: on the first measured step (the
structure step) and on a later one, where the taps hold per-call results, reduce
gradients together at the end of backward and no torch-function mode runs.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

import gradvet

from ._reference import (
    assert_close,
    dead_fraction,
    expected_layer_stats,
    first_float,
    layer_value,
    twin,
)

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "models.py"


def _bench_models():
    name = "gradvet_bench_models"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # its dataclass looks its module up
    spec.loader.exec_module(mod)
    return mod


def _gpt2(device):
    models = _bench_models()
    torch.manual_seed(0)
    model = models.GPT(vocab=64, seq=16, d=24, n_layers=12, heads=12).to(device)
    return model, torch.randint(0, 64, (2, 16), device=device)


def _resnet(device):
    pytest.importorskip("torchvision")
    models = _bench_models()
    torch.manual_seed(0)
    model = models.resnet_graph(width=4, classes=10).to(device)
    return model, torch.randn(2, 3, 32, 32, device=device)


def _loss(out):
    w = torch.linspace(-1.0, 2.0, out.numel(), device=out.device).reshape(out.shape)
    return (out * w).sum() + out.square().mean()


def _reference(model, x, names):
    """``reference_outputs``, with each output copied when its module returns it: a bottleneck's
    ``out += identity`` changes bn3's output in place afterwards (gradvet measures it as returned)."""
    wanted, seen, handles = set(names), {}, []
    for name, mod in model.named_modules():
        if name in wanted:

            def hook(m, args, out, name=name):
                y = first_float(out)
                if y is not None:
                    if y.requires_grad:
                        y.retain_grad()
                    seen.setdefault(name, []).append((y, y.detach().clone()))

            handles.append(mod.register_forward_hook(hook))
    try:
        model.zero_grad(set_to_none=True)
        _loss(model(x)).backward()
    finally:
        for h in handles:
            h.remove()
    return {n: [(c, None if y.grad is None else y.grad.clone()) for y, c in ys] for n, ys in seen.items()}


def _two_steps(model, x):
    """Two measured steps on the same weights (no optimizer): the structure step and a steady one."""
    with gradvet.Monitor(model, profile="full") as monitor:
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            loss = _loss(model(x))
            loss.backward()
            monitor.step(loss)
    return monitor.run


@pytest.mark.parametrize("make", [_gpt2, _resnet], ids=["gpt2-proxy", "resnet-proxy"])
def test_proxy_layer_stats_match_retain_grad_on_both_steps(device, make):
    model, x = make(device)
    ref_model = twin(model)
    run = _two_steps(model, x)
    names = [layer["name"] for layer in run.layers]
    ref = _reference(ref_model, x, names)
    checked = 0
    for name in names:
        calls = ref.get(name)
        if calls is None:
            continue
        exp = expected_layer_stats(calls)
        for row in (0, 1):
            for metric, value in exp.items():
                got = layer_value(run, metric, name, row)
                assert_close(got, value, rtol=5e-5, atol=1e-6, what=f"{name}/{metric}/step {row}")
            assert layer_value(run, "out_nonfinite", name, row) == 0
            if "grad_norm" in exp:
                assert layer_value(run, "grad_nonfinite", name, row) == 0
        checked += 1
    assert checked >= 100


def test_resnet_proxy_dead_fractions_match_on_both_steps(device):
    model, x = _resnet(device)
    with torch.no_grad():  # some dead channels, so that the fraction is not trivially 0
        model.layer1[0].bn1.bias[:2] = -100.0
    ref_model = twin(model)
    run = _two_steps(model, x)
    relus = [layer["name"] for layer in run.layers if layer["activation"] == "relu"]
    ref = _reference(ref_model, x, relus)
    seen_dead = False
    for name in relus:
        calls = ref[name]
        units = [y.shape[1] for y, _ in calls]
        dead = sum(dead_fraction(y, 1) * n for (y, _), n in zip(calls, units)) / sum(units)
        seen_dead |= dead > 0
        for row in (0, 1):
            got = layer_value(run, "dead_frac", name, row)
            assert not math.isnan(got)
            assert got == pytest.approx(dead, rel=1e-6, abs=1e-12), (name, row)
    assert seen_dead


@pytest.mark.parametrize("cap", [1, 50_000], ids=["every-output", "mid-forward"])
def test_resnet_proxy_exact_when_held_outputs_overflow_their_cap(device, make=_resnet, *, cap, monkeypatch):
    """Held outputs past the memory cap are reduced mid-forward (at every hook, or once or twice per
    forward); the outputs changed in place later (bn3 by ``out += identity``, bn1/bn2 by the in-place
    ReLU) are still measured as their module returned them, on the structure step (copies) and on the
    steady one."""
    import gradvet._taps as taps

    monkeypatch.setattr(taps, "CAP", cap)
    model, x = make(device)
    ref_model = twin(model)
    run = _two_steps(model, x)
    names = [layer["name"] for layer in run.layers if layer["name"].endswith(("bn1", "bn2", "bn3"))]
    ref = _reference(ref_model, x, names)
    assert len(names) == 49  # the stem bn1 and 16 blocks x 3
    for name in names:
        exp = expected_layer_stats(ref[name])
        for row in (0, 1):
            for metric in ("act_mean", "act_std"):
                assert_close(layer_value(run, metric, name, row), exp[metric], rtol=5e-5, atol=1e-6,
                             what=f"{name}/{metric}/step {row}")
