"""Per-layer statistics of a module's output and of the gradient reaching it.

The hooks only *collect*: each call adds sums into a small device tensor of
accumulators (so micro-batches of one optimizer step add up exactly, and
nothing syncs with the host; the sums also add over ranks).
:func:`derive_layer_stats` turns accumulators into the recorded statistics.

Accumulator columns (float64):

====  ===============================================================
0     sum of squares of dL/d output
1     number of dL/d output entries
2     non-finite entries of dL/d output
3     sum of outputs (finite entries)
4     sum of squared outputs (finite entries)
5     number of finite output entries
6     saturated output entries (see :mod:`gradvet.stats._activations`)
7     non-finite output entries
====  ===============================================================
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from gradvet.stats._activations import ActivationKind

N_ACC = 8

#: Names of the per-layer statistics in the order :func:`derive_layer_stats` returns them.
LAYER_STATS = (
    "grad_norm",  # ||dL/d output|| over the whole batch
    "grad_rms",  # ||dL/d output|| / sqrt(numel): per-element RMS, width independent
    "grad_nonfinite",  # count of non-finite entries in dL/d output
    "act_mean",  # mean of the output (finite entries)
    "act_std",  # std of the output (finite entries)
    "sat_frac",  # fraction of output entries that are saturated
    "dead_frac",  # fraction of units whose output is zero on the whole batch
    "out_nonfinite",  # count of non-finite entries in the output
)


def grad_stats(g: Tensor) -> Tensor:
    """Return ``[sum g^2, numel, non-finite count]`` (float64, on g's device)."""
    g32 = g.detach().float()
    return torch.stack(
        [
            g32.square().sum().double(),
            torch.full((), float(g.numel()), dtype=torch.float64, device=g.device),
            (~torch.isfinite(g32)).sum().double(),
        ]
    )


def _raw_moments(yf: Tensor, finite: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """``(sum y, sum y^2)`` in float64, accurate also when the mean dwarfs the spread.

    float32 sums of ``y`` and ``y^2`` make ``E[y^2] - E[y]^2`` cancel catastrophically
    for, e.g., saturated sigmoid outputs (mean ~1, std ~1e-5). The sums are taken
    around a pilot mean ``c`` in float32 and shifted back in float64 (the shifted-data
    algorithm, Chan, Golub & LeVeque 1983), keeping the accumulators additive over
    micro-batches and ranks without a float64 copy of the activation.
    """
    c = yf.sum() / count.clamp_min(1).float()
    d = torch.where(finite, yf - c, torch.zeros((), device=yf.device))
    s1 = d.sum().double()
    s2 = torch.linalg.vector_norm(d).double().square()
    c64 = c.double()
    return s1 + count * c64, s2 + 2 * c64 * s1 + count * c64.square()


def output_stats(
    y: Tensor, kind: Optional[ActivationKind], threshold: float, unit_dim: int
) -> tuple[Tensor, Optional[Tensor]]:
    """Statistics of an output tensor ``y``.

    Args:
        y: the (post-activation) output.
        kind: its activation kind; None for a plain layer output.
        threshold: saturation threshold as a fraction of the max derivative.
        unit_dim: the dimension that indexes units (features or channels).

    Returns:
        ``(acc[5], alive)``: accumulators for columns 3..7 and, for kinds that can
        die, a bool tensor ``[units]`` true where the unit was non-zero somewhere.
    """
    y = y.detach()
    y32 = y.float()
    finite = torch.isfinite(y32)
    yf = torch.where(finite, y32, torch.zeros((), device=y.device))
    sat = kind.saturated(y32, threshold).sum() if kind and kind.saturated else yf.new_zeros(())
    count = finite.sum().double()
    total, squares = _raw_moments(yf, finite, count)
    acc = torch.stack(
        [
            total,
            squares,
            count,
            sat.double(),
            (~finite).sum().double(),
        ]
    )
    alive = None
    if kind is not None and kind.can_die and y.dim() >= 1:
        d = unit_dim % y.dim()
        other = [i for i in range(y.dim()) if i != d]
        nz = y32 != 0
        alive = nz.any(dim=tuple(other)) if other else nz
    return acc, alive


def time_stats(g: Tensor, time_dim: int) -> Tensor:
    """Sum of squared gradient per time step: ``[T]`` (float64)."""
    g32 = g.detach().float().square()
    other = tuple(i for i in range(g.dim()) if i != time_dim % g.dim())
    return g32.sum(dim=other).double() if other else g32.double()


def derive_layer_stats(acc: Tensor, dead_frac: Tensor) -> Tensor:
    """Turn accumulators ``[L, N_ACC]`` and dead fractions ``[L]`` into ``[L, 8]`` stats.

    Layers that saw no forward (or no gradient) get NaN in the affected columns.
    """
    nan = torch.full_like(acc[:, 0], float("nan"))
    gcount, acount = acc[:, 1], acc[:, 5]
    gsq = acc[:, 0]
    has_g = gcount > 0
    has_a = (acount + acc[:, 7]) > 0
    mean = acc[:, 3] / acount.clamp_min(1)
    var = (acc[:, 4] / acount.clamp_min(1) - mean.square()).clamp_min(0)
    out = torch.stack(
        [
            torch.where(has_g, gsq.sqrt(), nan),
            torch.where(has_g, (gsq / gcount.clamp_min(1)).sqrt(), nan),
            torch.where(has_g, acc[:, 2], nan),
            torch.where(acount > 0, mean, nan),
            torch.where(acount > 0, var.sqrt(), nan),
            torch.where(acount > 0, acc[:, 6] / acount.clamp_min(1), nan),
            torch.where(has_a, dead_frac.to(acc.dtype), nan),
            torch.where(has_a, acc[:, 7], nan),
        ],
        dim=1,
    )
    return out.float()
