"""Input validation shared by Monitor and check: one clear message per mistake."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def require_module(model: Any, who: str) -> nn.Module:
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise TypeError(
            f"{who} received the class {model.__name__} instead of a model; instantiate it first: "
            f"{who}({model.__name__}(...), ...)"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{who} needs a torch.nn.Module, got {type(model).__name__}; wrap your function in an nn.Module"
        )
    return model


def trainable_parameters(model: nn.Module, who: str) -> tuple[list[str], list[nn.Parameter], list[str]]:
    """``(names, params, frozen_names)``; tied parameters appear once."""
    names, params, frozen = [], [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            names.append(n)
            params.append(p)
        else:
            frozen.append(n)
    if not params and not frozen:
        raise ValueError(
            f"{who}: the model {type(model).__name__} has no parameters, so there are no gradients to "
            "measure; pass the model that owns the weights"
        )
    if not params:
        raise ValueError(
            f"{who}: every parameter of {type(model).__name__} has requires_grad=False; unfreeze the "
            "layers you train (p.requires_grad_(True)) before monitoring"
        )
    return names, params, frozen


def scalar_loss(loss: Any, who: str) -> torch.Tensor | None:
    """Validate a loss; returns a detached float32 0-d tensor (or None)."""
    if loss is None:
        return None
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        return torch.tensor(float(loss))
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"{who}: loss must be a scalar tensor or a float, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(
            f"{who}: loss must be a scalar, got a tensor of shape {tuple(loss.shape)}; reduce it first, "
            "e.g. loss.mean() or a loss_fn with reduction='mean'"
        )
    return loss.detach().float().reshape(())


def split_batch(batch: Any, who: str) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise TypeError(
            f"{who}: batch must be a pair (inputs, targets) so that loss = loss_fn(model(inputs), targets); "
            f"got {got}"
        )
    return batch[0], batch[1]


def require_grad_mode(who: str) -> None:
    """Refuse to run under ``torch.no_grad()`` / ``torch.inference_mode()``: backward needs a graph."""
    if torch.is_grad_enabled():
        return
    if torch.is_inference_mode_enabled():
        mode, fix = "torch.inference_mode()", "call it outside the inference_mode block"
    else:
        mode, fix = "torch.no_grad()", "call it outside that block, or wrap the call in torch.enable_grad()"
    raise ValueError(
        f"{who} was called inside {mode}, so the model builds no autograd graph and there are no "
        f"gradients to measure; {fix}"
    )


def require_materialized(model: nn.Module, who: str) -> None:
    """Refuse parameters or buffers on the ``meta`` device: they hold no values to measure."""
    meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        more = f" and {len(meta) - 3} more" if len(meta) > 3 else ""
        raise ValueError(
            f"{who}: {type(model).__name__} has tensors on the 'meta' device ({', '.join(meta[:3])}{more}), "
            "which hold no values; materialise the model first, e.g. model.to_empty(device='cpu'), then "
            "load or initialise its weights"
        )


def _empty_part(name: str, value: Any) -> str | None:
    """How ``value`` (inputs or targets, or a dict entry of them) holds no samples; None if it has some."""
    if isinstance(value, torch.Tensor):
        return f"{name} has shape {tuple(value.shape)}" if value.dim() > 0 and value.shape[0] == 0 else None
    if isinstance(value, (dict, tuple, list)) and len(value) == 0:
        return f"{name} is an empty {type(value).__name__}"
    if isinstance(value, dict):
        return next((e for k, v in value.items() if (e := _empty_part(f"{name}[{k!r}]", v))), None)
    return None


def require_nonempty_batch(inputs: Any, targets: Any, who: str) -> None:
    """Refuse a batch with no samples: the loss is NaN or 0 and every gradient is zero, which is not health."""
    empty = _empty_part("inputs", inputs) or _empty_part("targets", targets)
    if empty:
        raise ValueError(
            f"{who}: the batch is empty ({empty}: 0 samples), so there is nothing to measure; pass a batch "
            "with at least one sample, e.g. next(iter(loader))"
        )


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer whose ``step()`` actually runs, inside a wrapper that steps it.

    Accelerate's ``AcceleratedOptimizer`` (``accelerator.prepare(optimizer)``, ``.optimizer``)
    subclasses ``torch.optim.Optimizer`` without calling its ``__init__``, so it has no hook tables
    (``register_step_pre_hook`` raised ``AttributeError``); Lightning's ``LightningOptimizer``
    (``self.optimizers()``, ``._optimizer``) is a copy of the optimizer's attributes whose hooks
    receive the inner optimizer. Both step the one they hold, and only when a step is due
    (Accelerate skips the step of a micro-batch that does not complete an accumulated gradient), so
    that optimizer's hooks fire exactly on real steps. Anything else is returned as it is.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> class Wrapper:  # as Lightning's: holds the optimizer, steps it
        ...     def __init__(self, o): self._optimizer = o
        >>> unwrap_optimizer(Wrapper(opt)) is opt, unwrap_optimizer(opt) is opt
        (True, True)
    """
    for _ in range(8):  # a wrapper of a wrapper, never a cycle
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            inner = getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer = inner
    return optimizer
