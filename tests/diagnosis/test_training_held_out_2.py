"""The second held-out corpus group (``gradvet.corpus._held_out_2_healthy``, 105 architectures) trained as
``bench/train_sweep.py --group held_out_2`` does, each finding checked against plain PyTorch:

- HF LeViT under SGD (lr 0.05, momentum 0.9): the step-0 gradient norm is 1.5e13 and the loss is NaN from
  step 1 (non-finite, error: true). Its one update reading (step 0) moved the median layer 7e7 of its norm,
  and layers moving 67..5e4 of theirs read as stalled against it: a blown-up step is no stall reading.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ._training import sgd, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train_sgd(case_id: str, steps: int):
    """SGD (lr 0.05, momentum 0.9) under a default-profile Monitor, as the sweep trains; the losses, each
    step's global gradient norm and each parameter's relative update (plain PyTorch), the report."""
    norms, updates, before = [], [], []

    def measure(step, model, loss):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.double().norm() for g in grads]))))
        before[:] = [p.detach().clone() for p in model.parameters()]

    def moved(step, model):
        updates.append(np.array([float((p.detach() - b).norm() / b.norm()) for p, b in zip(model.parameters(), before)
                                 if b.norm() > 0]))

    _, losses, mon = train(case_id, sgd, steps, after_backward=measure, after_step=moved)
    return losses, np.asarray(norms), updates, mon.report()


def test_levit_blown_up_first_sgd_step_is_nonfinite_not_stalled() -> None:
    # 2 steps: the step-0 update (the default profile's one update reading here) and the NaN it makes
    losses, norms, updates, report = _train_sgd("transformers/levit_hf", 2)
    # plain PyTorch: a 1.5e13 gradient at init, a median parameter moved by far more than its own norm,
    # and a NaN loss on the next step
    assert norms[0] > 1e12
    assert np.median(updates[0]) > 1e6
    assert np.isfinite(losses[0]) and np.isnan(losses[1])
    assert "nonfinite_gradients" in report.kinds()
    assert "stalled_layers" not in report.kinds()
