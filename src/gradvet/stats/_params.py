"""Per-parameter gradient statistics, computed on the device without a host sync.

One row per trainable parameter: gradient L2 norm, max |g|, count of non-finite
gradient entries, parameter L2 norm. Dense gradients are grouped by (device,
dtype) and reduced with the fused ``torch._foreach_norm`` kernels, as
``torch.nn.utils.get_total_norm`` does; sparse gradients (``nn.Embedding(sparse=True)``)
are reduced over their stored values. A parameter without a gradient (unused this
step) gets NaN in every gradient column: "no gradient", which is not "zero".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from gradvet.stats._layer import _HALF

#: Column names of the tensor returned by :func:`param_stats`.
PARAM_STATS = ("grad_norm", "grad_max", "grad_nonfinite", "param_norm")


def _group(tensors: Sequence[Optional[Tensor]]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        if t is not None and not t.is_sparse:
            groups[(t.device, t.dtype)].append(i)
    return groups


def _foreach_norm(tensors: list[Tensor], ord: float) -> list[Tensor]:
    # _foreach_norm exists since torch 1.13; it is the same kernel clip_grad_norm_ uses.
    if any(t.dtype in _HALF for t in tensors):  # a list may mix dtypes (the update-ratio buffers)
        # a half-precision result keeps 3 significant digits: accumulate and return float32
        try:
            return list(torch._foreach_norm(tensors, ord, dtype=torch.float32))
        except TypeError:  # torch < 2.4 has no dtype argument
            return [torch.linalg.vector_norm(t, ord, dtype=torch.float32) for t in tensors]
    if ord == float("inf") and tensors and tensors[0].device.type == "cpu":
        return _cpu_inf_norms(tensors)
    return list(torch._foreach_norm(tensors, ord))


# Below this size the fused CPU inf-norm is the cheaper one: one op for all of them
# (a GPT-2-shaped model of 148 small tensors: 148 ops -> 1, issue 13).
_SMALL = 1 << 16


def _cpu_inf_norms(tensors: list[Tensor]) -> list[Tensor]:
    """max |t| per tensor on the CPU, NaN kept.

    The fused inf-norm takes a slow scalar loop on large CPU tensors (3.0 ms vs 0.2 ms with
    aminmax on an 8x512 MLP's gradients): those go through aminmax, which reads each tensor
    once; the small ones go through a fused ``abs`` and a fused ``max``; empty ones are 0.
    """
    small = [i for i, t in enumerate(tensors) if 0 < t.numel() < _SMALL]
    out: list[Optional[Tensor]] = [None] * len(tensors)
    if small:
        # max of |t|, both fused: ~1.8 us per tensor against ~2.8 us for the fused inf-norm (its CPU
        # kernel is a scalar loop); the same values, NaN kept (max propagates it)
        ts = [tensors[i] for i in small]
        fused = torch._foreach_max(torch._foreach_abs(ts)) if hasattr(torch, "_foreach_max") else (
            torch._foreach_norm(ts, float("inf"))  # torch < 2.5
        )
        for i, v in zip(small, fused):
            out[i] = v
    return [_cpu_absmax(t) if v is None else v for t, v in zip(tensors, out)]


def _cpu_absmax(t: Tensor) -> Tensor:
    if t.numel() == 0:
        return t.new_zeros(())
    lo, hi = torch.aminmax(t)
    return torch.maximum(hi, -lo)


@torch.no_grad()  # the parameters are read as they are, without a detach (a dispatched op) per tensor
def param_stats(
    params: Sequence[Tensor],
    grads: Sequence[Optional[Tensor]],
    *,
    count_nonfinite: bool = True,
    grad_scale: Optional[Tensor] = None,
    device: Optional[torch.device] = None,
    extended: bool = True,
) -> Tensor:
    """Compute per-parameter statistics as a float32 tensor of shape ``[P, 4]``.

    Args:
        params: the parameters (for the parameter norm).
        grads: their gradients, ``None`` where a parameter has none.
        count_nonfinite: count non-finite gradient entries (one extra pass over each
            gradient); when False the column is 1.0 where the norm is non-finite and 0
            otherwise (a lower bound that costs nothing).
        grad_scale: optional scalar tensor the gradients are multiplied by (an AMP loss
            scale); gradient columns are divided by it to report true units.
        device: device of the result (defaults to the first parameter's).
        extended: also compute max |g| and the parameter norm (two more reads of each
            gradient and parameter). When False those columns are NaN and only the L2
            norm and the non-finite flag are computed: the economy profile's off steps.

    Returns:
        Tensor ``[P, 4]`` with columns :data:`PARAM_STATS`; NaN gradient columns for
        parameters whose gradient is None.
    """
    if len(params) != len(grads):
        raise ValueError(f"params and grads differ in length: {len(params)} vs {len(grads)}")
    device = device or (params[0].device if params else torch.device("cpu"))
    n = len(params)
    if not extended:
        return _unscale(_l2_only(grads, device), grad_scale, device)
    fast = _fast_path(params, grads, count_nonfinite, device)
    if fast is not None:
        return _unscale(fast, grad_scale, device)
    cols: list[list[Optional[Tensor]]] = [[None] * n for _ in PARAM_STATS]
    for (_, _), idx in _group(grads).items():
        gs: list[Tensor] = [grads[i] for i in idx]  # type: ignore[misc]
        l2 = _foreach_norm(gs, 2.0)
        mx = _foreach_norm(gs, float("inf"))
        l2_col = torch.stack(l2).float()
        nf = _count_nonfinite(gs, l2_col) if count_nonfinite else (~torch.isfinite(l2_col)).float()
        for j, i in enumerate(idx):
            cols[0][i], cols[1][i], cols[2][i] = l2[j], mx[j], nf[j]
    for i, g in enumerate(grads):
        if g is not None and g.is_sparse:
            vals = g.coalesce().values()
            cols[0][i] = torch.linalg.vector_norm(vals.float())
            cols[1][i] = vals.abs().max() if vals.numel() else vals.new_zeros(())
            cols[2][i] = (~torch.isfinite(vals)).sum()
    for (_, _), idx in _group(list(params)).items():
        pn = _foreach_norm([params[i] for i in idx], 2.0)
        for j, i in enumerate(idx):
            cols[3][i] = pn[j]
    nan = torch.full((), float("nan"), device=device)
    if n == 0:
        return torch.empty(0, len(PARAM_STATS), device=device)
    columns = [
        torch.stack([(v if v is not None else nan).to(device, torch.float32) for v in col])
        for col in cols
    ]
    return _unscale(torch.stack(columns, dim=1), grad_scale, device)


def _unscale(out: Tensor, grad_scale: Optional[Tensor], device: torch.device) -> Tensor:
    if grad_scale is not None:
        inv = 1.0 / grad_scale.to(device, torch.float32)
        out[:, :2] = out[:, :2] * inv
    return out


def _l2_only(grads: Sequence[Optional[Tensor]], device: torch.device) -> Tensor:
    """``[P, 4]`` with the L2 norm, the non-finite flag, and NaN elsewhere (one read per gradient)."""
    l2: list[Optional[Tensor]] = [None] * len(grads)
    for (_, _), idx in _group(grads).items():
        for i, v in zip(idx, _foreach_norm([grads[i] for i in idx], 2.0)):  # type: ignore[misc]
            l2[i] = v
    for i, g in enumerate(grads):
        if g is not None and g.is_sparse:
            l2[i] = torch.linalg.vector_norm(g.coalesce().values().float())
    nan = torch.full((), float("nan"), device=device)
    if not grads:
        return torch.empty(0, len(PARAM_STATS), device=device)
    col = torch.stack([(v if v is not None else nan).to(device, torch.float32) for v in l2])
    flag = (~torch.isfinite(col)).float()
    missing = [i for i, g in enumerate(grads) if g is None]
    if missing:  # "no gradient" is NaN, not a non-finite gradient
        flag[missing] = float("nan")
    nans = torch.full_like(col, float("nan"))
    return torch.stack([col, nans, flag, nans], dim=1)


def _fast_path(
    params: Sequence[Tensor], grads: Sequence[Optional[Tensor]], count_nonfinite: bool, device: torch.device
) -> Optional[Tensor]:
    """The common case in a handful of kernels: every gradient present, dense, one device and dtype."""
    if not params or any(g is None or g.is_sparse for g in grads):
        return None
    key = (grads[0].device, grads[0].dtype)  # type: ignore[union-attr]
    if key[0] != device or any((g.device, g.dtype) != key for g in grads):  # type: ignore[union-attr]
        return None
    if any((p.device, p.dtype) != key for p in params):
        return None
    gs: list[Tensor] = list(grads)  # type: ignore[arg-type]
    l2 = torch.stack(_foreach_norm(gs, 2.0)).float()
    mx = torch.stack(_foreach_norm(gs, float("inf"))).float()
    pn = torch.stack(_foreach_norm(list(params), 2.0)).float()
    nf = _count_nonfinite(gs, l2) if count_nonfinite else (~torch.isfinite(l2)).float()
    return torch.stack([l2, mx, nf, pn], dim=1)


def _count_nonfinite(grads: Sequence[Tensor], l2: Tensor) -> Tensor:
    """Exact count of non-finite entries per gradient: float32 ``[len(grads)]``.

    ``l2`` holds the gradients' L2 norms (``[len(grads)]``, on their device). A finite
    norm implies finite entries (one NaN or inf makes the sum of squares non-finite),
    so on the CPU, where reading ``l2`` costs no device sync, only gradients whose
    norm is non-finite get the counting pass. On other devices every gradient is
    counted: a host branch on ``l2`` there would sync each step.
    """
    from gradvet.stats import _layer

    if l2.device.type != "cpu" or not _layer.CPU_SHORTCUTS:  # bench/taps.py --device-path: a GPU's ops
        return _fused_nonfinite(grads)
    nf = torch.zeros(len(grads), dtype=torch.float32)
    for i in (~torch.isfinite(l2)).nonzero().flatten().tolist():  # sync-ok: CPU tensor
        nf[i] = (~torch.isfinite(grads[i])).sum()
    return nf


#: bytes of gradients counted per fused pass (the ``g - g`` temporaries of one pass live together)
_COUNT_CHUNK = 64 << 20


def fused_nonfinite_counts(grads: Sequence[Tensor]) -> list[Tensor]:
    """Non-finite entries per gradient without a host read: ``g - g`` is 0 where ``g`` is finite and NaN
    elsewhere, and a fused 0-norm counts its non-zeros (:func:`_foreach_norm`: half precision counted in
    float32, exact past 2048). Two multi-tensor kernels per chunk of ``_COUNT_CHUNK`` bytes, where one
    count per gradient was three kernels each (444 launches a step for GPT-2's 148 parameters); the
    temporaries of a chunk are freed before the next."""
    return [c for chunk in _chunks(grads, _COUNT_CHUNK) for c in _foreach_norm(list(torch._foreach_sub(chunk, chunk)), 0.0)]


def _fused_nonfinite(grads: Sequence[Tensor]) -> Tensor:
    """:func:`fused_nonfinite_counts` as a float32 ``[len(grads)]``."""
    return torch.stack(fused_nonfinite_counts(grads)).float()


def _chunks(tensors: Sequence[Tensor], limit: int) -> list[list[Tensor]]:
    """``tensors`` in order, in runs of at most ``limit`` bytes (a larger tensor alone)."""
    out: list[list[Tensor]] = []
    size = 0
    for t in tensors:
        n = t.numel() * t.element_size()
        if not out or (out[-1] and size + n > limit):
            out.append([])
            size = 0
        out[-1].append(t)
        size += n
    return out
