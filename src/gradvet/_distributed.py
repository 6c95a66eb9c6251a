"""Distributed training (DDP, FSDP2): which reductions gradvet needs, and when.

What each rank holds when ``monitor.step`` runs (after backward, before ``opt.step``):

- **DDP**: every rank holds the same gradient, already averaged over ranks by DDP's
  all-reduce in backward. Per-parameter statistics therefore need **no collective**.
- **FSDP2** (``torch.distributed.fsdp.fully_shard``): parameters and gradients are
  DTensors sharded on dim 0; each rank holds one shard (possibly empty). Each rank
  reduces its shards to sums of squares, max ``|g|`` and non-finite counts, and **one
  all_gather of a** ``[P, 4]`` **tensor per step** combines them: a norm is the square
  root of the summed squares, never a sum of per-shard norms.
- **Layer taps** see ``dL_r/dy`` for rank ``r``'s local batch and local loss ``L_r``.
  DDP and FSDP average gradients, so the objective they optimize is
  ``L = (1/W) sum_r L_r`` and ``dL/dy = (1/W) dL_r/dy``: squared sums are added over
  ranks and divided by ``W**2``, counts and activation moments (raw sums, see
  :mod:`gradvet.stats._layer`: kept additive for this) are added, dead-unit
  "alive" masks are OR-ed (a unit is dead only if it is zero on every rank's batch).
  With equal local batches and a mean-reduced loss this is exactly what one process
  would record on the global batch. This costs one all_gather (``[L, 10]``) plus one
  all_reduce (alive masks and per-time-step sums) **on layer steps only**.
- **Loss**: the mean of the ranks' losses, one asynchronous all_reduce of a scalar per
  step (waited for when the buffers are flushed, so the step does not block on it).
- **Update ratios** (on update steps): none under DDP; under FSDP2 one all_gather of
  ``[P, 2]`` squared norms.

Only rank 0 writes the record. Every collective is issued from ``monitor.step`` or the
optimizer step hooks, which all ranks run on the same steps; flushing, ``load`` and
``report`` issue none, so calling them on rank 0 alone is safe.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

from gradvet.stats._params import param_stats

log = logging.getLogger(__name__)

#: Columns of the per-layer gather: the 8 tap accumulators, alive-mask length, time length.
_LAYER_COLS = 13  # 8 accumulators, 2 lengths, 3 trunk signal sums (||dL/dx * x||^2, ||dL/dx||^2, calls)


def _dtensor_cls() -> Optional[type]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return None
    return DTensor


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor; any other tensor unchanged."""
    cls = _dtensor_cls()
    return t.to_local() if cls is not None and isinstance(t, cls) else t  # type: ignore[attr-defined]


def replicas(t: Tensor, world_size: int) -> int:
    """How many ranks hold a copy of each element of ``t``.

    A plain tensor is held whole by every rank; a DTensor by the product of the mesh
    sizes along which it is replicated (1 for a fully sharded FSDP2 parameter).
    """
    cls = _dtensor_cls()
    if cls is None or not isinstance(t, cls):
        return world_size
    dt: Any = t
    n = 1
    for d, placement in enumerate(dt.placements):
        if placement.is_replicate():
            n *= dt.device_mesh.size(d)
    return n


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (so names lose ``module.``)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


# -- pure functions: combine what the ranks gathered ------------------------------------------
def combine_param_stats(gathered: Tensor, weights: Tensor, count_nonfinite: bool) -> Tensor:
    """Combine per-rank local ``[W, P, 4]`` :func:`param_stats` rows into global ``[P, 4]``.

    Args:
        gathered: each rank's statistics of its local shards (columns ``grad_norm``,
            ``grad_max``, ``grad_nonfinite``, ``param_norm``).
        weights: ``[P]`` ``1/replicas`` per parameter, so that an element held by several
            ranks is counted once.
        count_nonfinite: whether column 2 holds counts (summed) or a 0/1 flag (max-ed).

    Returns:
        float32 ``[P, 4]``: norms as the square root of weighted summed squares, max of
        maxima, summed (or max-ed) non-finite counts.

    Example:
        >>> g = torch.tensor([[[3.0, 1.0, 0.0, 1.0]], [[4.0, 2.0, 0.0, 0.0]]])
        >>> combine_param_stats(g, torch.ones(1), True).tolist()
        [[5.0, 2.0, 0.0, 1.0]]
    """
    g = gathered.double()
    w = weights.to(g.device, torch.float64)
    gnorm = (g[..., 0].square().sum(0) * w).sqrt()
    pnorm = (g[..., 3].square().sum(0) * w).sqrt()
    gmax = g[..., 1].amax(0)
    bad = (g[..., 2].sum(0) * w).round() if count_nonfinite else g[..., 2].amax(0)
    return torch.stack([gnorm, gmax, bad, pnorm], dim=1).float()


def combine_layer_gather(gathered: Tensor, grad_divisor: float) -> tuple[Tensor, Tensor, Tensor]:
    """Combine per-rank ``[W, L, 10]`` layer rows into global accumulators.

    Args:
        gathered: columns 0-7 are :mod:`gradvet.stats._layer` accumulators, 8 the length of
            the rank's alive mask (-1: none), 9 the length of its per-time-step sums (-1: none).
            Every accumulator is a sum (raw moments, counts), so ranks add exactly.
        grad_divisor: the factor between a rank's ``dL_r/dy`` and the ``dL/dy`` of the
            objective the optimizer sees (``W`` under gradient averaging).

    Returns:
        ``(acc [L, 8] float64, alive_len [L] int64, time_len [L] int64)``.

    Example:
        >>> row = torch.tensor([[4.0, 2, 0, 1, 1, 2, 0, 0, 3, -1]], dtype=torch.float64)
        >>> acc, alive, time = combine_layer_gather(torch.stack([row, row]), 2.0)
        >>> acc[0, :3].tolist(), alive.tolist(), time.tolist()
        ([2.0, 4.0, 0.0], [3], [-1])
    """
    acc = gathered[..., :8].sum(0)
    acc[:, 0] = acc[:, 0] / grad_divisor**2
    lens = gathered[..., 8:].amax(0).long()
    return acc, lens[:, 0], lens[:, 1]


def pack_vectors(vectors: Sequence[Optional[Tensor]], lengths: Tensor, device: torch.device) -> Tensor:
    """Concatenate per-layer vectors, each zero-padded to ``lengths[i]`` (``<= 0``: skipped)."""
    parts = []
    for v, n in zip(vectors, lengths.tolist()):
        if n <= 0:
            continue
        out = torch.zeros(n, dtype=torch.float64, device=device)
        if v is not None:
            k = min(n, v.numel())
            out[:k] = v.reshape(-1)[:k].to(device, torch.float64)
        parts.append(out)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=device)


def unpack_vectors(flat: Tensor, lengths: Tensor) -> list[Optional[Tensor]]:
    """Inverse of :func:`pack_vectors`: one vector per layer, None where the length is <= 0."""
    out: list[Optional[Tensor]] = []
    pos = 0
    for n in lengths.tolist():
        if n <= 0:
            out.append(None)
            continue
        out.append(flat[pos : pos + n])
        pos += n
    return out


def local_param_stats(
    params: Sequence[Tensor],
    grads: Sequence[Optional[Tensor]],
    *,
    count_nonfinite: bool,
    device: torch.device,
    extended: bool = True,
) -> Tensor:
    """:func:`gradvet.stats.param_stats` of local shards; empty shards give zeros.

    (``torch._foreach_norm`` has no infinity norm of an empty tensor, and FSDP2 leaves
    ranks with empty shards when a parameter's dim 0 is smaller than the world.)
    """
    lp = [local(p.detach()) for p in params]
    lg = [local(g) if g is not None else None for g in grads]
    keep = [i for i, p in enumerate(lp) if p.numel() > 0]
    out = torch.zeros(len(lp), 4, device=device)
    out[[i for i, g in enumerate(lg) if g is None], :3] = float("nan")
    if keep:
        sub = param_stats(
            [lp[i] for i in keep], [lg[i] for i in keep], count_nonfinite=count_nonfinite, device=device,
            extended=extended,
        )
        out[keep] = sub
    return out


# -- the stateful side: one per Monitor --------------------------------------------------------
class Distributed:
    """The process group a Monitor reduces over, and the reductions it issues.

    Args:
        params: the monitored parameters (DTensors under FSDP2).
        group: the process group (None: the default group).
    """

    def __init__(self, params: Sequence[Tensor], group: Any = None) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        cls = _dtensor_cls()
        self.sharded = cls is not None and any(isinstance(p, cls) for p in params)
        self.mode = "fsdp" if self.sharded else "ddp"
        # DDP and FSDP2 average gradients over ranks (see the module docstring).
        self.grad_divisor = float(self.world_size)
        dev = params[0].device if params else torch.device("cpu")
        self._weights = torch.tensor([1.0 / replicas(p, self.world_size) for p in params], device=dev)
        self._pending: list[Any] = []

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the record and prints."""
        return self.rank == 0

    def meta(self) -> dict[str, Any]:
        return {"mode": self.mode, "world_size": self.world_size, "grad_divisor": self.grad_divisor}

    # -- collectives -----------------------------------------------------------------------
    def _gather(self, t: Tensor) -> Tensor:
        # flat buffers: gloo wants the output as the inputs concatenated along dim 0
        out = t.new_empty(self.world_size * t.numel())
        gather = getattr(self._dist, "all_gather_single", None) or self._dist.all_gather_into_tensor
        gather(out, t.contiguous().reshape(-1), group=self.group)
        return out.view(self.world_size, *t.shape)

    def mean_async(self, value: Tensor) -> Tensor:
        """Start averaging a scalar over ranks; the result is valid after :meth:`wait`."""
        t = value.detach().to(torch.float32) / self.world_size  # a new tensor: never the user's
        self._pending.append(self._dist.all_reduce(t, group=self.group, async_op=True))
        return t

    def wait(self) -> None:
        """Wait for every pending :meth:`mean_async` (called when buffers are flushed)."""
        pending, self._pending = self._pending, []
        for work in pending:
            work.wait()

    def param_stats(
        self,
        params: Sequence[Tensor],
        grads: Sequence[Optional[Tensor]],
        *,
        count_nonfinite: bool,
        grad_scale: Optional[Tensor],
        device: torch.device,
        extended: bool = True,
    ) -> Tensor:
        """Global per-parameter ``[P, 4]`` statistics (no collective under DDP)."""
        if not self.sharded:
            return param_stats(params, grads, count_nonfinite=count_nonfinite, grad_scale=grad_scale, device=device,
                               extended=extended)
        mine = local_param_stats(params, grads, count_nonfinite=count_nonfinite, device=device, extended=extended)
        out = combine_param_stats(self._gather(mine), self._weights, count_nonfinite).to(device)
        if grad_scale is not None:
            out[:, :2] = out[:, :2] / grad_scale.to(device, torch.float32)
        return out

    def update_norms(self, now: list[Tensor], before: list[Tensor], index: list[int]) -> tuple[Tensor, Tensor]:
        """``(||now - before||, ||before||)`` per parameter (float32, global).

        Under DDP every rank holds the same parameters: no collective.
        """
        if not self.sharded:
            dn = torch.stack([d.float() for d in torch._foreach_norm(torch._foreach_sub(now, before), 2.0)])
            return dn, torch.stack([w.float() for w in torch._foreach_norm(before, 2.0)])
        now_l = [local(t) for t in now]
        before_l = [local(t) for t in before]
        sq = torch.stack(
            [
                torch.stack([(a - b).double().square().sum(), b.double().square().sum()])
                for a, b in zip(now_l, before_l)
            ]
        )
        w = self._weights[index].to(sq.device, torch.float64)
        sq = self._gather(sq).sum(0) * w[:, None]
        return sq[:, 0].sqrt().float(), sq[:, 1].sqrt().float()

    def reduce_layers(
        self,
        acc: list[Optional[Tensor]],
        alive: list[Optional[Tensor]],
        times: dict[int, Tensor],
        device: torch.device,
        sens: Optional[Tensor] = None,
    ) -> tuple[list[Tensor], list[Optional[Tensor]], dict[int, Tensor], Tensor]:
        """All-rank layer accumulators, alive masks (OR), per-time-step squared sums and trunk signals
        (``[L, 3]`` sums, ``gradvet._taps.LayerTaps.collect_sens``)."""
        n = len(acc)
        rows = torch.zeros(n, _LAYER_COLS, dtype=torch.float64, device=device)
        for i in range(n):
            a, m, t = acc[i], alive[i], times.get(i)
            if a is not None:
                rows[i, :8] = a.to(device, torch.float64)
            rows[i, 8] = m.numel() if m is not None else -1
            rows[i, 9] = t.numel() if t is not None else -1
        if sens is not None:
            rows[:, 10:13] = sens.to(device, torch.float64)
        gathered = self._gather(rows)
        total, alive_len, time_len = combine_layer_gather(gathered[..., :10], self.grad_divisor)
        sens_total = gathered[..., 10:13].sum(0)
        sens_total[:, :2] = sens_total[:, :2] / self.grad_divisor**2
        # note: host sync, on layer steps only: the sizes of the second buffer must be known.
        alive_len, time_len = alive_len.cpu(), time_len.cpu()
        out_alive: list[Optional[Tensor]] = [None] * n
        out_time: dict[int, Tensor] = {}
        if bool((alive_len > 0).any() or (time_len > 0).any()):  # the same on every rank
            flat = torch.cat(
                [
                    pack_vectors([None if m is None else m.double() for m in alive], alive_len, device),
                    pack_vectors([times.get(i) for i in range(n)], time_len, device),
                ]
            )
            self._dist.all_reduce(flat, group=self.group)
            k = int(alive_len.clamp_min(0).sum())
            out_alive = [None if v is None else v > 0 for v in unpack_vectors(flat[:k], alive_len)]
            for i, v in enumerate(unpack_vectors(flat[k:], time_len)):
                if v is not None:
                    out_time[i] = v / self.grad_divisor**2
        return list(total.unbind(0)), out_alive, out_time, sens_total

    def reduce_taps(self, taps: Any) -> None:
        """Replace a :class:`gradvet._taps.LayerTaps`' accumulators by their all-rank totals."""
        dev = taps.device or self._weights.device
        acc, alive, times, sens = self.reduce_layers(taps._acc, taps._alive, taps._time, dev, taps._sens)
        taps._acc, taps._alive, taps._time = acc, alive, times
        taps._sens = sens if taps._sens is not None else None
        if taps.device is None:
            taps.device = dev


def resolve(
    distributed: Any, model: nn.Module, params: Sequence[Tensor], who: str = "Monitor"
) -> Optional[Distributed]:
    """Decide whether a Monitor reduces over ranks.

    Args:
        distributed: ``"auto"`` (reduce when ``torch.distributed`` is initialized with more
            than one rank), ``True``/``"on"`` (require it), ``False``/``"off"``/None (never;
            each rank records its own, unreduced view), or a process group to reduce over.
        model: the monitored model (FSDP1 wrappers are rejected).
        params: the monitored parameters.

    Returns:
        The :class:`Distributed` context, or None when there is nothing to reduce over.

    Raises:
        ValueError: ``distributed`` is unknown, or required but not initialized.
        TypeError: the model is wrapped in FSDP1.
    """
    if isinstance(distributed, str) and distributed not in ("auto", "on", "off"):
        raise ValueError(f"{who}(distributed={distributed!r}): use 'auto', 'on', 'off' or a process group")
    if distributed is None or distributed is False or distributed == "off":
        return None
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        if distributed == "auto":
            return None
        raise ValueError(
            f"{who}(distributed={distributed!r}) needs torch.distributed to be initialized; call "
            "torch.distributed.init_process_group(...) first or pass distributed='auto'"
        )
    group = None if isinstance(distributed, (str, bool)) else distributed
    ctx = Distributed(params, group)
    if ctx.world_size == 1 and distributed == "auto":
        return None
    check_wrapper(model, who)
    cls = _dtensor_cls()
    for p in params:
        mesh = getattr(p, "device_mesh", None) if cls is not None and isinstance(p, cls) else None
        if mesh is not None and math.prod(mesh.shape) != ctx.world_size:
            raise ValueError(
                f"{who}: parameter sharded over a device mesh of {math.prod(mesh.shape)} ranks but "
                f"the process group has {ctx.world_size}; pass distributed=<the mesh's process group>"
            )
    return ctx


def check_wrapper(model: nn.Module, who: str = "Monitor") -> None:
    """Reject FSDP1 wrappers, whose flat parameters hide per-parameter gradients.

    Raises:
        TypeError: ``model`` is (or contains) a ``FullyShardedDataParallel`` module.
    """
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover
        return
    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        raise TypeError(
            f"{who}: FullyShardedDataParallel (FSDP1) flattens parameters, so per-parameter gradients are "
            "not visible; shard with torch.distributed.fsdp.fully_shard (FSDP2) instead"
        )
