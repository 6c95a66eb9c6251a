"""Update/weight ratios under Lightning, whose optimizer steps always take a closure.

The reference: a callback of the test's own copies the weights in
``on_before_optimizer_step`` (inside the closure, after backward, before the step)
and at the end of fit; the ratio of step k is ``||W_k+1 - W_k|| / ||W_k||``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

import gradvet  # noqa: E402
from gradvet.integrations.lightning import GradvetCallback  # noqa: E402

ACCUM, STEPS = 2, 4


class Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class Weights(pl.Callback):
    """The weights before every optimizer step, and after the last one."""

    def __init__(self) -> None:
        self.before: list[list[torch.Tensor]] = []
        self.final: list[torch.Tensor] = []

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self.before.append([p.detach().clone() for p in pl_module.parameters()])

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.final = [p.detach().clone() for p in pl_module.parameters()]


def test_lightning_records_update_ratios(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(4, 6, generator=g), torch.randn(4, 1, generator=g)) for _ in range(ACCUM * STEPS)]
    weights = Weights()
    cb = GradvetCallback(record=tmp_path / "pl.gradvet", profile="full", log_every=0, print_findings=False)
    trainer = pl.Trainer(
        max_steps=STEPS, accumulate_grad_batches=ACCUM, gradient_clip_val=0.5, accelerator="cpu", devices=1,
        logger=False, callbacks=[weights, cb], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=None, shuffle=False))

    snaps = [*weights.before, weights.final]
    assert len(snaps) == STEPS + 1
    expected = [
        [((a - b).norm() / b.norm()).item() for a, b in zip(after, before)]
        for before, after in zip(snaps[:-1], snaps[1:])
    ]
    series = gradvet.load(tmp_path / "pl.gradvet").series("param/update_ratio")
    assert series.steps.tolist() == list(range(STEPS))
    np.testing.assert_allclose(series.values, np.array(expected), rtol=1e-5, atol=1e-8)
    assert np.all(np.array(expected) > 0)
