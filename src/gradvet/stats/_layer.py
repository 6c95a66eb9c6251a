"""Per-layer statistics of a module's output and of the gradient reaching it.

The hooks only *collect*: each call runs a few fused reductions whose 0-d results
are held until the step's collection (:mod:`gradvet.stats._batch` adds them into
per-layer sums in a handful of batched ops), so micro-batches of one optimizer
step add up exactly and nothing syncs with the host; the sums also add over
ranks. The per-call primitives, with the ops each dispatches (on a GPU, one
kernel per op; in the launch-bound regime their count is the cost):

- :func:`output_sums` (4 ops, 5 for half precision): ``var_mean`` of the output
  with non-finite entries zeroed (Welford's single pass: accurate when the mean
  dwarfs the spread, where ``E[y^2] - E[y]^2`` from plain float32 sums cancels
  catastrophically, e.g. saturated sigmoid outputs) and the non-finite count.
- :func:`grad_sums` (3 ops): the gradient's L2 norm and its non-finite count.

On the CPU, where reading a scalar costs no sync and float64 sums are cheap while
``var_mean`` is not (a scalar Welford loop: 25 us on 4,608 values against 3 us for
two float64 sums), :func:`cpu_output_sums` returns the float64 sums of ``y`` and
``y^2`` (exact enough without a shift: float32 values square exactly in float64)
and counts non-finite entries only where the sum is not finite; :func:`grad_sums`
likewise counts only where the norm is not finite. ``bench/taps.py --device-path``
turns these shortcuts off (:data:`CPU_SHORTCUTS`) to measure the GPU's ops on a CPU.
The hooks call these under ``torch.no_grad()``: no ``detach`` per tensor.

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

import math
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

_HALF = (torch.float16, torch.bfloat16)

#: Take the CPU shortcuts above (bench/taps.py --device-path sets it False).
CPU_SHORTCUTS = True


def _cpu(t: Tensor) -> bool:
    return CPU_SHORTCUTS and t.device.type == "cpu"


def grad_sums(g: Tensor) -> tuple[Tensor, Optional[Tensor]]:
    """``(||g||, non-finite count)`` of a gradient: 0-d float32 and int64 tensors, 3 ops, no sync.

    The count is None where it is known to be 0 without counting (a finite norm on the CPU).

    Half-precision gradients are reduced in float32 inside the norm kernel (no copy).
    ``g - g`` is 0 exactly where ``g`` is finite and NaN elsewhere: two ops where
    ``isfinite`` dispatches four.
    """
    norm = torch.linalg.vector_norm(g, dtype=torch.float32) if g.dtype in _HALF else torch.linalg.vector_norm(g)
    if CPU_SHORTCUTS and g.device.type == "cpu" and math.isfinite(norm.item()):  # sync-ok: a CPU tensor
        return norm, None
    return norm, torch.count_nonzero(g - g)


def cpu_output_sums(y: Tensor) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """``(sum, ||.||, non-finite count)`` of a CPU output's finite entries, accumulated in float64.

    2 ops when every entry is finite (a finite float64 sum of float32 values implies it; the
    count is then None), 5 otherwise.
    """
    s1 = torch.sum(y, dtype=torch.float64)
    if math.isfinite(s1.item()):  # sync-ok: a CPU tensor
        return s1, torch.linalg.vector_norm(y, dtype=torch.float64), None
    z = torch.nan_to_num(y, 0.0, 0.0, 0.0)
    bad = torch.count_nonzero(y - y)
    return torch.sum(z, dtype=torch.float64), torch.linalg.vector_norm(z, dtype=torch.float64), bad


def output_sums(y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(var, mean, non-finite count)`` of an output with its non-finite entries read as 0.

    With ``n = y.numel()`` the finite entries sum to ``mean * n`` and their squares to
    ``(var + mean^2) * n``; :class:`gradvet.stats._batch.CallLog` forms those sums in
    float64 at collection. 4 ops (5 for a half-precision ``y``, copied to float32 once).
    """
    if y.dtype in _HALF:
        z = y.float().nan_to_num_(0.0, 0.0, 0.0)  # the copy is ours: zero in place
    else:
        z = torch.nan_to_num(y, 0.0, 0.0, 0.0)
    var, mean = torch.var_mean(z, correction=0)
    # NaN and inf differ from the zero that replaced them; a finite entry equals itself
    return var, mean, torch.ne(y, z).sum()


def grad_stats(g: Tensor) -> Tensor:
    """Return ``[sum g^2, numel, non-finite count]`` (float64, on g's device): one call's accumulators."""
    with torch.no_grad():
        norm, bad = grad_sums(g)
    numel = torch.full((), float(g.numel()), dtype=torch.float64, device=g.device)
    zero = numel.new_zeros(())
    return torch.stack([norm.double().square(), numel, zero if bad is None else bad.double()])


def output_stats(
    y: Tensor, kind: Optional[ActivationKind], threshold: float, unit_dim: int
) -> tuple[Tensor, Optional[Tensor]]:
    """Statistics of an output tensor ``y`` (one call's accumulators, the functional form of the taps).

    Args:
        y: the (post-activation) output.
        kind: its activation kind; None for a plain layer output.
        threshold: saturation threshold as a fraction of the max derivative.
        unit_dim: the dimension that indexes units (features or channels).

    Returns:
        ``(acc[5], alive)``: accumulators for columns 3..7 and, for kinds that can
        die, a bool tensor ``[units]`` true where the unit was non-zero somewhere.
    """
    if not y.numel():
        return torch.zeros(5, dtype=torch.float64, device=y.device), None
    n = float(y.numel())
    with torch.no_grad():
        if _cpu(y):
            s1, norm, maybe_bad = cpu_output_sums(y)
            s2, bad = norm.square(), s1.new_zeros(()) if maybe_bad is None else maybe_bad
        else:
            var, mean, bad = output_sums(y)
            s1, s2 = mean.double() * n, (var.double() + mean.double().square()) * n
        sat, peak = activation_stats(y, kind, threshold, unit_dim) if kind is not None else (None, None)
    zero = s1.new_zeros(())
    acc = torch.stack([s1, s2, n - bad.double(), zero if sat is None else sat.double(), bad.double()])
    return acc, None if peak is None else peak != 0


def activation_stats(
    y: Tensor, kind: ActivationKind, threshold: float, unit_dim: int
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Saturation and death of an activation's output, without its moments.

    Args:
        y: the activation's output.
        kind: its activation kind.
        threshold: saturation threshold as a fraction of the max derivative.
        unit_dim: the dimension that indexes units (features or channels).

    Returns:
        ``(saturated, peak)``: the number of saturated entries (a 0-d tensor, None if
        the kind does not saturate) and, for kinds that can die, ``max |y|`` per unit
        (``[units]``; a unit is alive where it is non-zero, NaN included), else None.
    """
    y32 = y.float() if y.dtype in _HALF else y
    sat = kind.saturated(y32, threshold).sum() if kind.saturated else None
    peak = unit_peak(y32, unit_dim) if kind.can_die and y.dim() >= 1 else None
    return sat, peak


def unit_peak(y: Tensor, unit_dim: int) -> Tensor:
    """``max |y|`` per unit (one op): non-zero, or NaN, exactly where the unit's output is non-zero somewhere."""
    d = unit_dim % y.dim()
    other = tuple(i for i in range(y.dim()) if i != d)
    if not other:
        return y.abs()
    if not y.numel():
        return y.new_zeros(y.shape[d])
    return torch.linalg.vector_norm(y, float("inf"), dim=other)


def _alive(y: Tensor, unit_dim: int) -> Tensor:
    """Bool ``[units]``: true where the unit's output is non-zero (or NaN) somewhere."""
    return unit_peak(y, unit_dim) != 0


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
