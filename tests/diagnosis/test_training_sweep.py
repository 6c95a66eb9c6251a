"""Real architectures trained until they memorise their batch (held-out training sweep, 2026-12-05):
40 steps of SGD (lr 0.05, momentum 0.9) under a full-profile Monitor. Each converged, and each got a
false alarm before: a converged net must not be called sick.

- Llama: `exploding_gradients` from the weight-growth rule (weights 2.4x, gradient peak 5.2x at step 19,
  but back at 0.25x of its start at the end);
- timm ConvNeXt-atto: `stalled_layers` on LayerNorms behind a 1e-6 layer scale, judged on updates made
  after the loss had fallen to 1e-4;
- timm EfficientNet-B0: `saturated_units (error)` on its squeeze-excitation gates, which sit at 0 or 1
  once trained, off the trunk.

Mamba under the same SGD keeps its `stalled_layers` warning: its `dt_proj` layers move 1e-6 of their
norm per update against 1e-3 for the median layer from the first steps on, and Adam (the prescription)
trains them.
"""

from __future__ import annotations

import numpy as np
import pytest

from ._training import sgd, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train(case_id: str, steps: int = 40):
    _, _, mon = train(case_id, sgd, steps, profile="full")
    run = mon.load()
    assert run.loss[-1] < 0.02 * run.loss[0]  # it converged
    return run, mon.report()


def test_llama_memorising_a_batch_is_not_exploding() -> None:
    run, report = _train("transformers/llama")
    g = np.asarray([np.sqrt(np.nansum(r.astype(np.float64) ** 2)) for r in run.get("param/grad_norm").values])
    assert g.max() > 3 * g[:3].mean() and g[-8:].mean() < g[:3].mean()  # a peak the run came down from
    assert "exploding_gradients" not in report.kinds()


def test_convnext_layer_scaled_norms_are_not_stalled() -> None:
    _, report = _train("timm/convnext_atto")
    assert "stalled_layers" not in report.kinds()


def test_efficientnet_saturated_se_gates_are_info() -> None:
    run, report = _train("timm/efficientnet_b0")
    sat = [f for f in report.findings if f.kind == "saturated_units"]
    assert sat and all(f.severity == "info" for f in sat)
    assert all(n.endswith(("se.gate", "se.conv_expand")) for f in sat for n in f.layers)
    assert report.healthy


def test_mamba_dt_proj_under_sgd_stays_stalled() -> None:
    _, report = _train("transformers/mamba")
    (f,) = [f for f in report.findings if f.kind == "stalled_layers"]
    assert all("dt_proj" in n for n in f.layers)
    assert any(r.id == "optim:adam" for r in f.remedies)
