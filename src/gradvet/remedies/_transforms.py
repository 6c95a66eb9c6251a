"""Gradient transforms: optax-style clipping and guarding that edit ``p.grad`` in place.

Call one between ``loss.backward()`` and ``optimizer.step()``::

    clip = chain(skip_nonfinite(), clip_by_global_norm(1.0))
    ...; loss.backward(); monitor.step(loss)
    clip(monitor.parameters, norms=monitor.last_grad_norms); opt.step()

Each transform is a small object with inspectable state (``clip.state``: step and event
counts, last norm, as 0-d device tensors), a pure functional core, and no host sync per
step. One concept per module: :mod:`._clip` (global norm, value), :mod:`._agc` (adaptive
clipping), :mod:`._autoclip` (percentile of the norm history), :mod:`._finite` (skip
non-finite steps), :mod:`._chain` (composition), :mod:`._transform_base` (the protocol).
"""

from gradvet.remedies._agc import AdaptiveClip, AGCState, adaptive_clip, agc_, unit_norms
from gradvet.remedies._autoclip import AutoClip, AutoClipState, autoclip, history_percentile
from gradvet.remedies._chain import Chain, chain
from gradvet.remedies._clip import (
    ClipByGlobalNorm,
    ClipByValue,
    GlobalNormState,
    ValueClipState,
    clamp_grads_,
    clip_by_global_norm,
    clip_by_value,
    clip_coef,
    global_norm,
    grad_norms,
    scale_grads_,
)
from gradvet.remedies._finite import FiniteState, SkipNonfinite, all_finite, skip_nonfinite
from gradvet.remedies._transform_base import GradientTransform

__all__ = [
    "AGCState",
    "AdaptiveClip",
    "AutoClip",
    "AutoClipState",
    "Chain",
    "ClipByGlobalNorm",
    "ClipByValue",
    "FiniteState",
    "GlobalNormState",
    "GradientTransform",
    "SkipNonfinite",
    "ValueClipState",
    "adaptive_clip",
    "agc_",
    "all_finite",
    "autoclip",
    "chain",
    "clamp_grads_",
    "clip_by_global_norm",
    "clip_by_value",
    "clip_coef",
    "global_norm",
    "grad_norms",
    "history_percentile",
    "scale_grads_",
    "skip_nonfinite",
    "unit_norms",
]
