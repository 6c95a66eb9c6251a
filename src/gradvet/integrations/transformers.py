"""gradvet for the Hugging Face ``Trainer``: a ``TrainerCallback`` that measures each step.

Hook points (see STYLE.md, item 15):

- ``on_train_begin``: a :class:`gradvet.Monitor` on the model, the optimizer (the torch
  optimizer inside Accelerate's wrapper) and its AMP ``GradScaler`` (if any); a forward
  hook on the model reads the loss the model returns (``outputs.loss``).
- ``on_pre_optimizer_step``: ``monitor.step(loss)``, once per optimizer step (after the
  last micro-batch with ``gradient_accumulation_steps``). The loss is the mean of the
  micro-batches' ``outputs.loss``; a loss computed outside the model (a custom
  ``compute_loss``) is not seen and is recorded as NaN.
- ``on_train_end``: the monitor is closed; rank 0 prints the findings.

.. warning::
   The Trainer calls ``on_pre_optimizer_step`` **after** gradient clipping. With the
   default ``max_grad_norm=1.0`` the recorded per-parameter gradient norms are
   *post-clip*: a clipped step shows a global norm of 1.0, and exploding gradients are
   hidden. Train with ``max_grad_norm=0`` (no clipping) to record raw norms, or read the
   record knowing this; per-layer signals (dL/d output) are recorded during backward and
   are never clipped.

Example:
    >>> from transformers import Trainer, TrainingArguments  # doctest: +SKIP
    >>> from gradvet.integrations.transformers import GradvetCallback  # doctest: +SKIP
    >>> args = TrainingArguments("out", max_grad_norm=0.0)  # doctest: +SKIP
    >>> Trainer(model, args, train_dataset=ds, callbacks=[GradvetCallback("runs/bert.gradvet")]).train()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from gradvet.config import ProfileLike
from gradvet.integrations._common import print_findings
from gradvet.monitor import Monitor

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - depends on what is installed
    raise ImportError("gradvet.integrations.transformers needs transformers: pip install 'gradvet[hf]'") from None

log = logging.getLogger(__name__)

__all__ = ["GradvetCallback"]


def _model_loss(output: Any) -> Optional[Tensor]:
    """The ``loss`` of a model output (a ModelOutput, a dict or a tuple whose first item is it)."""
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if loss is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        loss = output[0] if output[0].numel() == 1 else None
    return loss if isinstance(loss, Tensor) and loss.numel() == 1 else None


def _torch_optimizer(optimizer: Any) -> Optional[torch.optim.Optimizer]:
    """Accelerate wraps the optimizer (``AcceleratedOptimizer.optimizer`` is the torch one)."""
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer):
        return inner
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


class GradvetCallback(TrainerCallback):  # type: ignore[misc]
    """Measure gradient health during ``Trainer.train()``.

    Args:
        record: path of the on-disk record (written by rank 0); None keeps the run in memory
            (``callback.monitor.run``).
        profile: ``"economy"`` (default), ``"business"``, ``"full"`` or a
            :class:`gradvet.MonitorConfig`.
        print_findings: print the report with rich at the end of training (rank 0).
        **monitor_kwargs: more :class:`gradvet.Monitor` arguments (``layer_every=10``...).
    """

    def __init__(
        self,
        record: Optional[Union[str, os.PathLike]] = None,
        profile: ProfileLike = "economy",
        print_findings: bool = True,
        **monitor_kwargs: Any,
    ) -> None:
        self.record, self.profile, self.print_findings = record, profile, print_findings
        self.monitor_kwargs = monitor_kwargs
        self.monitor: Optional[Monitor] = None
        self.report: Any = None
        self._losses: list[Tensor] = []
        self._loss_hook: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Optional[nn.Module] = None, **kwargs: Any) -> None:
        if model is None:
            raise ValueError("GradvetCallback: the Trainer passed no model to on_train_begin; use Trainer(model=...)")
        optimizer = _torch_optimizer(kwargs.get("optimizer"))
        scaler = getattr(kwargs.get("optimizer"), "scaler", None)
        self.monitor = Monitor(
            model, optimizer=optimizer, scaler=scaler, record=self.record, profile=self.profile, **self.monitor_kwargs
        )
        self.monitor.__enter__()
        self._loss_hook = model.register_forward_hook(self._on_forward)
        self._losses, self.report = [], None

    def _on_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if module.training and torch.is_grad_enabled():  # not evaluation passes
            loss = _model_loss(output)
            if loss is not None:
                self._losses.append(loss.detach().float())

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is None:
            return
        losses, self._losses = self._losses, []
        # outputs.loss is read before Accelerate scales it for AMP: nothing to divide out
        self.monitor.step(torch.stack(losses).mean() if losses else None)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._close(None)
        if self.monitor is not None and state.is_world_process_zero and self.monitor.steps:
            self.report = self.monitor.report()
            if self.print_findings:
                print_findings(self.report)

    def _close(self, error: Optional[BaseException]) -> None:
        if self._loss_hook is not None:
            self._loss_hook.remove()
            self._loss_hook = None
        if self.monitor is not None:
            self.monitor.close(error=error)
