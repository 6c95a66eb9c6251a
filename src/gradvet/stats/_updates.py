"""Update/weight ratios ``||W_after - W_before|| / ||W_before||`` without allocation per step.

The weights are copied into buffers before ``optimizer.step()``; the buffers are
kept from one update step to the next, so a step costs one copy and one in-place
subtraction, not a fresh multi-megabyte clone and a fresh difference tensor
(allocating those makes the CPU allocator page-fault and zero new memory every
time; see docs/performance.md, P1). A buffer is allocated again only when its
parameter changed shape, dtype, device or tensor type, or joined the optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from gradvet.stats._params import _foreach_norm

_PLAIN = (Tensor, nn.Parameter)


def _plain(tensors: Sequence[Tensor]) -> bool:
    # the fused foreach kernels are for plain tensors and parameters; subclasses (DTensor, ...) go one by one
    return all(type(t) in _PLAIN for t in tensors)


def _kind(t: Tensor) -> type:
    # a parameter's copy (empty_like) is a plain tensor
    return Tensor if type(t) is nn.Parameter else type(t)


def _fits(buffer: Optional[Tensor], t: Tensor) -> bool:
    return (
        buffer is not None
        and type(buffer) is _kind(t)
        and buffer.shape == t.shape
        and buffer.dtype == t.dtype
        and buffer.device == t.device
        and buffer.stride() == t.stride()
    )


@torch.no_grad()  # parameters read without a detach per tensor
def snapshot(
    params: Sequence[Tensor], keys: Sequence[int], buffers: dict[int, Tensor]
) -> list[Tensor]:
    """Copy ``params`` into ``buffers`` (keyed by ``keys``) and return them in order.

    Args:
        params: the parameters the optimizer is about to change (read under ``no_grad``: no
            ``detach`` needed, one dispatched op per tensor saved).
        keys: a stable key per parameter (its index among the monitored ones).
        buffers: the buffers of the previous update step; updated in place: a
            buffer that no longer fits its parameter is replaced, a key that is
            gone is dropped.

    Returns:
        The buffers, aligned with ``params``, holding copies of them.
    """
    out: list[Tensor] = []
    for k, p in zip(keys, params):
        b = buffers.get(k)
        out.append(b if b is not None and _fits(b, p) else torch.empty_like(p))
    buffers.clear()
    buffers.update(zip(keys, out))
    if out and _plain(out) and _plain(params) and hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(out, list(params))
    else:
        for b, p in zip(out, params):
            b.copy_(p)
    return out


@torch.no_grad()
def l2_norms(tensors: Sequence[Tensor]) -> Tensor:
    """L2 norm of each tensor, float32 ``[n]`` (half-precision tensors accumulate in float32)."""
    return torch.stack(_foreach_norm(list(tensors), 2.0)).float()  # float32 norms: one cast, not one per tensor


@torch.no_grad()
def update_norms_(before: list[Tensor], after: Sequence[Tensor]) -> Tensor:
    """``||after - before||`` per tensor (float32 ``[n]``); overwrites ``before`` with ``before - after``.

    Example:
        >>> import torch
        >>> before = [torch.tensor([3.0, 0.0])]
        >>> update_norms_(before, [torch.tensor([0.0, 4.0])])
        tensor([5.])
    """
    if _plain(before) and _plain(after):
        torch._foreach_sub_(before, list(after))
    else:
        for b, a in zip(before, after):
            b.sub_(a)
    return l2_norms(before)
