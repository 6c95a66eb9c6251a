"""GradvetCallback for Lightning, against a plain PyTorch loop doing the same steps."""

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

ACCUM, STEPS, CLIP, LR = 2, 5, 0.05, 0.1


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 1))


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(4, 6, generator=g), 3 * torch.randn(4, 1, generator=g)) for _ in range(ACCUM * STEPS)]


class Module(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_net()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=LR)


class CaptureLogger(pl.loggers.Logger):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "capture"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: Any = None) -> None:
        self.rows.append(dict(metrics))


def plain_reference() -> tuple[np.ndarray, np.ndarray]:
    """Per-step mean loss and raw (pre-clip) per-parameter gradient norms, with plain torch."""
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    data = batches()
    losses, norms = [], []
    for s in range(STEPS):
        opt.zero_grad()
        step_losses = []
        for x, y in data[s * ACCUM : (s + 1) * ACCUM]:
            loss = nn.functional.mse_loss(net(x), y)
            (loss / ACCUM).backward()
            step_losses.append(loss.item())
        losses.append(np.mean(step_losses))
        norms.append([p.grad.norm().item() for p in net.parameters()])
        nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
    return np.asarray(losses), np.asarray(norms)


def fit(tmp_path: Path, **callback_kwargs: Any) -> tuple[GradvetCallback, CaptureLogger]:
    cb = GradvetCallback(profile="full", log_every=2, print_findings=False, **callback_kwargs)
    logger = CaptureLogger()
    trainer = pl.Trainer(
        max_steps=STEPS, accumulate_grad_batches=ACCUM, gradient_clip_val=CLIP, accelerator="cpu", devices=1,
        logger=logger, log_every_n_steps=1, callbacks=[cb], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    loader = torch.utils.data.DataLoader(batches(), batch_size=None, shuffle=False)
    trainer.fit(Module(), loader)
    return cb, logger


def test_lightning_records_preclip_norms_and_mean_loss(tmp_path: Path) -> None:
    cb, logger = fit(tmp_path, record=tmp_path / "pl.gradvet")
    run = gradvet.load(tmp_path / "pl.gradvet")
    loss, norms = plain_reference()
    assert run.meta["status"] == "finished"
    np.testing.assert_array_equal(run.steps, np.arange(STEPS))
    np.testing.assert_allclose(run.loss, loss, rtol=1e-5)
    np.testing.assert_allclose(run.series("param/grad_norm").values, norms, rtol=1e-5)
    assert np.all(np.linalg.norm(norms, axis=1) > CLIP)  # so clipping did act, after measuring
    assert run.param_names()[0] == "net.0.weight"
    # the compact scalars reached the logger
    logged = {k for row in logger.rows for k in row}
    assert {"gradvet/grad_norm", "gradvet/findings", "gradvet/signal_ratio"} <= logged
    gn = [row["gradvet/grad_norm"] for row in logger.rows if "gradvet/grad_norm" in row]
    np.testing.assert_allclose(gn, np.linalg.norm(norms, axis=1), rtol=1e-5)
    assert cb.report is not None and cb.monitor is not None and not cb.monitor._hooks


def test_lightning_closes_record_on_exception(tmp_path: Path) -> None:
    class Boom(Module):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if batch_idx == 4:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    cb = GradvetCallback(record=tmp_path / "boom.gradvet", print_findings=False)
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, callbacks=[cb],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Boom(), torch.utils.data.DataLoader(batches(), batch_size=None))
    run = gradvet.load(tmp_path / "boom.gradvet")
    assert run.meta["status"].startswith("crashed: RuntimeError") and len(run.steps) == 4


def test_log_every_is_validated() -> None:
    with pytest.raises(ValueError, match="log_every"):
        GradvetCallback(log_every=-1)
