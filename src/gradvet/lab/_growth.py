"""Weights that grow, and gradients that grow with them: one net, with and without weight decay.

A 6-layer ReLU MLP (PyTorch's default init) on digits whose training labels are 30% noise,
trained with Adam (lr 0.01): to fit the noise the net keeps scaling its weights up, and in
a plain stack every layer's gradient is multiplied by the weights above it. AdamW's
decoupled weight decay (Loshchilov & Hutter, 2019; an L2 penalty, Krogh & Hertz, 1992)
shrinks each weight by ``lr * wd * W`` per step. Every run is recorded under a
``gradvet.Monitor``; the numbers are read back from the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import gradvet
from gradvet.data import digits
from gradvet.diagnosis._measures import total_grad_norm
from gradvet.diagnosis._weights import early_window, growth
from gradvet.lab._models import MLP
from gradvet.lab._train import accuracy


@dataclass(frozen=True)
class GrowthSpec:
    """The weight-growth experiment.

    Attributes:
        depth: Linear layers of the ReLU MLP.
        steps: AdamW steps.
        lr: AdamW learning rate.
        noise: share of training labels replaced by random classes.
        batch: examples per step.
    """

    depth: int = 6  # Linear layers
    steps: int = 1000  # AdamW steps
    lr: float = 0.01  # AdamW learning rate
    noise: float = 0.3  # share of noisy training labels
    batch: int = 128  # examples per step


def noisy_labels(y: Tensor, share: float, seed: int) -> Tensor:
    """``y`` with ``share`` of its entries replaced by uniformly drawn classes (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    out = y.clone()
    flip = torch.rand(len(y), generator=gen) < share
    out[flip] = torch.randint(0, int(y.max()) + 1, (int(flip.sum()),), generator=gen)
    return out


def weight_norms(run: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, norm of all 2+-dimensional parameters)`` from a record, at the steps that measured it."""
    s = run.series("param/param_norm")
    idx = [i for i, p in enumerate(run.params) if len(p.get("shape") or []) >= 2]
    v = s.values.astype(np.float64)[:, idx]
    measured = np.isfinite(v).any(axis=1)
    return np.asarray(s.steps)[measured], np.sqrt(np.sum(v[measured] ** 2, axis=1))


def train_growth(weight_decay: float, record: Path, spec: GrowthSpec = GrowthSpec(), seed: int = 0) -> dict[str, Any]:
    """Train the growth net with ``AdamW(weight_decay=...)`` under a Monitor; its numbers, read from the record."""
    data = digits()
    y_train = noisy_labels(data.y_train, spec.noise, seed)
    torch.manual_seed(seed)
    model = MLP(spec.depth, act="relu")
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed + 1)
    record.parent.mkdir(parents=True, exist_ok=True)
    for stale in record.parent.glob(record.name + "*"):
        stale.unlink()
    with gradvet.Monitor(model, optimizer=opt, record=record, layer_every=50) as monitor:
        for _ in range(spec.steps):
            idx = torch.randint(0, len(y_train), (spec.batch,), generator=gen)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), y_train[idx])
            loss.backward()
            monitor.step(loss)
            opt.step()
    run = gradvet.load(record)
    _, w = weight_norms(run)
    g = total_grad_norm(run)
    if g is None:
        raise RuntimeError(f"{record} holds no gradient norms; the Monitor records them at every step")
    (w0, w1), (g0, _) = growth(w, early_window(len(w))), growth(g, early_window(len(g)))
    report = monitor.report()
    return {
        "weight_decay": weight_decay,
        "weight_norm_start": w0, "weight_norm_end": w1, "weight_growth": w1 / w0,
        "grad_norm_start": g0, "grad_norm_peak": float(np.nanmax(g)), "grad_peak_growth": float(np.nanmax(g)) / g0,
        "final_loss": float(np.mean(run.loss[-50:])),
        "test_accuracy": accuracy(model, data.x_test, data.y_test),
        "findings": report.kinds(),
        "prescribed": [r.id for f in report.findings for r in f.remedies],
    }
