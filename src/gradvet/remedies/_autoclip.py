"""AutoClip: clip the global gradient norm to a percentile of its own history.

Seetharaman, Wichern, Pardo & Le Roux, 2020, "AutoClip: Adaptive Gradient Clipping for
Source Separation Networks". The history is a preallocated device buffer written with a
ring index kept on the host, and the percentile is taken on the device: no sync per step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import torch
from torch import Tensor

from gradvet.errors import GradvetUsageError
from gradvet.remedies._clip import (
    GlobalNormState,
    clip_to_,
    global_norm_state,
    params_global_norm,
    require_l2,
)
from gradvet.remedies._transform_base import GradientTransform

_START = 256  # first capacity of an unbounded history; doubled when full


# -- functional core ------------------------------------------------------------------
def record_norm(buf: Tensor, count: int, value: Tensor, bounded: bool) -> Tensor:
    """A copy of the history ``buf`` with ``value`` written at slot ``count % len(buf)``.

    An unbounded history that is full doubles first. A non-finite ``value`` is written as
    NaN, which :func:`history_percentile` ignores.
    """
    if not bounded and count >= buf.numel():
        grown = torch.full((2 * buf.numel(),), math.nan, dtype=buf.dtype, device=buf.device)
        grown[: buf.numel()] = buf
        buf = grown
    else:
        buf = buf.clone()
    buf[count % buf.numel()] = torch.where(torch.isfinite(value), value, torch.full_like(value, math.nan))
    return buf


def history_percentile(window: Tensor, percentile: float) -> Tensor:
    """The ``percentile``-th percentile of the non-NaN values of ``window`` (0-d tensor).

    Linear interpolation between the two nearest ranks, ``numpy.nanpercentile``'s default
    ``method='linear'`` (Hyndman & Fan's definition 7), via ``torch.nanquantile``, which
    checks ``q`` on the host only and so does not sync on CUDA.
    """
    return torch.nanquantile(window, percentile / 100.0, interpolation="linear")


# -- transform ------------------------------------------------------------------------
@dataclass(frozen=True)
class AutoClipState(GlobalNormState):
    """State of :func:`autoclip`: :class:`GlobalNormState` plus the norm history."""

    threshold: Tensor  # the clipping threshold of the last step (NaN before the first)
    history: Tensor = field(repr=False)  # ring buffer of global norms; NaN: empty or non-finite
    count: int = 0  # norms written so far (host-side ring index: reading it never syncs)


class AutoClip(GradientTransform):
    """The transform :func:`autoclip` returns."""

    state: AutoClipState

    def __init__(self, percentile: float = 10.0, history: Optional[int] = None) -> None:
        self.percentile = check_percentile(percentile)
        self.history = check_history(history)
        super().__init__()

    def init_state(self, device: torch.device) -> AutoClipState:
        base = global_norm_state(device)
        size = self.history if self.history is not None else _START
        return AutoClipState(
            **{k: getattr(base, k) for k in ("steps", "clipped", "nonfinite", "last_norm")},
            threshold=torch.full((), math.nan, device=device),
            history=torch.full((size,), math.nan, device=device),
            count=0,
        )

    def apply(self, params: list[Tensor], norms: Optional[list[Tensor]]) -> Tensor:
        require_l2(norms, 2.0, "autoclip")
        state = self.state
        total = params_global_norm(params, norms, 2.0, state.steps.device)
        buf = state.history if state.history.dtype == total.dtype else state.history.to(total.dtype)
        buf = record_norm(buf, state.count, total, bounded=self.history is not None)
        window = buf[: min(state.count + 1, buf.numel())]  # the current norm is included
        threshold = history_percentile(window, self.percentile)
        clipped = clip_to_(params, total, threshold, 1e-6, state)
        self.state = replace(clipped, threshold=threshold, history=buf, count=state.count + 1)
        return total

    def norm_history(self) -> Tensor:
        """The norms the threshold is taken over, oldest first (NaN where non-finite)."""
        buf, count = self.state.history, self.state.count
        if count <= buf.numel():
            return buf[:count]
        return torch.roll(buf, -(count % buf.numel()))

    def __repr__(self) -> str:
        return f"autoclip(percentile={self.percentile}, history={self.history})"


def autoclip(percentile: float = 10.0, history: Optional[int] = None) -> AutoClip:
    """AutoClip: clip the global norm to the p-th percentile of all global norms so far.

    At step t, with ``n_t`` the global L2 gradient norm, ``threshold_t =
    percentile_p(n_1, ..., n_t)`` (the current norm included) and every gradient is scaled
    by ``min(1, threshold_t / (n_t + 1e-6))`` (Seetharaman, Wichern, Pardo & Le Roux,
    2020, "AutoClip: Adaptive Gradient Clipping for Source Separation Networks"). The
    percentile uses linear interpolation between ranks, as ``numpy.percentile`` does by
    default; non-finite norms are kept out of the history (``numpy.nanpercentile``), and
    such a step is counted in ``state.nonfinite`` and scaled like
    :func:`clip_by_global_norm` does.

    Args:
        percentile: p in (0, 100]; the paper found 10 a good default. 100 clips to the
            largest norm so far, i.e. never clips a new maximum.
        history: keep only the last ``history`` norms (a ring buffer), or None to keep them
            all (a buffer that doubles when full; each step then sorts the whole history).

    Returns:
        An :class:`AutoClip`; calling it returns the global norm before clipping. State:
        ``steps``, ``clipped``, ``nonfinite``, ``last_norm``, ``threshold``, ``history``,
        ``count``; ``clip.norm_history()`` lists the recorded norms in order.

    Raises:
        GradvetUsageError: ``percentile`` is outside (0, 100] or ``history`` is not a
            positive int or None.

    Example:
        >>> import torch
        >>> from gradvet.remedies import autoclip
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> clip = autoclip(percentile=50)
        >>> for g in ([3.0, 4.0], [0.6, 0.8], [30.0, 40.0]):  # global norms 5, 1, 50
        ...     w.grad = torch.tensor(g)
        ...     _ = clip([w])
        >>> clip.state.threshold  # median of (5, 1, 50)
        tensor(5.)
        >>> w.grad.norm().round(decimals=4)
        tensor(5.)
    """
    return AutoClip(percentile, history)


def check_percentile(percentile: Any) -> float:
    ok = isinstance(percentile, numbers.Real) and not isinstance(percentile, bool)
    if not ok or not (0.0 < float(percentile) <= 100.0):
        raise GradvetUsageError(
            f"autoclip(percentile={percentile!r}): percentile must be a number in (0, 100], e.g. 10.0 "
            "(a percentile, not a fraction: pass 10 for the 10th percentile)"
        )
    return float(percentile)


def check_history(history: Any) -> Optional[int]:
    if history is None:
        return None
    if isinstance(history, bool) or not isinstance(history, numbers.Integral) or history < 1:
        raise GradvetUsageError(
            f"autoclip(history={history!r}): history must be a positive int (how many recent norms "
            "to keep) or None to keep them all"
        )
    return int(history)
