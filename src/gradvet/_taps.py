"""Layer taps: forward hooks plus tensor hooks that collect per-layer signals.

Hook points, chosen deliberately (see STYLE.md, item 15):

- a **forward hook** on each layer reads the output (activation statistics) and
  registers a **tensor hook** on it that receives dL/d output during backward.
  Unlike ``register_full_backward_hook`` this works with in-place activations
  (pytorch#61519) and costs nothing on steps that are not measured: a tensor
  hook registered before an in-place op sees the gradient of the value it was
  registered on.
- a **forward pre-hook** on RNN/LSTM/GRU layers hooks the input sequence, so the
  gradient reaching each time step is seen (vanishing/exploding through time,
  Bengio et al. 1994; Pascanu et al. 2013). If the input does not require grad
  it is replaced by a detached copy that does: the same values, a leaf of its own.
- while the first measured forward runs (the structure step), a ``TorchFunctionMode``
  notices activations applied *functionally* (``torch.sigmoid(self.fc(x))``) to a
  layer's output and attributes their saturation and dead units to that layer. It
  sees every torch call of the forward, so it runs once: the activations found are
  learned per (layer, call), and on later steps the layer's forward hook applies the
  same function to the output it already holds (one op, no mode). A functional
  activation called with extra arguments (``F.hardtanh(x, -2, 2)``) keeps the mode on.

Each hook call runs a few fused reductions (:mod:`gradvet.stats._layer`) and holds
their 0-d results; collection sums them per layer in a few batched ops
(:mod:`gradvet.stats._batch`); nothing here syncs with the host. gradvet's own statistics
run under ``torch._C.DisableTorchFunction()``: they are not the user's code, so
the mode above (and any other torch-function override) must not see them, and
skipping it saves a Python call per torch op. Any error inside a hook disables
the taps with one warning: measuring must never cost the user's training run.
"""

from __future__ import annotations

import logging
import warnings
from functools import partial
from typing import Any, Callable, Optional, TypeVar, cast

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from gradvet._hooks import HookSet, add_grad_hook
from gradvet._layers import LayerInfo
from gradvet.stats import _layer as layer_stats
from gradvet.stats._activations import FUNCTIONAL, ActivationKind
from gradvet.stats._batch import HeldGrads, HeldInputs, LayerSums
from gradvet.stats._held import CAP, HeldOutputs
from gradvet.stats._layer import (
    N_ACC,
    activation_stats,
    cpu_output_sums,
    derive_layer_stats,
    output_sums,
    time_stats,
)

log = logging.getLogger(__name__)

# Module hooks run eagerly under torch.compile: dynamo would otherwise trace them,
# guard on their Python state (layer order, producer ids) and recompile per call
# until its recompile limit. Costs ~0.3 us per call in eager mode.
# torch.compiler.disable imports torch._dynamo (sympy, triton: ~1.4 s), so it is applied
# on the first access of any @_eager method, not at import: that access registers the
# hooks (never inside a traced region), and from then on the class holds the disabled
# functions, exactly as a plain ``@torch.compiler.disable`` would have left it.
_F = TypeVar("_F", bound=Callable[..., Any])


class _LazyEager:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner, self.name = owner, name

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        for name, attr in list(vars(self.owner).items()):
            if isinstance(attr, _LazyEager):
                setattr(self.owner, name, torch.compiler.disable(attr.fn))
        return getattr(self.owner if obj is None else obj, self.name)


def _eager(fn: _F) -> _F:
    return cast(_F, _LazyEager(fn))


def _batch_statistics(m: nn.Module) -> bool:
    """Whether ``m`` normalises with the statistics of the batch it is given (a BatchNorm in training mode)."""
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats)


def first_tensor(out: Any) -> Optional[Tensor]:
    """The first floating tensor in a module output (tuple outputs of RNN/MHA included)."""
    if isinstance(out, Tensor):
        return out if out.is_floating_point() else None
    if isinstance(out, (tuple, list)):
        for o in out:
            t = first_tensor(o)
            if t is not None:
                return t
    if isinstance(out, dict):
        for o in out.values():
            t = first_tensor(o)
            if t is not None:
                return t
    return None


class _FunctionalActivations(TorchFunctionMode):
    """Attributes functional activations to the layer whose output they consume."""

    def __init__(self, taps: LayerTaps) -> None:
        super().__init__()
        self.taps = taps

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        kind = FUNCTIONAL.get(func)
        if kind is not None and self.taps.in_activation_module == 0 and args:
            # F.relu(x, inplace=True) is relu(x) again; F.hardtanh(x, -2, 2) is not kind.fn(x)
            plain = len(args) == 1 and not set(kwargs or {}) - {"inplace"}
            self.taps.functional_activation(args[0], kind, out, plain)
        return out


class LayerTaps:
    """Collects per-layer statistics on the steps it is told to measure."""

    def __init__(
        self,
        infos: list[LayerInfo],
        modules: list[nn.Module],
        kinds: list[Optional[ActivationKind]],
        saturation_threshold: float,
        time_profile: bool = True,
    ) -> None:
        self.infos, self.modules, self.kinds = infos, modules, kinds
        self.threshold = saturation_threshold
        self.time_profile = time_profile
        self.active = False
        self.failed = False
        self.in_activation_module = 0
        self._next_order = 0
        # every hook call's results, held until collect() sums them per layer in a few ops
        self._sums = LayerSums(len(infos))
        self._held_grads = HeldGrads(self._sums.grads, direct=self._sums.add_grads)
        self._held_inputs = HeldInputs(self._sums.inputs)  # trunk inputs and their gradients, likewise
        # one gradient hook per layer, made once: a fresh partial per output and step was a Python
        # allocation per layer per step (more of them make the garbage collector run more often)
        self._grad_hooks = [partial(self._on_grad, i) for i in range(len(infos))]
        # CPU: outputs held to the end of the forward pass and reduced together (stats._held)
        self._held_out = HeldOutputs(len(infos))
        self._calls = [0] * len(infos)
        self._time: dict[int, Tensor] = {}
        self._producer: dict[int, tuple[int, Tensor, int]] = {}
        self._mode: Optional[_FunctionalActivations] = None
        # functional activations learned on the structure step: (layer, call) -> kind; the mode
        # stays on for every measured step only where one cannot be recomputed from the output
        self._functional: dict[tuple[int, int], ActivationKind] = {}
        self._mode_always = False
        # The graph: read once, on the first measured step (the structure step), from the
        # nodes each layer's input and output came from. Until then every parameter
        # layer's input is measured; afterwards only the trunk's (gradvet._graph).
        self.structure_pending = True
        self._nodes: dict[int, tuple[Any, Any, bool]] = {}
        self._out_node: Any = None
        self._sources: list[tuple[int, Any]] = []
        self._trunk_owner: set[int] = set()
        # ||dL/dx * x|| and ||dL/dx|| of layer inputs (the first is the loss's sensitivity to a
        # relative change of the input, blind to the input's scale), summed per layer in
        # self._sums.sens; the inputs are held until their gradient arrives
        self._trunk_mask: Optional[Tensor] = None
        self._held: dict[int, Tensor] = {}
        self._next_key = 0
        self._hooked: set[int] = set()

    # -- wiring -------------------------------------------------------------------------
    def attach(self, root: nn.Module, hooks: HookSet) -> None:
        """Register every hook on ``root`` and its layers into ``hooks``."""
        # the hooks' eager bodies are made now, outside any traced region (see _LazyEager)
        _ = self._forward_body
        hooks.add(root.register_forward_pre_hook(self._root_pre))
        hooks.add(root.register_forward_hook(self._root_post, always_call=True))
        for i, (info, mod) in enumerate(zip(self.infos, self.modules)):
            if mod is root:  # its forward hook runs after _root_post: nothing would reduce a held output
                self._held_out.unheld.add(i)
            if info.role == "activation":
                hooks.add(mod.register_forward_pre_hook(self._act_pre))
            if info.time_dim is not None:
                hooks.add(mod.register_forward_pre_hook(partial(self._rnn_pre, i)))
            hooks.add(mod.register_forward_hook(partial(self._forward, i), always_call=True))

    def _measuring(self) -> bool:
        # a forward without autograd (validation under no_grad / inference_mode) has no
        # backward: measuring it would mix its activations into the next training step
        return self.active and not self.failed and torch.is_grad_enabled()

    # Each hook is a gate that dynamo traces (it reads ``active``: a compiled model guards on it and
    # keeps one graph for the steps that are not measured, one for those that are) and a body that runs
    # eagerly (``_eager``). A disabled hook would break a compiled model's graph at every layer on every
    # step, measured or not (a GPT-2 proxy: 25 graphs instead of 1, and recompiles of nn.Linear.forward
    # up to dynamo's limit).
    def _root_pre(self, module: nn.Module, args: Any) -> None:
        if self.active:
            self._root_pre_body(module, args)

    @_eager
    def _root_pre_body(self, module: nn.Module, args: Any) -> None:
        self._reduce_outputs()  # a forward that never reached its end (normally none held)
        self._producer.clear()
        self._calls = [0] * len(self.infos)
        self._hooked = set()
        if self.structure_pending:
            # the graph is read from the last forward before the step: holding the nodes of earlier
            # ones (micro-batches, a forward never followed by a step) would keep their graphs alive
            self._sources = []
            self._nodes = {}
        if self._measuring() and self._mode is None and (self.structure_pending or self._mode_always):
            self._mode = _FunctionalActivations(self)
            self._mode.__enter__()

    def _root_post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.active or self._mode is not None:
            self._root_post_body(module, args, output)

    @_eager
    def _root_post_body(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            mode.__exit__(None, None, None)
        self._reduce_outputs()
        if self.structure_pending and self._measuring():
            with torch._C.DisableTorchFunction():  # not the user's code: their modes must not see it
                y = first_tensor(output)  # the last forward's: its nodes are the ones kept (micro-batches)
                self._out_node = None if y is None else y.grad_fn
        self._producer.clear()
        self.in_activation_module = 0

    def _act_pre(self, module: nn.Module, args: Any) -> None:
        if self._measuring():
            self._enter_activation()

    @_eager
    def _enter_activation(self) -> None:
        self.in_activation_module += 1

    # -- collection ---------------------------------------------------------------------
    @property
    def device(self) -> Optional[torch.device]:
        """The device of the first measured output (None before one)."""
        return self._sums.device

    @device.setter
    def device(self, dev: Optional[torch.device]) -> None:
        self._sums.device = dev

    @property
    def _acc(self) -> list[Optional[Tensor]]:
        """Accumulator rows ``[N_ACC]`` per layer (views of the table; None before any call)."""
        self._reduce_outputs()
        self._reduce_grads()
        self._sums.flush()
        if self._sums.table is None:
            return [None] * len(self.infos)
        return list(self._sums.table.unbind(0))

    @_acc.setter
    def _acc(self, rows: list[Optional[Tensor]]) -> None:
        # gradvet._distributed.reduce_taps puts the all-rank totals back this way
        dev = self.device or next((r.device for r in rows if r is not None), torch.device("cpu"))
        zeros = torch.zeros(N_ACC, dtype=torch.float64, device=dev)
        table = [zeros if r is None else r.to(dev, torch.float64) for r in rows]
        self._sums.table = torch.stack(table) if table else zeros.new_zeros(0, N_ACC)

    @property
    def _alive(self) -> list[Optional[Tensor]]:
        """Flat bool alive mask per layer, one segment per call index (None where no units were seen)."""
        self._reduce_outputs()
        return self._sums.peaks.masks()

    @_alive.setter
    def _alive(self, masks: list[Optional[Tensor]]) -> None:
        self._sums.peaks.set_masks(masks)

    @property
    def _sens(self) -> Optional[Tensor]:
        """``[L, 3]`` input sums since the last collect_sens (None if no input was measured)."""
        self._reduce_grads()
        self._sums.flush()
        return self._sums.sens if self._sums.sens_seen else None

    @_sens.setter
    def _sens(self, sens: Optional[Tensor]) -> None:
        self._sums.sens, self._sums.sens_seen = sens, sens is not None

    def _add_alive(self, i: int, call: int, peak: Tensor, values: int) -> None:
        if self.structure_pending and call == 0 and peak.numel():
            # how many values each unit's verdict rests on (a squeeze-excitation unit sees one per sample)
            self.infos[i].graph["per_unit"] = values // peak.numel()
        self._sums.peaks.add(i, call, peak)

    def _activation(self, i: int, call: int, kind: ActivationKind, a: Tensor, unit_dim: int) -> None:
        """Saturation and dead units of activation output ``a``, attributed to layer ``i``."""
        sat, peak = activation_stats(a, kind, self.threshold, unit_dim)
        if sat is not None:
            self._sums.saturated.add(i, 0, sat)
        if peak is not None:
            self._add_alive(i, call, peak, a.numel())

    def _forward(self, i: int, module: nn.Module, args: Any, output: Any) -> None:
        if self._measuring():
            self._forward_body(i, args, output)

    @_eager
    def _forward_body(self, i: int, args: Any, output: Any) -> None:
        info = self.infos[i]
        if info.role == "activation":
            self.in_activation_module = max(0, self.in_activation_module - 1)
        # the mode is re-entered on leaving: the user's functional activations after
        # this layer are still seen. Grad mode off (it is on: _measuring): gradvet's ops record
        # no graph, without a detach per tensor; the raw switch costs 0.2 us, no_grad() 1.2 us
        with torch._C.DisableTorchFunction():
            torch._C._set_grad_enabled(False)
            try:
                self._measure_output(i, info, args, output)
            finally:
                torch._C._set_grad_enabled(True)

    def _measure_output(self, i: int, info: LayerInfo, args: Any, output: Any) -> None:
        try:
            y = first_tensor(output)
            if y is None:
                return
            if info.order < 0:
                info.order, self._next_order = self._next_order, self._next_order + 1
            call, self._calls[i] = self._calls[i], self._calls[i] + 1
            sums = self._sums
            if sums.device is None:
                sums.device = y.device
            n = y.numel()
            if n:
                kind = self.kinds[i]
                act = kind is not None and (kind.saturated is not None or kind.can_die)
                udim = self._unit_dim(i, args, y) if act else None
                if not (
                    layer_stats.CPU_SHORTCUTS and y.device.type == "cpu" and not (act and kind.saturated)  # type: ignore[union-attr]
                    and self._held_out.add(i, call, y, udim if y.dim() else None, self.structure_pending)
                ):
                    self._output_now(i, call, y, udim)
                elif self._held_out.numel >= CAP:
                    self._reduce_outputs(end=False)
            if i not in self._held_out.unheld:  # the root's output: nothing in this forward consumes it
                self._producer[id(y)] = (i, y, call)
            if y.requires_grad:
                add_grad_hook(y, self._grad_hooks[i])
            if self.structure_pending and n and y.dim() >= 2 and _batch_statistics(self.modules[i]):
                # how many values each channel's batch statistics rest on (diagnosis/_trunk: small_batch)
                per = n // max(int(y.shape[1]), 1)
                info.graph["batch_values"] = min(info.graph.get("batch_values", per), per)
            if info.role == "param":
                learned = self._functional.get((i, call)) if not self._mode_always else None
                if learned is not None and n:
                    # the functional activation the structure step saw after this call: applied here
                    # to the output the hook holds, it gives what the user's call will
                    unit_dim = 1 if info.channel_first else -1
                    self._activation(i, call, learned, learned.fn(y), unit_dim)
                if call == 0:
                    self._tap_input(i, args, y)
                if self.structure_pending and y.grad_fn is not None:
                    self._sources.append((i, y.grad_fn))
        except Exception as e:  # never let measuring break training
            self._fail(e)

    def _output_now(self, i: int, call: int, y: Tensor, udim: Optional[int]) -> None:
        """Reduce layer ``i``'s output ``y`` at once (``udim``: its unit axis if it is an activation)."""
        sums = self._sums
        if layer_stats.CPU_SHORTCUTS and y.device.type == "cpu":
            sums.cpu_outputs.add(i, y.numel(), *cpu_output_sums(y))
        else:
            sums.outputs.add(i, y.numel(), *output_sums(y))
        kind = self.kinds[i]
        if kind is not None and udim is not None:
            self._activation(i, call, kind, y, udim)

    def _reduce_outputs(self, end: bool = True) -> None:
        """Reduce the outputs held since the forward began (stats._held); at the end of a forward on the
        structure step (``end``), learn which outputs were changed in place after their hook."""
        held = self._held_out
        if held.watched and end:
            with torch._C.DisableTorchFunction():  # reading version counters: not the user's code
                held.learn()
        if not held.items or self.failed:
            held.items, held.numel = [], 0
            return
        try:
            with torch._C.DisableTorchFunction():
                grad = torch.is_grad_enabled()
                torch._C._set_grad_enabled(False)
                try:
                    held.reduce(self._sums.add_columns, self._add_alive, self._output_now)
                finally:
                    torch._C._set_grad_enabled(grad)
        except Exception as e:
            self._fail(e)

    def _tap_input(self, i: int, args: Any, y: Tensor) -> None:
        """Hook the layer's input for ||dL/dx * x|| and, on the structure step, note the graph nodes."""
        x = args[0] if args and isinstance(args[0], Tensor) else None
        if x is not None and not (x.is_floating_point() and x.requires_grad and x.grad_fn is not None):
            x = None  # data, token ids, or a leaf: nothing flows back into it
        owns = x is not None and id(x) not in self._hooked
        if self.structure_pending:
            self._nodes[i] = (None if x is None else x.grad_fn, y.grad_fn, owns)
        elif i not in self._trunk_owner:
            return
        if x is None or not owns:
            return
        self._hooked.add(id(x))
        # held by the taps under a key of its own (micro-batches hold several inputs of one layer),
        # not by the hook: x -> hook -> taps -> x would be a cycle through C++
        key, self._next_key = self._next_key, self._next_key + 1
        self._held[key] = x
        add_grad_hook(x, partial(self._on_input_grad, i, key, x._version))

    def _on_input_grad(self, i: int, key: int, version: int, g: Tensor) -> None:
        x = self._held.pop(key, None)
        if self.failed or x is None or x._version != version:
            return  # changed in place since: its values are no longer the ones g belongs to
        try:
            if self._held_inputs.add(i, x, g):
                # reduced with the layer outputs' gradients when this backward pass ends
                torch.autograd.Variable._execution_engine.queue_callback(self._reduce_grads)
        except Exception as e:
            self._fail(e)

    def read_structure(self, root: Any = None) -> None:
        """Read the backward graph from ``root`` (the loss's ``grad_fn``; default the model output's) and
        set each parameter layer's ``graph`` facts: ``trunk`` (its input's position on the trunk, 0 =
        nearest the loss) and ``stream`` (which stretch between joins of foreign inputs, 0 = nearest the
        loss) for the layers measured from now on, ``branch`` for layers off the trunk, ``norm`` for layers
        that divide by a statistic of their input, ``attention`` for layers whose output a softmax
        attention reads."""
        from gradvet._graph import (
            attention_inputs,
            dominators,
            merges,
            normalises,
            read_graph,
            trunk,
        )

        self.structure_pending = False
        nodes, self._nodes = self._nodes, {}
        sources, self._sources = self._sources, []
        root = root if root is not None else self._out_node
        self._out_node = None
        if root is None or not nodes:
            return
        try:
            g = read_graph([root])
            idom = dominators(g)
            found = {i: g.index.get(id(n)) for i, (_, n, _) in nodes.items() if n is not None}
            outs = {i: k for i, k in found.items() if k is not None and idom[k] != -2}
            if not outs:
                return
            first = min(outs, key=lambda i: self.infos[i].order)
            chain = trunk(g, idom, outs[first])
            pos = {k: p for p, k in enumerate(chain)}
            layer_of = {g.index[id(n)]: i for i, n in sources if id(n) in g.index}
            src = frozenset(layer_of)
            for k in attention_inputs(g, src):
                self.infos[layer_of[k]].graph["attention"] = True
            joins = [p for p, m in enumerate(merges(g, chain, outs[first], src)) if m]
            out_ids = frozenset(id(n) for _, n in sources)
            for i, (xn, yn, owns) in nodes.items():
                facts = self.infos[i].graph
                if yn is not None and normalises(yn, xn, out_ids):
                    facts["norm"] = True
                xk = None if xn is None else g.index.get(id(xn))
                if owns and xk in pos:
                    facts["trunk"] = pos[xk]
                    # streams are numbered from the loss: a join belongs to the stream it feeds
                    facts["stream"] = sum(1 for p in joins if p < pos[xk])
                    self._trunk_owner.add(i)
                if i in outs and outs[i] not in pos:
                    facts["branch"] = True
            mask = torch.zeros(len(self.infos), dtype=torch.bool)
            mask[sorted(self._trunk_owner)] = True
            self._trunk_mask = mask.to(self.device or torch.device("cpu"))
        except Exception:  # the chain view stays: structure is an aid, never a cost
            log.exception("gradvet: could not read the model's graph")

    def _unit_dim(self, i: int, args: Any, y: Tensor) -> int:
        info = self.infos[i]
        if info.role == "activation" and args and isinstance(args[0], Tensor):
            rec = self._producer.get(id(args[0]))
            if rec is not None and self.infos[rec[0]].role != "other":
                return 1 if self.infos[rec[0]].channel_first else -1
            # no producer, or a parameter-free one that says nothing of the layout (timm's SE holds
            # `bn = nn.Identity()` between its 1x1 conv and the ReLU): NCHW maps put units on dim 1
            return 1 if y.dim() >= 4 else -1
        return 1 if info.channel_first else -1

    def _on_grad(self, i: int, g: Tensor) -> None:
        if self.failed:
            return
        try:
            if self._held_grads.add(i, g):
                # reduced together when this backward pass ends (or sooner, past the memory cap)
                torch.autograd.Variable._execution_engine.queue_callback(self._reduce_grads)
        except Exception as e:
            self._fail(e)

    def _reduce_grads(self) -> None:
        try:
            # no graph: the held inputs require grad, and collect() runs this outside the backward pass
            with torch._C.DisableTorchFunction(), torch.no_grad():
                self._held_grads.reduce()
                self._held_inputs.reduce()
        except Exception as e:
            self._fail(e)

    @_eager
    def functional_activation(self, x: Any, kind: ActivationKind, out: Any, plain: bool = True) -> None:
        """Attribute ``out = kind(x)`` to the layer that produced ``x`` and learn the pair.

        ``plain``: the call had no arguments besides ``x`` (and ``inplace``), so that later
        steps can apply ``kind.fn`` to the layer's output themselves; otherwise the mode
        stays on for every measured step. Eager under torch.compile like the hooks: dynamo
        traces the mode's ``__torch_function__``, and a traced in-place add to the
        accumulators was applied twice (saturation counted double with the eager backend).
        """
        if not isinstance(x, Tensor) or not isinstance(out, Tensor):
            return
        rec = self._producer.get(id(x))
        if rec is None or rec[1] is not x or self.infos[rec[0]].role != "param":
            return
        i, _, call = rec
        try:
            if not self.infos[i].activation:
                self.infos[i].activation = kind.name
            if (i, call) in self._functional and not self._mode_always:
                return  # learned on an earlier forward of the structure step: the hook measured it
            if self.structure_pending:
                if plain:
                    self._functional[(i, call)] = kind
                else:
                    self._mode_always = True
            unit_dim = 1 if self.infos[i].channel_first else -1
            with torch._C.DisableTorchFunction(), torch.no_grad():  # other modes below ours must not see it
                # the layer's moments are its own output's; the activation adds saturation and death
                self._activation(i, call, kind, out, unit_dim)
        except Exception as e:
            self._fail(e)

    def _rnn_pre(self, i: int, module: nn.Module, args: Any) -> Any:
        if self._measuring() and self.time_profile and args:
            return self._rnn_pre_body(i, args)
        return None

    @_eager
    def _rnn_pre_body(self, i: int, args: Any) -> Any:
        x = args[0]
        if not isinstance(x, Tensor) or not x.is_floating_point():
            return None  # PackedSequence inputs: no per-time-step profile
        tdim = 0 if x.dim() == 2 else self.infos[i].time_dim or 0
        # The hook goes on a tensor of ours, never on the caller's: a leaf input that
        # requires grad would otherwise keep gradvet's hook after the Monitor is gone.
        x = x.detach().requires_grad_(True) if not x.requires_grad else x.view_as(x)
        x.register_hook(partial(self._on_time_grad, i, tdim))
        return (x, *args[1:])

    def _on_time_grad(self, i: int, tdim: int, g: Tensor) -> None:
        if self.failed:
            return
        try:
            with torch._C.DisableTorchFunction():
                sq = time_stats(g, tdim)
                prev = self._time.get(i)
                if prev is not None and prev.shape != sq.shape:
                    n = max(prev.numel(), sq.numel())
                    prev = torch.nn.functional.pad(prev, (0, n - prev.numel()))
                    sq = torch.nn.functional.pad(sq, (0, n - sq.numel()))
                self._time[i] = sq if prev is None else prev + sq.to(prev.device)
        except Exception as e:
            self._fail(e)

    def release(self) -> None:
        """Drop every tensor and graph node held between hooks (the Monitor is closing).

        A tensor held here keeps its autograd graph alive, and the graph's hooks keep this object, and
        through it the model, alive: a cycle through autograd's C++ nodes, which the garbage collector
        cannot see, so the whole model leaked with every ``check`` (and every ``treat`` attempt) before
        the root's output stopped being held here. What was learned of the model stays: a Monitor can be
        entered again."""
        self._reduce_outputs()
        self._reduce_grads()
        self._producer.clear()
        self._held, self._hooked, self._time = {}, set(), {}
        self._held_out.watched = []
        self._nodes, self._sources, self._out_node = {}, [], None
        self.in_activation_module = 0

    def _fail(self, e: Exception) -> None:
        self.failed = True
        warnings.warn(
            f"gradvet: per-layer taps disabled after an internal error ({type(e).__name__}: {e}); "
            "training continues and per-parameter statistics are still recorded.",
            RuntimeWarning,
            stacklevel=3,
        )
        log.exception("gradvet layer tap failed")

    # -- per step -----------------------------------------------------------------------
    def collect(self, inv_scale: Optional[Tensor] = None) -> tuple[Tensor, dict[int, Tensor]]:
        """Return ``([L, 8] stats, {layer: [T] grad norm per time step})`` and reset."""
        dev = self.device or torch.device("cpu")
        self._reduce_outputs()
        self._reduce_grads()  # a gradient held outside a finished backward pass (normally none)
        acc, dead = self._sums.take()
        stats = derive_layer_stats(acc, dead)
        times = {i: t.sqrt().float() for i, t in self._time.items()}
        if inv_scale is not None:
            inv = inv_scale.to(dev, torch.float32)
            stats[:, 0:2] = stats[:, 0:2] * inv
            times = {i: t * inv.to(t.device) for i, t in times.items()}
        self._calls = [0] * len(self.infos)
        self._time = {}
        return stats, times

    def collect_sens(self, inv_scale: Optional[Tensor] = None) -> Tensor:
        """``[L, 2]``: ``||dL/dx * x||`` and ``||dL/dx||`` of the layers' inputs measured since the last
        call (NaN for the others); resets. No host sync."""
        dev = self.device or torch.device("cpu")
        self._reduce_grads()  # inputs held outside a finished backward pass (normally none)
        sens, self._held = self._sums.take_sens(), {}
        if sens is None:
            return torch.full((len(self.infos), 2), float("nan"), dtype=torch.float32, device=dev)
        sens = sens.to(dev)
        valid = sens[:, 2] > 0
        if self._trunk_mask is not None:
            valid = valid & self._trunk_mask.to(dev)  # the structure step measured every input to find it
        vals = sens[:, :2].sqrt().float()
        if inv_scale is not None:
            vals = vals * inv_scale.to(dev, torch.float32)
        return torch.where(valid[:, None], vals, torch.full_like(vals, float("nan")))
