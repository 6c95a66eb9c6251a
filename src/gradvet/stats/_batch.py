"""Per-call tap results held until collection, then summed per layer in a few batched ops.

A hook that added its result into a per-layer accumulator would dispatch a cast,
an index and an add per call (on a GPU, three more kernels per layer). Instead
each call appends its 0-d results to a :class:`CallLog`; at collection one
``stack`` per column and one masked sum over a ``[layers, calls, k]`` selection
add them up per layer. A selection, not a product with a one-hot matrix (``0 * inf``
is NaN: one layer's overflow would spoil every layer) nor ``index_add_`` (atomic
adds on a GPU): the sums are deterministic on every device, micro-batches included.

The layer of each call and the number of values it saw are host integers; their
device copies (the assignment matrix and the counts) are cached per *call
structure*, which is the same step after step: one host-to-device copy when the
structure is first seen, none after.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from gradvet.stats import _params
from gradvet.stats._layer import _HALF

_CACHE_SIZE = 8  # call structures kept (micro-batch counts, a model with branches)


class CallLog:
    """0-d results of one kind of tap call (``width`` of them per call), per optimizer step.

    Example:
        >>> log = CallLog(2)
        >>> log.add(1, 10, torch.tensor(3.0), torch.tensor(0))
        >>> log.add(1, 5, torch.tensor(4.0), torch.tensor(2))
        >>> cols, n, assign = log.gather(torch.device("cpu"), 3)
        >>> per_layer(assign, cols, 3).tolist(), per_layer(assign, n[:, None], 3).tolist()
        ([[0.0, 0.0], [7.0, 2.0], [0.0, 0.0]], [[0.0], [15.0], [0.0]])
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.layers: list[int] = []
        self.numels: list[int] = []
        self.columns: list[list[Tensor]] = [[] for _ in range(width)]
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.layers)

    def add(self, layer: int, numel: int, *values: Optional[Tensor]) -> None:
        """Hold one call's ``values`` (0-d tensors, any dtype; None for a known 0) for ``layer``;
        ``numel`` values were read."""
        self.layers.append(layer)
        self.numels.append(numel)
        for col, v in zip(self.columns, values):
            col.append(self._zero if v is None else v)

    @property
    def _zero(self) -> Tensor:
        # one 0-d zero shared by the calls that need no count (CPU, finite values)
        z = self.__dict__.get("_zero_t")
        if z is None:
            z = self.__dict__["_zero_t"] = torch.zeros((), dtype=torch.int64)
        return z

    def clear(self) -> None:
        self.layers, self.numels = [], []
        self.columns = [[] for _ in range(self.width)]

    def gather(self, device: torch.device, n_layers: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(values [C, width], numels [C], assignment)`` on ``device``, and clear.

        Values and numels are float64; the assignment is a bool ``[L, C]`` selection, or on the CPU
        the int64 layer of each call (``index_add_`` is a sequential, deterministic loop there: one
        op instead of a ``[L, C, k]`` selection); :func:`per_layer` sums the calls of each layer
        with either. No host sync once the call structure is cached.
        """
        cols = torch.stack([torch.stack(c).to(device, torch.float64) for c in self.columns], dim=1)
        key = (n_layers, tuple(self.layers), tuple(self.numels))
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            c = len(self.layers)
            from gradvet.stats import _layer

            if device.type == "cpu" and _layer.CPU_SHORTCUTS:
                assign = torch.tensor(self.layers, dtype=torch.int64)
            else:
                assign = torch.zeros(n_layers, c, dtype=torch.bool)
                assign[self.layers, list(range(c))] = True
            numels = torch.tensor(self.numels, dtype=torch.float64)
            # note: a host-to-device copy, once per call structure (cached for the steps after)
            cached = self._cache[key] = (numels.to(device), assign.to(device))
        self.clear()
        return cols, cached[0], cached[1]


def per_layer(assign: Tensor, values: Tensor, n_layers: Optional[int] = None) -> Tensor:
    """``[L, k]``: the sum of the rows of ``values`` ([C, k]) that ``assign`` gives each layer: a bool
    ``[L, C]`` selection, or (CPU) the int64 layer of each row with ``n_layers``."""
    if assign.dtype == torch.int64:
        out = values.new_zeros(n_layers if n_layers is not None else int(assign.max()) + 1, values.shape[1])
        return out.index_add_(0, assign, values)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    return torch.where(assign[:, :, None], values[None], zero).sum(1)


class UnitPeaks:
    """Per layer, ``max |y|`` of each unit, one segment per call index within a forward.

    A module used twice in a forward (a shared ReLU) has two sets of units;
    micro-batches take the maximum into their call's segment (alive in any
    micro-batch is alive). A unit is alive where its peak is non-zero (NaN
    included). The segments of a layer, concatenated, are its flat alive mask, the
    layout ranks reduce (``gradvet._distributed``).
    """

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.segments: list[list[Tensor]] = [[] for _ in range(n_layers)]
        self._slot: list[dict[int, int]] = [{} for _ in range(n_layers)]
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def add(self, layer: int, call: int, peak: Tensor) -> None:
        """Take ``peak`` ([units]) into the segment of call ``call`` of ``layer``."""
        peak = peak.flatten()
        segs, slot = self.segments[layer], self._slot[layer]
        k = slot.get(call)
        if k is not None and segs[k].numel() == peak.numel():
            segs[k] = torch.maximum(segs[k], peak.to(segs[k].device, segs[k].dtype))
            return
        slot[call] = len(segs)
        segs.append(peak)

    def masks(self) -> list[Optional[Tensor]]:
        """Flat bool alive mask per layer (None where the layer saw no units)."""
        return [torch.cat([s != 0 for s in segs]) if segs else None for segs in self.segments]

    def set_masks(self, masks: list[Optional[Tensor]]) -> None:
        """Replace the segments by flat alive masks (the all-rank ones); call slots are forgotten."""
        self.clear()
        for i, m in enumerate(masks):
            if m is not None:
                self.segments[i].append(m)

    def clear(self) -> None:
        self.segments = [[] for _ in range(self.n_layers)]
        self._slot = [{} for _ in range(self.n_layers)]

    def dead_fraction(self, device: torch.device) -> Tensor:
        """``[L]`` float64: the fraction of each layer's units that are dead (0 where it has none); clears.

        One ``cat`` of every segment and a cumulative sum read at the layers' ends,
        instead of a reduction per layer.
        """
        sizes = tuple(sum(s.numel() for s in segs) for segs in self.segments)
        flat = [s.to(device) for segs in self.segments for s in segs]
        self.clear()
        if not flat:
            return torch.zeros(self.n_layers, dtype=torch.float64, device=device)
        cached = self._cache.get(sizes)
        if cached is None:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            ends = torch.tensor(sizes).cumsum(0)
            # note: a host-to-device copy, once per unit structure (cached for the steps after)
            cached = self._cache[sizes] = (ends.to(device), torch.tensor(sizes, dtype=torch.float64).to(device))
        ends, units = cached
        # alive units up to each position, with a leading 0: counts per layer are differences at the ends
        alive = torch.cumsum(torch.cat(flat).ne(0), 0, dtype=torch.float64)
        upto = torch.nn.functional.pad(alive, (1, 0))[ends]
        counts = torch.diff(upto, prepend=upto.new_zeros(1))
        frac = 1.0 - counts / units.clamp_min(1)
        return torch.where(units > 0, frac, torch.zeros((), dtype=torch.float64, device=device))


class LayerSums:
    """Every per-layer sum of a measured step: the call logs, unit peaks and the accumulator tables.

    ``table`` (``[L, N_ACC]``, :mod:`gradvet.stats._layer`'s columns) and ``sens``
    (``[L, 3]``: ``||dL/dx * x||^2``, ``||dL/dx||^2`` of layer inputs and the number of
    calls) are allocated once and reused; :meth:`flush` adds the held calls into them.
    """

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.device: Optional[torch.device] = None
        self.outputs = CallLog(3)  # output_sums: var, mean, non-finite count
        self.cpu_outputs = CallLog(3)  # cpu_output_sums: sum, norm, non-finite count
        self.grads = CallLog(2)  # grad_sums: norm, non-finite count
        self.saturated = CallLog(1)  # saturated entries of an activation output
        self.inputs = CallLog(2)  # ||dL/dx * x||, ||dL/dx|| of a layer input
        self.peaks = UnitPeaks(n_layers)
        self.table: Optional[Tensor] = None
        self.sens: Optional[Tensor] = None
        self.sens_seen = False  # some input was measured since the last take_sens
        self._grad_maps: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _dev(self) -> torch.device:
        return self.device or torch.device("cpu")

    def flush(self) -> None:
        """Add the held calls into the tables (a few batched ops; no host sync)."""
        dev, n_layers = self._dev(), self.n_layers
        if len(self.grads) or len(self.outputs) or len(self.cpu_outputs) or len(self.saturated):
            if self.table is None:
                self.table = torch.zeros(n_layers, 8, dtype=torch.float64, device=dev)
            t = self.table
            if len(self.grads):
                v, n, a = self.grads.gather(dev, n_layers)
                t[:, 0:3] += per_layer(a, torch.stack([v[:, 0].square(), n, v[:, 1]], dim=1), n_layers)
            if len(self.outputs):
                v, n, a = self.outputs.gather(dev, n_layers)
                var, mean, bad = v.unbind(1)
                # finite entries (non-finite ones were read as 0): sum, sum of squares, count
                sums = torch.stack([mean * n, (var + mean.square()) * n, n - bad, bad], dim=1)
                t[:, [3, 4, 5, 7]] += per_layer(a, sums, n_layers)
            if len(self.cpu_outputs):
                v, n, a = self.cpu_outputs.gather(dev, n_layers)
                total, norm, bad = v.unbind(1)
                sums = torch.stack([total, norm.square(), n - bad, bad], dim=1)
                t[:, [3, 4, 5, 7]] += per_layer(a, sums, n_layers)
            if len(self.saturated):
                v, _, a = self.saturated.gather(dev, n_layers)
                t[:, 6] += per_layer(a, v, n_layers)[:, 0]
        if len(self.inputs):
            v, n, a = self.inputs.gather(dev, n_layers)
            if self.sens is None:
                self.sens = torch.zeros(n_layers, 3, dtype=torch.float64, device=dev)
            self.sens += per_layer(a, torch.stack([v[:, 0].square(), v[:, 1].square(), n], dim=1), n_layers)
            self.sens_seen = True

    def add_columns(self, layers: Tensor, values: Tensor) -> None:
        """Add per-output sums into the output columns: ``values [C, 3]`` (float64: sum, sum of squares,
        finite values) of outputs of ``layers [C]`` (CPU: ``index_add_`` is a sequential, deterministic loop)."""
        if self.table is None:
            self.table = torch.zeros(self.n_layers, 8, dtype=torch.float64, device=self._dev())
        cols = self.table[:, 3:6]
        cols.index_add_(0, layers, values)

    def add_grads(self, layers: list[int], numels: list[int], norms: list[Tensor]) -> None:
        """Add finite gradient norms of ``layers`` (CPU) straight into the table: one ``index_add_``
        instead of a held entry per call."""
        key = (tuple(layers), tuple(numels))
        cached = self._grad_maps.get(key)
        if cached is None:
            if len(self._grad_maps) >= _CACHE_SIZE:
                self._grad_maps.clear()
            cached = self._grad_maps[key] = (
                torch.tensor(layers, dtype=torch.int64), torch.tensor(numels, dtype=torch.float64)
            )
        if self.table is None:
            self.table = torch.zeros(self.n_layers, 8, dtype=torch.float64, device=self._dev())
        sq = torch.stack(norms).double().square_()
        self.table[:, 0:2].index_add_(0, cached[0], torch.stack([sq, cached[1]], dim=1))

    def take(self) -> tuple[Tensor, Tensor]:
        """``(accumulators [L, N_ACC], dead fraction [L])`` of the step; the tables are zeroed for the next."""
        self.flush()
        dev = self._dev()
        if self.table is None:
            acc = torch.zeros(self.n_layers, 8, dtype=torch.float64, device=dev)
        else:
            acc = self.table.clone()
            self.table.zero_()
        return acc, self.peaks.dead_fraction(dev)

    def take_sens(self) -> Optional[Tensor]:
        """``[L, 3]`` input sums of the step (None if no input was measured); zeroed for the next."""
        self.flush()
        if self.sens is None or not self.sens_seen:
            return None
        out = self.sens.clone()
        self.sens.zero_()
        self.sens_seen = False
        return out


class _Held:
    """Tensors held until the autograd engine's final callback, reduced on the spot past ``cap`` bytes."""

    def __init__(self, cap_bytes: int) -> None:
        self.cap = cap_bytes
        self.held: list = []
        self.bytes = 0

    def _hold(self, item: tuple, nbytes: int) -> bool:
        """Hold ``item``; True when it is the first held one (the caller queues the reduction)."""
        first = not self.held
        self.held.append(item)
        self.bytes += nbytes
        if self.bytes >= self.cap:
            self.reduce()
        return first

    def _take(self) -> list:
        held, self.held, self.bytes = self.held, [], 0
        return held

    def reduce(self) -> None:
        raise NotImplementedError


class HeldGrads(_Held):
    """Gradients reaching layer outputs, held for the rest of the backward pass and reduced together.

    A gradient hook that reduced its gradient at once would dispatch its norm and its
    non-finite count for every layer; held until the end of the backward pass (the
    autograd engine's final callback) they are reduced with one fused ``_foreach_norm``
    per (device, dtype) group. Memory stays bounded: once the held gradients reach
    ``cap_bytes`` they are reduced on the spot (a large gradient is reduced alone), so a
    gradient lives at most until its group is reduced, never to the end of the step.
    """

    def __init__(
        self,
        log: CallLog,
        cap_bytes: int = 64 << 20,
        direct: Optional[Callable[[list[int], list[int], list[Tensor]], None]] = None,
    ) -> None:
        # direct: where every norm of a group is finite on the CPU, (layers, numels, norms) go there
        # in one call (LayerSums.add_grads) instead of one log entry per gradient
        super().__init__(cap_bytes)
        self.log, self.direct = log, direct

    def add(self, layer: int, g: Tensor) -> bool:
        """Hold ``g`` for ``layer``; True when it is the first held one (queue the reduction)."""
        return self._hold((layer, g), g.numel() * g.element_size())

    def reduce(self) -> None:
        """Reduce every held gradient into the log (norm and non-finite count per call)."""
        held: list[tuple[int, Tensor]] = self._take()
        groups: dict[tuple, list[int]] = {}
        for k, (_, g) in enumerate(held):
            groups.setdefault((g.device, g.dtype), []).append(k)
        for (device, dtype), ks in groups.items():
            gs = [held[k][1] for k in ks]
            norms, counts = foreach_grad_sums(gs, device, dtype)
            if self.direct is not None and device.type == "cpu" and all(c is None for c in counts):
                self.direct([held[k][0] for k in ks], [g.numel() for g in gs], norms)
                continue
            for k, n, c in zip(ks, norms, counts):
                layer, g = held[k]
                self.log.add(layer, g.numel(), n, c)


class HeldInputs(_Held):
    """Layer inputs and the gradients reaching them, held to the end of the backward pass and reduced
    together into ``||dL/dx * x||`` and ``||dL/dx||`` (the trunk's input sensitivities).

    Reduced in its hook, an input cost a product, two norms and a log entry with their Python (~20
    us on the launch-bound proxies, 26 trunk inputs a step on the GPT-2 proxy); held, a group of one
    device and dtypes is one fused ``_foreach_mul`` and two fused ``_foreach_norm``. Half-precision
    inputs are multiplied in float32 (as in the hook before: ``g * x.float()``) and ``||g||``
    accumulates in float32. Memory is bounded as in :class:`HeldGrads`: past ``cap_bytes`` held
    (gradients and inputs), they are reduced on the spot.
    """

    def __init__(self, log: CallLog, cap_bytes: int = 64 << 20) -> None:
        super().__init__(cap_bytes)
        self.log = log

    def add(self, layer: int, x: Tensor, g: Tensor) -> bool:
        """Hold input ``x`` of ``layer`` and its gradient ``g``; True when it is the first held one."""
        return self._hold((layer, x, g), g.numel() * (g.element_size() + x.element_size()))

    def reduce(self) -> None:
        """Reduce every held pair into the log (two norms per input)."""
        held: list[tuple[int, Tensor, Tensor]] = self._take()
        groups: dict[tuple, list[int]] = {}
        for k, (_, x, g) in enumerate(held):
            groups.setdefault((g.device, g.dtype, x.dtype, g.shape == x.shape), []).append(k)
        for (_, _, xtype, same), ks in groups.items():
            gs, xs = [held[k][2] for k in ks], [held[k][1] for k in ks]
            if not same:  # a broadcast gradient (never seen; kept exact): one by one
                prods = [g * (x.float() if x.dtype in _HALF else x) for g, x in zip(gs, xs)]
            else:
                # one float32 temporary per input: a half-precision g is promoted inside the product
                xs = [x.float() for x in xs] if xtype in _HALF else xs
                prods = list(torch._foreach_mul(gs, xs))
            sens = torch._foreach_norm(prods, 2)
            gn = _params._foreach_norm(gs, 2.0)  # a half-precision ||g|| accumulates in float32
            for k, a, b in zip(ks, sens, gn):
                self.log.add(held[k][0], 1, a, b)


def foreach_grad_sums(
    gs: list[Tensor], device: torch.device, dtype: torch.dtype
) -> tuple[list[Tensor], list[Optional[Tensor]]]:
    """``(||g||, non-finite count)`` of each of ``gs`` (one device and dtype) in a few fused ops.

    Half precision accumulates in float32. On the CPU (scalars read without a sync) the counts
    are None where the norm is finite; elsewhere ``g - g`` (0 where finite, NaN elsewhere) is
    counted by a fused 0-norm for the whole group.
    """
    from gradvet.stats import _layer

    norms = _params._foreach_norm(gs, 2.0)
    if _layer.CPU_SHORTCUTS and device.type == "cpu":
        finite = torch.isfinite(torch.stack(norms)).tolist()  # sync-ok: CPU tensors
        return norms, [None if ok else torch.count_nonzero(g - g) for g, ok in zip(gs, finite)]
    return norms, list(_params.fused_nonfinite_counts(gs))
