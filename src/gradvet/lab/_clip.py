"""Gradient transforms for the exploding-gradient experiment: norm, value and adaptive clipping.

Each is a ``(parameters) -> None`` callable applied between ``backward`` and
``optimizer.step`` (after the Monitor measured the raw gradients). Adaptive gradient
clipping (AGC) comes from ``gradvet.remedies`` when that module provides it, else from
the small reference implementation here.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Callable

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

GradTransform = Callable[[list[nn.Parameter]], None]


def norm_clip(max_norm: float) -> GradTransform:
    """Rescale all gradients together so their global L2 norm is at most ``max_norm``
    (Pascanu et al., 2013)."""
    return lambda params: nn.utils.clip_grad_norm_(params, max_norm)  # type: ignore[return-value]


def value_clip(limit: float) -> GradTransform:
    """Clamp every gradient entry to ``[-limit, limit]``."""
    return lambda params: nn.utils.clip_grad_value_(params, limit)


def _unit_norm(t: Tensor) -> Tensor:
    """L2 norm per output unit (row) for matrices and kernels, of the whole tensor otherwise."""
    if t.ndim <= 1:
        return t.norm()
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


@torch.no_grad()
def agc_(params: list[nn.Parameter], clip: float = 0.01, eps: float = 1e-3) -> None:
    """Adaptive gradient clipping (Brock et al., 2021, "High-Performance Large-Scale Image
    Recognition Without Normalization"): scale each unit's gradient so that
    ``||g_i|| <= clip * max(||W_i||, eps)``.

    Uses ``torch.where`` rather than a Python ``if`` on a tensor, so it never syncs.
    """
    for p in params:
        if p.grad is None:
            continue
        w_norm = _unit_norm(p.detach()).clamp_min(eps)
        g_norm = _unit_norm(p.grad)
        limit = clip * w_norm
        scale = torch.where(g_norm > limit, limit / g_norm.clamp_min(1e-6), torch.ones_like(g_norm))
        p.grad.mul_(scale)


_REMEDY_NAMES = ("adaptive_clip_grad_", "adaptive_grad_clip_", "agc_", "clip_grad_agc_", "agc")


def _works(fn: Callable[..., object], clip: float) -> bool:
    """Try ``fn(params, clip)`` on a throwaway layer: the remedies API may differ from ours."""
    probe = nn.Linear(3, 2)
    for p in probe.parameters():
        p.grad = torch.ones_like(p)
    try:
        fn(list(probe.parameters()), clip)
    except Exception:  # any failure means "not the signature we expect"
        return False
    grad = probe.weight.grad
    return grad is not None and bool(torch.isfinite(grad).all())


def resolve_agc(clip: float = 0.01) -> tuple[GradTransform, str]:
    """AGC as a transform, and where it came from (``gradvet.remedies.<name>`` or ``gradvet.lab``)."""
    if importlib.util.find_spec("gradvet.remedies") is not None:
        try:
            remedies = importlib.import_module("gradvet.remedies")
        except Exception as e:  # a half-written package must not break the lab
            log.warning("gradvet.remedies failed to import (%s); using the lab's AGC", e)
        else:
            for name in _REMEDY_NAMES:
                fn = getattr(remedies, name, None)
                if callable(fn) and _works(fn, clip):
                    return (lambda params, f=fn: f(params, clip)), f"gradvet.remedies.{name}"
    return (lambda params: agc_(params, clip)), "gradvet.lab.agc_"
