"""The lab's training loops: seeded SGD under a ``gradvet.Monitor`` that records to disk."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor, nn

import gradvet

#: ``(params) -> None``: transforms gradients in place between backward and the step.
GradTransform = Callable[[list[nn.Parameter]], object]
Batches = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


@dataclass
class TrainSpec:
    """How to train one lab model.

    Attributes:
        steps: optimizer steps.
        lr: SGD learning rate.
        momentum: SGD momentum.
        adam: use Adam (recurrent nets) instead of SGD.
        optimizer: ``"sgd"``, ``"adam"`` or ``"rmsprop"`` (``adam=True`` means ``"adam"``).
        weight_decay: the optimizer's weight decay (an L2 term in SGD's gradient; Krogh & Hertz, 1992).
        batch: examples per step.
        layer_every: record per-layer signals every this many steps (step 0 always).
        clip: gradient transform applied after the Monitor measured the raw gradients.
    """

    steps: int
    lr: float = 0.1
    momentum: float = 0.9
    adam: bool = False
    batch: int = 128
    layer_every: int = 10
    clip: Optional[GradTransform] = None
    optimizer: str = "sgd"
    weight_decay: float = 0.0


@dataclass
class TrainResult:
    """What one training run produced.

    Attributes:
        record: path of the ``.gradvet`` record.
        losses: training loss per step (stops at the first non-finite loss).
        diverged_at: first step with a non-finite loss, or None.
        report: ``monitor.report()`` at the end.
    """

    record: Path
    losses: np.ndarray
    diverged_at: Optional[int]
    report: Any = field(repr=False, default=None)

    def final_loss(self, window: int = 10) -> float:
        """Mean loss of the last ``window`` steps (inf if training diverged)."""
        if self.diverged_at is not None or len(self.losses) == 0:
            return math.inf
        return float(np.mean(self.losses[-window:]))


def _optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    kind = "adam" if spec.adam else spec.optimizer
    wd = spec.weight_decay
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=wd)
    if kind == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=spec.lr, weight_decay=wd)
    if kind != "sgd":
        raise ValueError(f"TrainSpec.optimizer must be 'sgd', 'adam' or 'rmsprop', got {kind!r}")
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=wd)


def train(
    model: nn.Module,
    batches: Batches,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    spec: TrainSpec,
    record: Path,
    seed: int,
) -> TrainResult:
    """Train ``model`` for ``spec.steps`` steps, recording to ``record``.

    Training stops early at the first non-finite loss (that step is recorded).
    """
    record.parent.mkdir(parents=True, exist_ok=True)
    for stale in record.parent.glob(record.name + "*"):
        stale.unlink()
    gen = torch.Generator().manual_seed(seed)
    opt = _optimizer(model, spec)
    losses: list[Tensor] = []
    diverged: Optional[int] = None
    monitor = gradvet.Monitor(model, optimizer=opt, record=record, profile="full",
                              layer_every=spec.layer_every, update_every=spec.layer_every)
    with monitor:
        for step in range(spec.steps):
            x, y = batches(spec.batch, gen)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            monitor.step(loss)
            value = float(loss.detach())  # sync-ok: the lab runs on CPU and stops on divergence
            losses.append(loss.detach())
            if not math.isfinite(value):
                diverged = step
                break
            if spec.clip is not None:
                spec.clip([p for p in model.parameters() if p.grad is not None])
            opt.step()
    loss_arr = torch.stack(losses).numpy() if losses else np.zeros(0, dtype=np.float32)
    return TrainResult(record, loss_arr, diverged, monitor.report())


def sample_batches(x: Tensor, y: Tensor) -> Batches:
    """Random batches drawn (with replacement) from ``(x, y)``."""

    def draw(size: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, len(x), (size,), generator=gen)
        return x[idx], y[idx]

    return draw


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> float:
    """Loss of ``model`` on ``(x, y)`` in eval mode (train mode restored)."""
    was = model.training
    model.eval()
    try:
        return float(loss_fn(model(x), y))
    finally:
        model.train(was)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Share of ``x`` classified as ``y`` (eval mode; train mode restored)."""
    was = model.training
    model.eval()
    try:
        return float((model(x).argmax(1) == y).float().mean())
    finally:
        model.train(was)
