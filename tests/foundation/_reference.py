"""Independent plain-PyTorch recomputation of what gradvet records.

Nothing here imports gradvet's statistics: outputs are captured with forward
hooks that call ``retain_grad()``, gradients come from plain autograd, and each
statistic is the textbook formula on the captured tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

import gradvet

# float32 statistics against float32 recomputation: tight, but not bitwise.
RTOL, ATOL = 1e-5, 1e-7


def first_float(out: Any) -> Optional[Tensor]:
    """First floating tensor of a module output (same convention as gradvet's taps)."""
    if isinstance(out, Tensor):
        return out if out.is_floating_point() else None
    if isinstance(out, (tuple, list)):
        for o in out:
            t = first_float(o)
            if t is not None:
                return t
    return None


def monitored_step(
    model: nn.Module, inputs: Any, loss_fn: Callable[[Any], Tensor], **overrides: Any
):
    """One measured forward/backward (profile "full"); returns ``(run, loss)``."""
    with gradvet.Monitor(model, profile="full", **overrides) as monitor:
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs))
        loss.backward()
        monitor.step(loss)
    return monitor.run, loss.detach()


def reference_outputs(
    model: nn.Module, inputs: Any, loss_fn: Callable[[Any], Tensor], names: Iterable[str]
) -> dict[str, list[tuple[Tensor, Optional[Tensor]]]]:
    """``{module name: [(output, dL/d output) per call]}`` by retain_grad on module outputs."""
    wanted = set(names)
    seen: dict[str, list[Tensor]] = {}
    handles = []
    for name, mod in model.named_modules():
        if name not in wanted:
            continue

        def hook(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
            y = first_float(out)
            if y is None:
                return
            if y.requires_grad:
                y.retain_grad()
            seen.setdefault(name, []).append(y)

        handles.append(mod.register_forward_hook(hook))
    try:
        model.zero_grad(set_to_none=True)
        loss_fn(model(inputs)).backward()
    finally:
        for h in handles:
            h.remove()
    return {
        n: [(y.detach().clone(), None if y.grad is None else y.grad.clone()) for y in ys]
        for n, ys in seen.items()
    }


def twin(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Deep copy; with ``inplace=False`` every in-place ReLU becomes out-of-place.

    retain_grad follows a tensor through in-place ops, so dL/d(pre-activation)
    of a layer followed by ``ReLU(inplace=True)`` is read off an out-of-place twin.
    """
    m = copy.deepcopy(model)
    if not inplace:
        for mod in m.modules():
            if hasattr(mod, "inplace"):
                mod.inplace = False
    return m


def layer_index(run: gradvet.Run, name: str) -> int:
    return [layer["name"] for layer in run.layers].index(name)


def layer_value(run: gradvet.Run, metric: str, name: str, row: int = 0) -> float:
    return float(run.series(f"layer/{metric}").values[row, layer_index(run, name)])


def expected_layer_stats(calls: list[tuple[Tensor, Optional[Tensor]]]) -> dict[str, float]:
    """grad_norm / grad_rms / act_mean / act_std over every call of one module."""
    outs = torch.cat([y.detach().double().flatten() for y, _ in calls])
    grads = [g for _, g in calls if g is not None]
    res = {"act_mean": outs.mean().item(), "act_std": outs.std(unbiased=False).item()}
    if grads:
        flat = torch.cat([g.double().flatten() for g in grads])
        res["grad_norm"] = flat.norm().item()
        res["grad_rms"] = flat.square().mean().sqrt().item()
    return res


def assert_close(
    actual: float, expected: float, rtol: float = RTOL, atol: float = ATOL, what: str = ""
) -> None:
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def dead_fraction(y: Tensor, unit_dim: int) -> float:
    """Fraction of units whose output is exactly zero on every sample (and position)."""
    d = unit_dim % y.dim()
    other = tuple(i for i in range(y.dim()) if i != d)
    return (y == 0).all(dim=other).double().mean().item()
