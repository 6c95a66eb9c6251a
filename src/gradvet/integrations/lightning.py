"""gradvet for Lightning: one callback measures every optimizer step of ``trainer.fit``.

Hook points (see STYLE.md, item 15):

- ``on_fit_start``: a :class:`gradvet.Monitor` on the LightningModule, its optimizers and
  the precision plugin's AMP ``GradScaler`` (if any). With several optimizers (manual
  optimization: a GAN's generator and discriminator) every one of them gets update ratios
  and counts as training its parameters; the monitor steps once per training step, when the
  first of ``trainer.optimizers`` steps, and records the loss of every backward since the
  last step added up (a GAN: the discriminator's loss plus the generator's).
- ``on_before_backward``: the loss of each backward is added up. Lightning hands this
  hook the loss it back-propagates: divided by ``accumulate_grad_batches`` and, under
  ``16-mixed``, multiplied by the loss scale; the callback divides the scale out, so the
  sum over the micro-batches of one optimizer step is their mean loss.
- ``on_before_optimizer_step``: ``monitor.step(loss)``. Lightning calls it once per
  optimizer step (after the last micro-batch when accumulating gradients), **after** AMP
  unscaling (the monitor sees the scaler's ``UNSCALED`` state and does not divide a second
  time) and **before** gradient clipping: recorded norms are raw, unclipped.
- ``on_fit_end`` / ``on_exception``: the monitor is closed (the record is marked finished
  or crashed); at the end of fit rank 0 prints the findings.

Every ``log_every`` steps, rank 0 also logs compact scalars through ``pl_module.log``
(so to ``trainer.logger``): ``gradvet/grad_norm`` (global gradient norm, every step, a
device tensor), ``gradvet/findings``, ``gradvet/signal_min``, ``gradvet/signal_max`` and
``gradvet/signal_ratio`` (per-element RMS of dL/d output over layers, last layer step).

Example:
    >>> import lightning.pytorch as pl  # doctest: +SKIP
    >>> from gradvet.integrations.lightning import GradvetCallback  # doctest: +SKIP
    >>> trainer = pl.Trainer(callbacks=[GradvetCallback(record="runs/exp1.gradvet")])  # doctest: +SKIP
    >>> trainer.fit(model, loader)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Union

from torch import Tensor

from gradvet.config import ProfileLike
from gradvet.integrations._common import global_grad_norm, print_findings, summary_scalars, unscaled
from gradvet.monitor import Monitor

try:  # the unified package first, the standalone one otherwise
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError:
        raise ImportError(
            "gradvet.integrations.lightning needs Lightning: pip install 'gradvet[lightning]'"
        ) from None

log = logging.getLogger(__name__)

__all__ = ["GradvetCallback"]


class GradvetCallback(pl.Callback):
    """Measure gradient health during ``trainer.fit``.

    Args:
        record: path of the on-disk record (written by rank 0); None keeps the run in memory
            (``callback.monitor.run``).
        profile: ``"economy"`` (default), ``"business"``, ``"full"`` or a
            :class:`gradvet.MonitorConfig`.
        log_every: log the findings count and layer-signal scalars every this many steps
            (each time the run so far is diagnosed); 0 logs only ``gradvet/grad_norm``.
        print_findings: print the report with rich at the end of fit (rank 0).
        **monitor_kwargs: more :class:`gradvet.Monitor` arguments (``layer_every=10``,
            ``distributed="off"``...).

    Raises:
        ValueError: ``log_every`` is negative.
    """

    def __init__(
        self,
        record: Optional[Union[str, os.PathLike]] = None,
        profile: ProfileLike = "economy",
        log_every: int = 100,
        print_findings: bool = True,
        **monitor_kwargs: Any,
    ) -> None:
        if not isinstance(log_every, int) or log_every < 0:
            raise ValueError(f"GradvetCallback(log_every={log_every!r}): use an int >= 0 (0: no diagnosis scalars)")
        self.record, self.profile, self.log_every = record, profile, log_every
        self.print_findings = print_findings
        self.monitor_kwargs = monitor_kwargs
        self.monitor: Optional[Monitor] = None
        self.report: Any = None
        self._loss: Optional[Tensor] = None

    # -- lifecycle ---------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizers = list(trainer.optimizers) or None
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.monitor = Monitor(
            pl_module, optimizer=optimizers, scaler=scaler, record=self.record, profile=self.profile,
            **self.monitor_kwargs,
        )
        self.monitor.__enter__()
        self._loss, self.report = None, None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None:
            return
        self.monitor.close()
        if trainer.is_global_zero and self.monitor.steps:
            self.report = self.monitor.report()
            if self.print_findings:
                print_findings(self.report)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.close(error=exception)

    # -- per step ----------------------------------------------------------------------------
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if self.monitor is None:
            return
        value = unscaled(loss.detach().float(), self.monitor.scaler)
        self._loss = value if self._loss is None else self._loss + value

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        monitor = self.monitor
        if monitor is None or (monitor.optimizer is not None and optimizer is not monitor.optimizer):
            return  # another optimizer of the same training step (manual optimization): one step each
        loss, self._loss = self._loss, None
        monitor.step(loss)
        pl_module.log("gradvet/grad_norm", global_grad_norm(monitor), on_step=True, on_epoch=False)
        if self.log_every and trainer.is_global_zero and (monitor.steps - 1) % self.log_every == 0:
            for name, value in summary_scalars(monitor.report()).items():
                pl_module.log(f"gradvet/{name}", value, on_step=True, on_epoch=False, rank_zero_only=True)
