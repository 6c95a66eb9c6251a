"""gradvet for the Hugging Face ``Trainer``: a ``TrainerCallback`` that measures each step.

Hook points (see STYLE.md, item 15):

- ``on_train_begin``: a :class:`gradvet.Monitor` on the model, the optimizer (the torch
  optimizer inside Accelerate's wrapper) and its AMP ``GradScaler`` (if any); a forward
  hook on the model reads the loss the model returns (``outputs.loss``).
- **End of the last micro-batch's backward**, when the Trainer clips (``max_grad_norm > 0``):
  ``monitor.step(loss)``. The Trainer has no callback between backward and clipping: it
  clips, then calls ``on_pre_optimizer_step``. So on the micro-batch Accelerate marks
  ``sync_gradients``, the forward hook puts a hook on the output, which queues an autograd
  end-of-backward callback (``Variable._execution_engine.queue_callback``, as DDP and FSDP
  do): it runs once every gradient is in ``p.grad``, before the Trainer clips. Recorded norms
  are raw, pre-clip (``run.meta["grad_norms"] == "pre_clip"``).
- ``on_pre_optimizer_step``: ``monitor.step(loss)`` when nothing was measured at the end of
  backward: no clipping (``max_grad_norm=0``: the norms are raw), or ``pre_clip=False``,
  several processes or DeepSpeed (their gradients are reduced or partitioned after
  backward). Then, with clipping, norms are **post-clip** (``grad_norms == "post_clip"``,
  with ``max_grad_norm``): a ``UserWarning`` says so once, and the end-of-training table
  ends with a note. The loss is the mean of the micro-batches' ``outputs.loss``; a loss
  computed outside the model (a custom ``compute_loss``) is not seen and is recorded as NaN.
- ``on_log``: after :meth:`GradvetCallback.attach`, each training log of the Trainer (the one
  with ``loss``) is followed by ``trainer.log`` of the Lightning callback's scalars, so they
  reach the ``report_to`` backends and ``state.log_history``: ``gradvet/grad_norm`` (global
  gradient norm of the last step), and every ``log_every`` steps ``gradvet/findings``,
  ``gradvet/signal_min``, ``gradvet/signal_max`` and ``gradvet/signal_ratio``. Only logging
  steps read them to the host (the Trainer syncs there too).
- ``on_train_end``: the monitor is closed; rank 0 prints the findings.

Per-layer signals (dL/d output) are recorded during backward and are never clipped.

Example:
    >>> from transformers import Trainer, TrainingArguments  # doctest: +SKIP
    >>> from gradvet.integrations.transformers import GradvetCallback  # doctest: +SKIP
    >>> trainer = Trainer(model, TrainingArguments("out"), train_dataset=ds)  # doctest: +SKIP
    >>> GradvetCallback("runs/bert.gradvet").attach(trainer)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import warnings
import weakref
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from gradvet._validate import unwrap_optimizer
from gradvet.config import ProfileLike
from gradvet.integrations._common import global_grad_norm, print_findings, summary_scalars
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


def _grad_outputs(output: Any) -> list[Tensor]:
    """The tensors of a model output that backward can reach (a custom loss may use any of them)."""
    items = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else [output]
    return [t for t in items if isinstance(t, Tensor) and t.requires_grad]


def _torch_optimizer(optimizer: Any) -> Optional[torch.optim.Optimizer]:
    """Accelerate wraps the optimizer (``AcceleratedOptimizer.optimizer`` is the torch one)."""
    inner = unwrap_optimizer(optimizer)
    return inner if isinstance(inner, torch.optim.Optimizer) else None


def _post_clip_reason(args: Any, pre_clip: bool, optimizer: Any) -> Optional[str]:
    """Why the norms cannot be measured before the Trainer clips them (None: they can).

    ``optimizer`` is Accelerate's ``AcceleratedOptimizer`` (its ``gradient_state`` says which
    micro-batch completes the gradients; its ``accelerator_state`` how they are handled).
    """
    state = getattr(optimizer, "accelerator_state", None)
    if not pre_clip:
        return "GradvetCallback(pre_clip=False)"
    if getattr(args, "deepspeed", None) or "DEEPSPEED" in str(getattr(state, "distributed_type", "")):
        return "DeepSpeed clips inside its own step"
    if getattr(args, "world_size", 1) > 1 or getattr(state, "num_processes", 1) > 1:
        return "several processes reduce gradients after backward"
    if getattr(optimizer, "gradient_state", None) is None:
        return "the optimizer is not Accelerate's"
    return None


class GradvetCallback(TrainerCallback):  # type: ignore[misc]
    """Measure gradient health during ``Trainer.train()``.

    Args:
        record: path of the on-disk record (written by rank 0); None keeps the run in memory
            (``callback.monitor.run``).
        profile: ``"economy"`` (default), ``"business"``, ``"full"`` or a
            :class:`gradvet.MonitorConfig`.
        log_every: after :meth:`attach`, log the findings count and layer-signal scalars at
            most every this many steps, at the Trainer's logging steps; 0 logs only
            ``gradvet/grad_norm``.
        print_findings: print the report with rich at the end of training (rank 0).
        pre_clip: measure gradients at the end of backward, before the Trainer clips them
            (default); False measures in ``on_pre_optimizer_step``, after clipping.
        **monitor_kwargs: more :class:`gradvet.Monitor` arguments (``layer_every=10``...).

    Raises:
        ValueError: ``log_every`` is negative.
    """

    def __init__(
        self,
        record: Optional[Union[str, os.PathLike]] = None,
        profile: ProfileLike = "economy",
        log_every: int = 100,
        print_findings: bool = True,
        pre_clip: bool = True,
        **monitor_kwargs: Any,
    ) -> None:
        if not isinstance(log_every, int) or log_every < 0:
            raise ValueError(f"GradvetCallback(log_every={log_every!r}): use an int >= 0 (0: no diagnosis scalars)")
        self.record, self.profile, self.log_every = record, profile, log_every
        self.print_findings, self.pre_clip = print_findings, bool(pre_clip)
        self.monitor_kwargs = monitor_kwargs
        self.monitor: Optional[Monitor] = None
        self.report: Any = None
        self._losses: list[Tensor] = []
        self._loss_hook: Any = None
        self._trainer: Optional[Callable[[], Any]] = None  # a weak reference: the trainer holds us
        self._sync: Any = None  # Accelerate's GradientState: is this micro-batch the last one?
        self._at_backward = False  # measure at the end of the last micro-batch's backward
        self._queued = self._measured = self._logging = False
        self._clip = 0.0
        self._diagnosed_at: Optional[int] = None

    def attach(self, trainer: Any) -> GradvetCallback:
        """Log live scalars through ``trainer.log`` (to its ``report_to`` backends); adds the callback.

        A callback is handed no trainer, and the Trainer calls ``report_to`` backends before
        user callbacks, so logging needs this reference.

        Returns:
            this callback.
        """
        if not any(cb is self for cb in trainer.callback_handler.callbacks):
            trainer.add_callback(self)
        self._trainer = weakref.ref(trainer)
        return self

    # -- lifecycle ---------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Optional[nn.Module] = None, **kwargs: Any) -> None:
        if model is None:
            raise ValueError("GradvetCallback: the Trainer passed no model to on_train_begin; use Trainer(model=...)")
        wrapped = kwargs.get("optimizer")
        self.monitor = Monitor(
            model, optimizer=_torch_optimizer(wrapped), scaler=getattr(wrapped, "scaler", None), record=self.record,
            profile=self.profile, **self.monitor_kwargs,
        )
        self._clip = float(args.max_grad_norm or 0.0)
        self._sync = getattr(wrapped, "gradient_state", None)
        reason = _post_clip_reason(args, self.pre_clip, wrapped) if self._clip > 0 else None
        self._at_backward = self._clip > 0 and reason is None
        self.monitor.annotate(grad_norms="post_clip" if reason else "pre_clip", max_grad_norm=self._clip)
        if reason:
            _warn_post_clip(self._clip, reason)
        self.monitor.__enter__()
        self._loss_hook = model.register_forward_hook(self._on_forward)
        self._losses, self.report, self._diagnosed_at = [], None, None
        self._queued = self._measured = False

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

    # -- per step ----------------------------------------------------------------------------
    def _on_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):  # not evaluation passes
            return
        loss = _model_loss(output)
        if loss is not None:
            self._losses.append(loss.detach().float())
        if self._at_backward and self._sync.sync_gradients:
            # the last micro-batch: its backward completes the gradients the Trainer then clips;
            # every output is an anchor, as a custom compute_loss may use the logits only
            for tensor in _grad_outputs(output):
                tensor.register_hook(self._on_backward_start)

    def _on_backward_start(self, grad: Tensor) -> None:
        if not self._queued:  # one callback per backward, however many anchors it reaches
            self._queued = True
            # runs when this backward has finished: every p.grad complete, nothing clipped yet
            torch.autograd.Variable._execution_engine.queue_callback(self._after_backward)

    def _after_backward(self) -> None:
        self._queued = False
        if self.monitor is not None and not self._measured:
            self._measure(self.monitor)
            self._measured = True

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        monitor, measured = self.monitor, self._measured
        self._measured = self._queued = False
        if monitor is None or measured:  # measured: at the end of backward, before clipping
            return
        if self._at_backward:  # no output of the model reached backward: measure here, clipped
            self._at_backward = False
            monitor.annotate(grad_norms="post_clip")
            _warn_post_clip(self._clip, "no output of the model reached backward")
        self._measure(monitor)

    def _measure(self, monitor: Monitor) -> None:
        losses, self._losses = self._losses, []
        # outputs.loss is read before Accelerate scales it for AMP: nothing to divide out
        monitor.step(torch.stack(losses).mean() if losses else None)

    # -- live scalars ------------------------------------------------------------------------
    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[dict] = None, **kwargs: Any) -> None:
        trainer = self._trainer() if self._trainer is not None else None
        monitor = self.monitor
        if trainer is None or monitor is None or self._logging or not logs or "loss" not in logs:
            return  # only the Trainer's training logs; not our own, evaluation or the final summary
        if not state.is_world_process_zero or not monitor.steps:
            return
        # sync-ok: a logging step only, where the Trainer itself reads its loss to the host
        scalars = {"grad_norm": float(global_grad_norm(monitor))}
        due = self._diagnosed_at is None or monitor.steps - self._diagnosed_at >= self.log_every
        if self.log_every and due:
            self._diagnosed_at = monitor.steps
            scalars.update(summary_scalars(monitor.report()))
        self._logging = True
        try:
            trainer.log({f"gradvet/{name}": value for name, value in scalars.items()})
        finally:
            self._logging = False


def _warn_post_clip(clip: float, reason: str) -> None:
    warnings.warn(
        f"gradvet: gradient norms are recorded after the Trainer clips them to max_grad_norm={clip} ({reason}); "
        "train with max_grad_norm=0 to record raw norms",
        UserWarning,
        stacklevel=3,
    )
