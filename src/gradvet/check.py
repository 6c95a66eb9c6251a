"""``gradvet.check``: measure a model's gradient health on one batch, before training.

It runs forward and backward with every tap on, diagnoses, and leaves the model
exactly as it found it: weights and buffers bit-identical (BatchNorm running
statistics included), existing ``.grad`` values, train/eval mode of every
module, and the torch RNG state. It never calls an optimizer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradvet._validate import (
    require_grad_mode,
    require_materialized,
    require_module,
    require_nonempty_batch,
    split_batch,
    trainable_parameters,
)
from gradvet.config import PROFILES, ProfileLike, resolve_profile
from gradvet.monitor import Monitor

log = logging.getLogger(__name__)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(inputs)``; a dict of inputs is passed as keyword arguments."""
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


class _SavedState:
    """Everything ``check`` could disturb, saved and restored."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.grads = {p: p.grad for p in model.parameters()}
        self.modes = {m: m.training for m in model.modules()}
        self.buffers = {b: b.detach().clone() for b in model.buffers()}
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        with torch.no_grad():
            for b, saved in self.buffers.items():
                b.copy_(saved)
        for p, g in self.grads.items():
            p.grad = g
        for m, training in self.modes.items():
            m.training = training
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def _nonfinite_count(targets: Any) -> int:
    """NaN/Inf values in floating targets (class indices are integers and always finite)."""
    if isinstance(targets, torch.Tensor) and targets.is_floating_point():
        return int((~torch.isfinite(targets.detach())).sum())  # sync-ok: once, before check's pass
    return 0


def _hunt(model: nn.Module, inputs: Any, saved: _SavedState) -> Any:
    """:func:`gradvet._nanhunt.find_origin` on the checked batch, with the RNG state of the measured pass
    (the same dropout masks); None if the hunt finds nothing or fails (it never costs the report)."""
    from gradvet._nanhunt import find_origin

    try:
        torch.set_rng_state(saved.rng)
        return find_origin(model, lambda: call_model(model, inputs))
    except Exception:
        log.exception("gradvet.check: hunting the first non-finite op failed")
        return None


def check(
    model: nn.Module,
    batch: Any,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    passes: int = 1,
    profile: ProfileLike = None,
    train: bool = True,
) -> Any:
    """Measure and diagnose ``model`` on one batch, changing nothing.

    Args:
        model: the model to check.
        batch: ``(inputs, targets)``; the loss is ``loss_fn(model(inputs), targets)``
            (a dict of inputs is passed as keyword arguments).
        loss_fn: returns a scalar loss.
        passes: forward/backward passes to measure (they differ only by dropout).
        profile: measurement profile (default: every statistic, ``"full"``).
        train: run in train mode (dropout, batch statistics) as training would.

    Returns:
        A :class:`gradvet.Report`.

    Raises:
        TypeError: ``model`` is not a module, ``batch`` is not ``(inputs, targets)``, or
            ``loss_fn`` is not callable.
        ValueError: no trainable parameters, parameters on the ``meta`` device, an empty batch,
            a call inside ``torch.no_grad()``/``torch.inference_mode()``, or the loss is not a scalar.

    Example:
        >>> import torch, gradvet
        >>> layers = [m for _ in range(10) for m in (torch.nn.Linear(32, 32), torch.nn.Sigmoid())]
        >>> model = torch.nn.Sequential(*layers, torch.nn.Linear(32, 10))
        >>> batch = (torch.randn(64, 32), torch.randint(0, 10, (64,)))
        >>> report = gradvet.check(model, batch, torch.nn.functional.cross_entropy)
        >>> [f.kind for f in report.findings][:1]
        ['vanishing_gradients']
    """
    require_module(model, "check")
    require_grad_mode("check")
    trainable_parameters(model, "check")
    require_materialized(model, "check")
    inputs, targets = split_batch(batch, "check")
    require_nonempty_batch(inputs, targets, "check")
    if not callable(loss_fn):
        raise TypeError(f"check: loss_fn must be callable as loss_fn(model(inputs), targets), got {type(loss_fn).__name__}")
    if not isinstance(passes, int) or passes < 1:
        raise ValueError(f"check: passes must be an int >= 1, got {passes!r}")
    config = resolve_profile(profile if profile is not None else PROFILES["full"])
    config = config.replace(layer_every=1, flush_every=max(passes, 1), flush_seconds=1e9)
    saved = _SavedState(model)
    try:
        if train:
            model.train()
        monitor = Monitor(model, profile=config)
        monitor._meta["source"] = "check"
        bad_targets = _nonfinite_count(targets)
        if bad_targets:
            monitor.annotate(targets_nonfinite=bad_targets)
        with monitor:
            for _ in range(passes):
                for p in monitor.parameters:
                    p.grad = None
                loss = loss_fn(call_model(model, inputs), targets)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                    raise ValueError(
                        f"check: loss_fn must return a scalar tensor, got {shape}; use reduction='mean' "
                        "or reduce it with .mean()"
                    )
                loss.backward()
                monitor.step(loss)
        report = monitor.report()
        if any(f.kind == "nonfinite_gradients" and f.severity == "error" for f in report.findings):
            origin = _hunt(model, inputs, saved)
            if origin is not None:  # the op that made the first NaN/Inf, named in the finding
                monitor.annotate(nonfinite_origin=origin.to_dict())
                report = monitor.report()
        return report
    finally:
        saved.restore()
