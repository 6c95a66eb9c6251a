"""GradvetCallback on a GAN in Lightning's manual optimization (two optimizers), against the
updates and losses the module itself measures with plain torch.

Lightning hands ``on_before_optimizer_step`` each optimizer in turn; the callback gives the
Monitor all of them, so the discriminator's layers are not read as held by no param group
(the stalled-layers warning this setup got when only the first optimizer was given).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from gradvet.integrations.lightning import GradvetCallback  # noqa: E402

BATCHES = 6


def _norms(ps: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in ps]


class GAN(pl.LightningModule):
    """Lightning's GAN pattern: the discriminator steps, then the generator, each on its own loss."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.automatic_optimization = False
        self.G = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))
        self.D = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        self.losses: list[float] = []
        self.d_updates: list[list[float]] = []
        self.g_updates: list[list[float]] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        (real,) = batch
        og, od = self.optimizers()
        bce = nn.functional.binary_cross_entropy_with_logits
        ones, zeros = torch.ones(len(real), 1), torch.zeros(len(real), 1)
        fake = self.G(torch.randn(len(real), 4))
        d_loss = bce(self.D(real), ones) + bce(self.D(fake.detach()), zeros)
        od.zero_grad()
        self.manual_backward(d_loss)
        before = _norms(self.D.parameters())
        od.step()
        self.d_updates.append([((p - b).norm() / b.norm()).item() for p, b in zip(self.D.parameters(), before)])
        g_loss = bce(self.D(fake), ones)
        og.zero_grad()
        self.manual_backward(g_loss)
        before = _norms(self.G.parameters())
        og.step()
        self.g_updates.append([((p - b).norm() / b.norm()).item() for p, b in zip(self.G.parameters(), before)])
        self.losses.append(d_loss.item() + g_loss.item())

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.G.parameters(), 2e-3), torch.optim.Adam(self.D.parameters(), 2e-3)]


def test_a_gan_in_manual_optimization_is_healthy_and_both_optimizers_are_measured(tmp_path: Path) -> None:
    torch.manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(BATCHES * 16, 8) + 2)
    cb = GradvetCallback(profile="full", log_every=0, print_findings=False)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, callbacks=[cb], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    module = GAN()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=16))
    run = cb.monitor.run  # type: ignore[union-attr]
    assert [f.kind for f in cb.report.findings if f.severity != "info"] == []
    assert run.meta["optimizer"] == "Adam, Adam"
    # one step per training step, at the generator's (the first optimizer's) step; its loss is the sum
    # of the step's two backward losses
    loss = run.series("loss")
    assert loss.steps.tolist() == list(range(BATCHES))
    np.testing.assert_allclose(loss.values, module.losses, rtol=1e-6)
    s = run.series("param/update_ratio")
    names = [p["name"] for p in run.params]
    gi = [i for i, n in enumerate(names) if n.startswith("G.")]
    di = [i for i, n in enumerate(names) if n.startswith("D.")]
    np.testing.assert_allclose(s.values[:, gi], np.array(module.g_updates)[s.steps], rtol=1e-5)
    # the discriminator steps before the monitor's step of its batch: batch k + 1's update is at step k
    assert s.steps.tolist() == list(range(BATCHES))
    np.testing.assert_allclose(s.values[:-1, di], np.array(module.d_updates[1:]), rtol=1e-5)
