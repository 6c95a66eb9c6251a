"""Clipping by the global gradient norm and by value, with a pure functional core.

The functions (:func:`grad_norms`, :func:`global_norm`, :func:`clip_coef`, :func:`scale_grads_`,
:func:`clamp_grads_`) are the math, as ``torch.nn.utils.get_total_norm`` and
``clip_grads_with_norm_`` split it; the transforms add inspectable state on top.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Optional, TypeVar

import torch
from torch import Tensor

from gradvet.errors import GradvetUsageError
from gradvet.remedies._transform_base import (
    GradientTransform,
    check_positive,
    counter,
    groups,
    sum_on,
)
from gradvet.stats._params import _foreach_norm


# -- functional core ------------------------------------------------------------------
def grad_norms(grads: Sequence[Tensor], norm_type: float = 2.0) -> list[Tensor]:
    """The ``norm_type``-norm of each gradient (0-d tensors on each gradient's device).

    Dense gradients go through fused ``torch._foreach_norm`` per (device, dtype); half
    precision is accumulated in float32. A sparse gradient is coalesced first (duplicate
    indices add up) and its stored values are reduced; coalescing syncs on CUDA.
    """
    out: list[Optional[Tensor]] = [None] * len(grads)
    for _, idx in groups(grads).items():
        for i, n in zip(idx, _foreach_norm([grads[i] for i in idx], norm_type)):
            out[i] = n
    for i, g in enumerate(grads):
        if g.is_sparse:
            vals = g.coalesce()._values()
            acc = torch.promote_types(vals.dtype, torch.float32)
            out[i] = torch.linalg.vector_norm(vals, norm_type, dtype=acc)
    return out  # type: ignore[return-value]


def global_norm(norms: Sequence[Tensor], norm_type: float = 2.0, device: Optional[torch.device] = None) -> Tensor:
    """The norm of the per-parameter norms: the norm of all gradients as one vector.

    ``||(n_1, ..., n_P)||_p`` equals ``||concat(g_1, ..., g_P)||_p`` for every p, inf included.
    """
    device = device or norms[0].device
    dtype = functools.reduce(torch.promote_types, (n.dtype for n in norms))
    return torch.linalg.vector_norm(torch.stack([n.to(device, dtype) for n in norms]), norm_type)


def clip_coef(total: Tensor, max_norm: float | Tensor, eps: float = 1e-6) -> Tensor:
    """``min(1, max_norm / (total + eps))`` as a tensor: no Python ``if`` on a device value.

    NaN when ``total`` is NaN, 0 when it is inf (then finite entries become 0 and infinite
    ones NaN after scaling, exactly as with ``torch.nn.utils.clip_grad_norm_``).
    """
    return (max_norm / (total + eps)).clamp(max=1.0)


def scale_grads_(grads: Sequence[Tensor], coef: Tensor) -> None:
    """Multiply every gradient by the 0-d ``coef`` in place (fused per device and dtype)."""
    for (device, dtype), idx in groups(grads).items():
        torch._foreach_mul_([grads[i] for i in idx], coef.to(device, dtype))
    for g in grads:
        if g.is_sparse:  # scaling the stored values scales the sum of duplicates too
            g.mul_(coef.to(g.device, g.dtype))


def clamp_grads_(grads: Sequence[Tensor], clip_value: float) -> list[Tensor]:
    """Clamp every dense gradient entry to ``[-clip_value, clip_value]`` in place.

    Returns the number of entries each gradient had outside that range (NaN is not counted,
    and stays NaN, as with ``torch.clamp``). A sparse gradient's stored values are clamped:
    coalesce it first, or duplicates of one index may add up to more than ``clip_value``.
    """
    vals = [g._values() if g.is_sparse else g for g in grads]
    counts = [(v.abs() > clip_value).sum() for v in vals]
    torch._foreach_clamp_min_(vals, -clip_value)
    torch._foreach_clamp_max_(vals, clip_value)
    return counts


# -- clip by global norm --------------------------------------------------------------
@dataclass(frozen=True)
class GlobalNormState:
    """State of :func:`clip_by_global_norm` (and :func:`autoclip`); 0-d device tensors."""

    steps: Tensor  # calls with at least one gradient
    clipped: Tensor  # steps whose finite global norm exceeded the threshold (grads scaled down)
    nonfinite: Tensor  # steps whose global norm was NaN or inf (grads left NaN/zero, as torch does)
    last_norm: Tensor  # global norm before clipping at the last step (NaN before the first)


S = TypeVar("S", bound=GlobalNormState)


def global_norm_state(device: torch.device) -> GlobalNormState:
    return GlobalNormState(
        steps=counter(device),
        clipped=counter(device),
        nonfinite=counter(device),
        last_norm=torch.full((), math.nan, device=device),
    )


def params_global_norm(
    params: list[Tensor], norms: Optional[list[Tensor]], norm_type: float, device: torch.device
) -> Tensor:
    """The global gradient norm of ``params``, from ``norms`` (L2) when given."""
    if norms is None:
        norms = grad_norms([p.grad for p in params], norm_type)  # type: ignore[misc]
    return global_norm(norms, norm_type, device)


def clip_to_(
    params: list[Tensor], total: Tensor, threshold: float | Tensor, eps: float, state: S
) -> S:
    """Scale the gradients so the global norm ``total`` becomes at most ``threshold``; the
    next state. Shared with AutoClip, whose threshold is a device tensor."""
    scale_grads_([p.grad for p in params], clip_coef(total, threshold, eps))  # type: ignore[misc]
    finite = torch.isfinite(total)
    return replace(
        state,
        steps=state.steps + 1,
        clipped=state.clipped + (finite & (total > threshold)),
        nonfinite=state.nonfinite + ~finite,
        last_norm=total.detach(),
    )


class ClipByGlobalNorm(GradientTransform):
    """The transform :func:`clip_by_global_norm` returns."""

    state: GlobalNormState

    def __init__(self, max_norm: float, norm_type: float = 2.0, eps: float = 1e-6) -> None:
        self.max_norm = check_positive(max_norm, "max_norm", "clip_by_global_norm")
        self.norm_type = check_norm_type(norm_type, "clip_by_global_norm")
        self.eps = check_eps(eps, "clip_by_global_norm")
        super().__init__()

    def init_state(self, device: torch.device) -> GlobalNormState:
        return global_norm_state(device)

    def apply(self, params: list[Tensor], norms: Optional[list[Tensor]]) -> Tensor:
        require_l2(norms, self.norm_type, "clip_by_global_norm")
        total = params_global_norm(params, norms, self.norm_type, self.state.steps.device)
        self.state = clip_to_(params, total, self.max_norm, self.eps, self.state)
        return total

    def __repr__(self) -> str:
        return f"clip_by_global_norm(max_norm={self.max_norm}, norm_type={self.norm_type}, eps={self.eps})"


def clip_by_global_norm(max_norm: float, norm_type: float = 2.0, eps: float = 1e-6) -> ClipByGlobalNorm:
    """Scale all gradients together so their global norm is at most ``max_norm``.

    ``total = ||(||g_1||, ..., ||g_P||)||_p``, then every ``g_i <- g_i * min(1, max_norm /
    (total + eps))`` (Pascanu, Mikolov & Bengio, 2013, "On the difficulty of training
    recurrent neural networks"). The coefficient is a clamped device tensor, so the step
    never syncs; the result equals ``torch.nn.utils.clip_grad_norm_``. The direction of the
    whole gradient is kept.

    Pass ``norms=`` the per-parameter L2 norms gradvet's Monitor already computed
    (``monitor.last_grad_norms``, aligned with ``monitor.parameters``) and the clipper skips
    its own pass over the gradients. With AMP, call ``scaler.unscale_(optimizer)`` before
    ``monitor.step`` and the clipper, as for any clipping.

    A NaN or inf global norm is not fixed here: the gradients are scaled by the clamped
    coefficient like torch does (NaN everywhere, or 0 and NaN), ``state.nonfinite`` counts
    the step, and ``state.clipped`` does not. Put :func:`skip_nonfinite` first in a
    :func:`chain` to drop such steps instead.

    Args:
        max_norm: the largest global norm allowed (finite, > 0).
        norm_type: p of the norm (> 0, ``float('inf')`` for the max-norm); ``norms=`` needs 2.
        eps: added to the norm before dividing, as torch does.

    Returns:
        A :class:`ClipByGlobalNorm`; calling it returns the global norm before clipping.
        State: ``steps``, ``clipped``, ``nonfinite``, ``last_norm``.

    Raises:
        GradvetUsageError: ``max_norm`` is not a finite positive number, ``norm_type`` is
            not > 0, or ``eps`` < 0.

    Example:
        >>> import torch, gradvet
        >>> from gradvet.remedies import clip_by_global_norm
        >>> model = torch.nn.Linear(4, 2)
        >>> clip = clip_by_global_norm(max_norm=0.1)
        >>> with gradvet.Monitor(model) as monitor:
        ...     loss = model(torch.ones(8, 4)).pow(2).sum() * 100
        ...     loss.backward()
        ...     monitor.step(loss)
        ...     total = clip(monitor.parameters, norms=monitor.last_grad_norms)
        >>> norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        >>> bool(norm <= 0.1 + 1e-6), int(clip.state.clipped)
        (True, 1)
    """
    return ClipByGlobalNorm(max_norm, norm_type, eps)


def check_norm_type(norm_type: float, who: str) -> float:
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not norm_type > 0:
        raise GradvetUsageError(
            f"{who}(norm_type={norm_type!r}): norm_type must be a number > 0, e.g. 2.0 or float('inf')"
        )
    return float(norm_type)


def check_eps(eps: float, who: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
        raise GradvetUsageError(f"{who}(eps={eps!r}): eps must be a finite number >= 0, e.g. 1e-6")
    return float(eps)


def require_l2(norms: Optional[list[Tensor]], norm_type: float, who: str) -> None:
    if norms is not None and norm_type != 2.0:
        raise GradvetUsageError(
            f"{who}(norm_type={norm_type}) cannot use norms=: those are L2 norms; use norm_type=2.0 "
            "or call it without norms="
        )


# -- clip by value --------------------------------------------------------------------
@dataclass(frozen=True)
class ValueClipState:
    """State of :func:`clip_by_value`; 0-d device tensors."""

    steps: Tensor  # calls with at least one gradient
    clipped: Tensor  # gradient entries clamped, summed over all steps
    last_clipped: Tensor  # gradient entries clamped at the last step


class ClipByValue(GradientTransform):
    """The transform :func:`clip_by_value` returns."""

    state: ValueClipState

    def __init__(self, clip_value: float) -> None:
        self.clip_value = check_positive(clip_value, "clip_value", "clip_by_value")
        super().__init__()

    def init_state(self, device: torch.device) -> ValueClipState:
        return ValueClipState(steps=counter(device), clipped=counter(device), last_clipped=counter(device))

    def apply(self, params: list[Tensor], norms: Optional[list[Tensor]]) -> Tensor:
        for p in params:
            if p.grad is not None and p.grad.is_sparse and not p.grad.is_coalesced():
                # clamp the summed entries, not the duplicates; coalescing syncs on CUDA
                p.grad = p.grad.coalesce()
        grads: list[Tensor] = [p.grad for p in params]  # type: ignore[misc]
        state = self.state
        n = sum_on(clamp_grads_(grads, self.clip_value), state.steps.device)
        self.state = replace(state, steps=state.steps + 1, clipped=state.clipped + n, last_clipped=n)
        return n

    def __repr__(self) -> str:
        return f"clip_by_value(clip_value={self.clip_value})"


def clip_by_value(clip_value: float) -> ClipByValue:
    """Clamp every gradient entry to ``[-clip_value, clip_value]``.

    ``g <- clamp(g, -c, c)`` entry by entry, as ``torch.nn.utils.clip_grad_value_`` does
    (Mikolov's clipping of RNN gradients, described in Pascanu, Mikolov & Bengio, 2013).
    Unlike norm clipping it changes the gradient's direction. NaN entries stay NaN and are
    not counted. ``norms=`` is accepted and ignored. Sparse gradients are coalesced first.

    Args:
        clip_value: the largest absolute value allowed (finite, > 0).

    Returns:
        A :class:`ClipByValue`; calling it returns the number of entries clamped this step.
        State: ``steps``, ``clipped`` (entries, all steps), ``last_clipped``.

    Raises:
        GradvetUsageError: ``clip_value`` is not a finite positive number.

    Example:
        >>> import torch
        >>> from gradvet.remedies import clip_by_value
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> w.grad = torch.tensor([-5.0, 0.5, 2.0])
        >>> clip = clip_by_value(1.0)
        >>> int(clip([w]))
        2
        >>> w.grad
        tensor([-1.0000,  0.5000,  1.0000])
    """
    return ClipByValue(clip_value)
