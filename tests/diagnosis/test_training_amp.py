"""Mixed precision on the training sweep's cases (``bench/train_sweep.py --amp bf16|fp16-scaler``, AdamW 1e-3,
40 steps, default profile; docs/diagnosis.md, "Full-profile and mixed-precision sweeps"), each finding checked
against plain PyTorch.

- bf16 autocast (45 cases): one finding, MobileBERT's stalled layer-0 attention, true as in float32: autocast
  keeps the parameters and the optimizer in float32, and the query/key gradients (~1e-10) sit below Adam's eps.
- float16 autocast with a GradScaler given to the Monitor (16 cases): the same MobileBERT finding; the steps the
  scaler skips while it lowers its scale from 65536 (float16 gradients overflow: 6 on MobileNet-V2, 1 on
  torchvision's ViT) are ``info``, and gradients are recorded in true units.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import pytest
import torch

import gradvet
from gradvet.corpus import call
from gradvet.diagnosis._measures import total_grad_norm

from ._training import build

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train_amp(
    case_id: str,
    dtype: torch.dtype,
    steps: int,
    scaler: Optional[torch.amp.GradScaler] = None,
    after_backward: Optional[Callable[[int, torch.nn.Module, Any], None]] = None,
) -> tuple[torch.nn.Module, np.ndarray, gradvet.Monitor]:
    """AdamW (lr 1e-3) with the forward and loss under CPU autocast to ``dtype``, as the sweep trains; with a
    scaler, the README's AMP loop (scale(loss).backward, monitor.step, scaler.step, scaler.update)."""
    model, (x, y), loss_fn = build(case_id)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    with gradvet.Monitor(model, optimizer=opt, scaler=scaler) as mon:
        for step in range(steps):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=dtype):
                loss = loss_fn(call(model, x), y)
            (loss if scaler is None else scaler.scale(loss)).backward()
            mon.step(loss)
            if after_backward is not None:
                after_backward(step, model, loss)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
            losses.append(float(loss.detach()))
    return model, np.asarray(losses), mon


def _alarms(report: Any) -> list[str]:
    return [f.kind for f in report.findings if f.severity in ("warning", "error")]


@pytest.mark.parametrize("case_id", ["transformers/llama", "torchvision/vit_tiny", "torchvision/shufflenet_v2_x0_5"])
def test_bf16_autocast_healthy_nets_get_no_warning(case_id: str) -> None:
    dtypes: set[torch.dtype] = set()

    def dtypes_of(step: int, model: torch.nn.Module, loss: torch.Tensor) -> None:
        dtypes.update(p.dtype for p in model.parameters())
        dtypes.update(p.grad.dtype for p in model.parameters() if p.grad is not None)

    _, losses, mon = _train_amp(case_id, torch.bfloat16, 40, after_backward=dtypes_of)
    assert dtypes == {torch.float32}  # autocast: parameters and gradients stay float32
    assert losses[-1] < 0.5 * losses[0]
    assert _alarms(mon.report()) == []


def test_bf16_mobilebert_stalled_attention_is_true() -> None:
    pre = "mobilebert.encoder.layer.0.attention.self."
    grads: list[tuple[float, float]] = []

    def measure(step: int, model: torch.nn.Module, loss: torch.Tensor) -> None:
        p = dict(model.named_parameters())
        grads.append((float(p[pre + "query.weight"].grad.norm()), float(p[pre + "value.weight"].grad.norm())))

    _, _, mon = _train_amp("transformers/mobilebert", torch.bfloat16, 40, after_backward=measure)
    # plain PyTorch: the query's gradient stays below Adam's eps (1e-8) at every step, the value's far above
    assert all(q < 1e-8 and v > 1e-5 for q, v in grads)
    f = next(f for f in mon.report().findings if f.kind == "stalled_layers" and f.severity == "warning")
    assert pre + "query" in f.layers and pre + "value" not in f.layers


def test_fp16_scaler_skipped_steps_are_info_and_gradients_are_in_true_units() -> None:
    scaler = torch.amp.GradScaler("cpu")
    true_norms: list[float] = []
    scales: list[float] = []

    def measure(step: int, model: torch.nn.Module, loss: torch.Tensor) -> None:
        scale = scaler.get_scale()
        scales.append(scale)
        grads = [p.grad.double() / scale for p in model.parameters() if p.grad is not None]
        true_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    _, losses, mon = _train_amp("torchvision/vit_tiny", torch.float16, 40, scaler, after_backward=measure)
    run = mon.load()
    # plain PyTorch: float16 gradients overflow at step 0's scale (65536), the scaler skips it and halves
    assert not np.isfinite(true_norms[0]) and scales[1] == scales[0] / 2
    assert losses[-1] < 0.5 * losses[0]
    assert int(np.asarray(run.skipped).sum()) == sum(not np.isfinite(n) for n in true_norms) >= 1
    recorded = total_grad_norm(run)
    ok = np.isfinite(true_norms)
    np.testing.assert_allclose(recorded[ok], np.asarray(true_norms)[ok], rtol=1e-3)
    report = mon.report()
    assert _alarms(report) == []
    assert any(f.kind == "nonfinite_gradients" and f.severity == "info" for f in report.findings)
