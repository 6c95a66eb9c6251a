"""Layer-sequential unit-variance (LSUV) initialisation, data-driven.

Mishkin & Matas (2016), "All you need is a good init": orthogonal pre-init, then, in
forward order, divide each layer's weights by the standard deviation of its output on
a batch until that variance is 1 within a tolerance.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from gradvet.check import call_model
from gradvet.remedies._init import INIT_MARK, _orthogonal_
from gradvet.remedies._layout import describe_std, weighted_layers
from gradvet.remedies._result import Change, RemedyNotApplicable


class _Stop(Exception):
    """Raised by the probe hook once the layer of interest has produced its output."""


def _inputs(batch: Any) -> Any:
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            raise TypeError(f"batch must be inputs or a pair (inputs, targets), got a {type(batch).__name__} "
                            f"of length {len(batch)}")
        return batch[0]
    return batch


def _forward_order(model: nn.Module, inputs: Any, layers: dict[nn.Module, str]) -> list[nn.Module]:
    """The layers in the order the forward pass first calls them (layers never called are left out)."""
    order: list[nn.Module] = []

    def hook(m: nn.Module, _args: Any, _out: Any) -> None:
        if m not in order:
            order.append(m)
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return order


def _output_var(model: nn.Module, inputs: Any, layer: nn.Module) -> torch.Tensor:
    """Variance of ``layer``'s output on ``inputs``; the forward pass stops right after the layer."""
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, _args: Any, out: Any) -> None:
        seen.append(out.detach().float().var())
        raise _Stop
    handle = layer.register_forward_hook(hook)
    try:
        call_model(model, inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0]


def lsuv_init(model: nn.Module, batch: Any, tol: float = 0.1, max_iter: int = 10, *,
              force: bool = False) -> list[Change]:
    """LSUV: orthogonal pre-init, then rescale each Linear/Conv until its output variance on ``batch`` is 1.

    For each layer ``l`` in forward order: ``W_l <- W_l / sqrt(Var(out_l))`` until
    ``|Var(out_l) - 1| < tol`` (biases are zeroed, so one step is exact for a layer whose
    input is fixed; ``max_iter`` bounds the loop). Runs under ``torch.no_grad`` in train
    mode with dropout off, so batch statistics normalise as they will in training; the
    train/eval flag of every module and all buffers (BatchNorm running statistics) are
    restored afterwards. Mishkin & Matas (2016).

    Args:
        model: edited in place.
        batch: ``(inputs, targets)`` or inputs; a dict of inputs is passed as keyword arguments.
        tol: accepted distance of the output variance from 1.
        max_iter: rescaling steps per layer at most.
        force: redo layers already LSUV-initialised.

    Returns:
        One :class:`Change` per layer.

    Raises:
        RemedyNotApplicable: no Linear/Conv layer is called by the forward pass, or a layer's
            output is constant or non-finite on the batch (no scale makes its variance 1).

    Example:
        >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> len(lsuv_init(model, torch.randn(64, 16)))
        2
    """
    inputs = _inputs(batch)
    names = {m: n for n, m in weighted_layers(model)}
    modes = {m: m.training for m in model.modules()}
    buffers = {b: b.detach().clone() for b in model.buffers()}
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, _DropoutNd):
                m.eval()
        with torch.no_grad():
            order = _forward_order(model, inputs, names)
            if not order:
                raise RemedyNotApplicable(f"lsuv: the forward pass of {type(model).__name__} calls no "
                                          "Linear/Conv1d/2d/3d layer; nothing to rescale")
            todo = [m for m in order if force or getattr(m, INIT_MARK, None) != "lsuv"]
            return [_lsuv_layer(model, inputs, m, names[m], tol, max_iter) for m in todo]
    finally:
        with torch.no_grad():
            for b, saved in buffers.items():
                b.copy_(saved)
        for m, training in modes.items():
            m.training = training


def _checked_var(model: nn.Module, inputs: Any, layer: nn.Module, name: str) -> float:
    var = float(_output_var(model, inputs, layer))  # one host sync per step: an init-time loop, not a training step
    if not math.isfinite(var):
        raise RemedyNotApplicable(f"lsuv: layer {name!r} outputs non-finite values on this batch (variance {var}); "
                                  "find where inf/NaN is born (gradvet.check) and fix it before LSUV")
    if var == 0.0:
        raise RemedyNotApplicable(f"lsuv: layer {name!r} outputs a constant on this batch, which no rescaling "
                                  "can give variance 1; use a batch with varied inputs, or init:orthogonal")
    return var


def _lsuv_layer(model: nn.Module, inputs: Any, layer: nn.Module, name: str, tol: float, max_iter: int) -> Change:
    w: torch.Tensor = layer.weight  # type: ignore[assignment]
    old = describe_std(w)
    _orthogonal_(w, 1.0)
    if getattr(layer, "bias", None) is not None:
        layer.bias.zero_()  # type: ignore[operator, union-attr]
    var = _checked_var(model, inputs, layer, name)
    for _ in range(max_iter):
        if abs(var - 1.0) < tol:
            break
        w.div_(var ** 0.5)
        var = _checked_var(model, inputs, layer, name)
    if abs(var - 1.0) >= tol:
        warnings.warn(f"lsuv: layer {name!r} reached output variance {var:.3f} after {max_iter} steps, not "
                      f"1 +- {tol}; raise max_iter", stacklevel=3)
    setattr(layer, INIT_MARK, "lsuv")
    return Change(name, "init", old, f"{describe_std(w)} (lsuv: orthogonal, output variance {var:.3f} on the batch)")
