"""Layer outputs held until the end of the forward pass and reduced there together (CPU).

A forward hook that reduced its output at once paid a float64 ``sum``, a float64 norm, a host
read of the sum (is it finite?) and a per-call entry in a :class:`~gradvet.stats._batch.CallLog`
(~20 us a layer with their Python on the launch-bound proxies). Held instead, the outputs of
a forward are reduced at the root module's forward hook: a float64 ``sum`` each, one fused
float64 ``_foreach_norm`` for all, one host read for the whole forward, and one ``index_add_``
into the per-layer table over a cached call -> layer index. The values are those of
:func:`gradvet.stats._layer.cpu_output_sums` (the same float64 reductions). Activations that can
die get their unit peaks (:func:`gradvet.stats._layer.unit_peak`) there too.

Tried and dropped: one ``cat`` of every output and ``bincount`` sums over an element -> layer
map. On a CPU ``bincount`` is a scalar loop (0.43 ms over the GPT-2 proxy's 151k values,
against 0.27 ms for 100 float64 sums): 2.5 ms per step against 0.75 ms for this.

An output changed in place later in the forward (a bottleneck's ``bn3`` output by
``out += identity``, a BatchNorm output by an in-place ReLU) cannot wait as it is: such
(layer, call) pairs are learned on the structure step, where every output is held as a copy
and its version counter read again at the end of the forward, and are held as a copy (one
op) on every step. One found changed on a later step is read as it is then, and copied from
the next step on. A forward whose held outputs are not all finite is reduced one output at a
time (:func:`~gradvet.stats._layer.cpu_output_sums` counts the non-finite entries).

Only the CPU takes this path (the host read is free there); a GPU reduces outputs at hook time.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from gradvet.stats._layer import unit_peak

#: values held at most before the held outputs are reduced on the spot (bounds what is kept alive)
CAP = 1 << 21
_CACHE_SIZE = 8


class HeldOutputs:
    """Outputs of one forward pass, reduced together at its end."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.eager: set[tuple[int, int]] = set()  # (layer, call) changed in place after its hook
        self.unheld: set[int] = set()  # layers whose forward ends after the root's (the root itself)
        self.items: list[tuple[int, int, Tensor, int, Optional[int]]] = []  # layer, call, y, version, unit dim
        self.numel = 0
        self.watched: list[tuple[int, int, Tensor, int]] = []
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def add(self, i: int, call: int, y: Tensor, unit_dim: Optional[int], learning: bool) -> bool:
        """Hold ``y`` (layer ``i``'s output of call ``call``, units on ``unit_dim`` or None); False where
        it must be reduced now. An output known to be changed in place later in the forward is held as a
        copy (one op, where reducing it now costs a sum, a norm, a host read and their Python).
        ``learning`` (the structure step): every output is held as a copy, and ``y`` is watched for a
        change in place until the end of the forward."""
        if i in self.unheld or y.dtype == torch.float64 or not y.numel():
            return False
        udim = None if unit_dim is None else unit_dim % y.dim()
        if learning:
            self.watched.append((i, call, y, y._version))
            y = y.clone()
        elif (i, call) in self.eager:
            y = y.clone()
        self.items.append((i, call, y, y._version, udim))
        self.numel += y.numel()
        return True

    def learn(self) -> None:
        """End of a forward on the structure step: the outputs changed in place since their hook."""
        watched, self.watched = self.watched, []
        self.eager.update((i, call) for i, call, y, v in watched if y._version != v)

    def reduce(
        self,
        add_columns: Callable[[Tensor, Tensor], None],
        add_peak: Callable[[int, int, Tensor, int], None],
        eager: Callable[[int, int, Tensor, Optional[int]], None],
    ) -> None:
        """Reduce the held outputs: ``add_columns(layers [C], values [C, 3])`` (per output: sum, sum of squares, values; float64), ``add_peak(layer,
        call, unit sums, values)`` per activation that can die; ``eager(...)`` measures an output one by one
        (one changed in place since its hook, or a forward with a non-finite output)."""
        items, self.items, self.numel = self.items, [], 0
        if not items:
            return
        kept = []
        for it in items:
            if it[2]._version != it[3]:
                self.eager.add((it[0], it[1]))  # changed in place after its hook: measured as it is now
                eager(it[0], it[1], it[2], it[4])
            else:
                kept.append(it)
        if not kept:
            return
        ys = [it[2] for it in kept]
        total = torch.stack([torch.sum(y, dtype=torch.float64) for y in ys])
        squares = torch.stack(torch._foreach_norm(ys, 2, dtype=torch.float64)).square_()
        if not math.isfinite(float(squares.sum())):  # sync-ok: CPU tensors; non-finite entries counted one by one
            for i, call, y, _, udim in kept:
                eager(i, call, y, udim)
            return
        layers, counts = self._maps(kept)
        add_columns(layers, torch.stack([total, squares, counts], dim=1))
        for i, call, y, _, udim in kept:
            if udim is not None:
                add_peak(i, call, unit_peak(y, udim), y.numel())

    def _maps(self, kept: list) -> tuple[Tensor, Tensor]:
        """The layer of each held output and its number of values (host lists made tensors once, cached)."""
        key = tuple((it[0], it[2].numel()) for it in kept)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            layers = torch.tensor([k[0] for k in key])
            counts = torch.tensor([float(k[1]) for k in key], dtype=torch.float64)
            cached = self._cache[key] = (layers, counts)
        return cached
