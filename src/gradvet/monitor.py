"""The Monitor: measures gradient health during training, at low overhead.

Per optimizer step (``monitor.step(loss)``, after backward, before ``opt.step``):
per-parameter gradient norm, max |g|, non-finite count and parameter norm, from
``p.grad`` read once, with fused ``torch._foreach_norm`` kernels, kept on the
device. On a schedule (``layer_every``): per-layer taps (see :mod:`gradvet._taps`).
On another (``update_every``): update/weight ratios from optimizer step hooks, also
under ``optimizer.step(closure)`` (Lightning, LBFGS), where ``monitor.step`` runs
inside the closure: the ratio is then recorded at the closure's first step.
Device buffers move to the host every ``flush_every`` steps: that is the only
host-device sync gradvet adds to a step.

Example:
    >>> import torch, gradvet
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
    ...     for _ in range(3):
    ...         opt.zero_grad()
    ...         loss = model(torch.randn(16, 4)).pow(2).mean()
    ...         loss.backward()
    ...         monitor.step(loss)
    ...         opt.step()
    >>> monitor.run.series("param/grad_norm").values.shape
    (3, 4)
"""

from __future__ import annotations

import atexit
import logging
import os
import platform
import time
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from gradvet import _distributed
from gradvet._compiled import EagerWhileMeasuring
from gradvet._hooks import HookSet
from gradvet._layers import discover_layers, owner_names
from gradvet._structure import layer_facts, optimizer_settings
from gradvet._taps import LayerTaps
from gradvet._validate import require_module, scalar_loss, trainable_parameters, unwrap_optimizer
from gradvet._version import __version__
from gradvet.config import MonitorConfig, ProfileLike, resolve_profile
from gradvet.errors import GradvetUsageError
from gradvet.record import RecordWriter, Run, load_written, resolve_record_path
from gradvet.stats._layer import LAYER_STATS
from gradvet.stats._params import PARAM_STATS, param_stats
from gradvet.stats._updates import l2_norms, snapshot, update_norms_

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


class Monitor:
    """Measure gradient health of ``model`` while it trains.

    Args:
        model: any ``torch.nn.Module``.
        optimizer: optional; an optimizer, or a list of them when the model's parameters are split
            across several (a GAN's generator and discriminator; Muon for matrices and AdamW for
            the rest): enables update/weight ratios (step hooks), tells the diagnosis which
            parameters some param group trains, and tells an AMP ``scaler`` whether gradients were
            already unscaled. A wrapper that steps the optimizer it holds (Accelerate's
            ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``) is read through to it.
            Call ``monitor.step()`` once per training step, not per optimizer;
            an optimizer that steps before ``monitor.step()`` in the loop has its update recorded
            at the previous measured step. With a ``scaler``, unscale every optimizer's gradients
            before ``monitor.step()`` or none of them (a mix is read as still scaled).
        scaler: optional ``torch.amp.GradScaler``; gradients are then measured in true
            units and steps the scaler skips are recorded as skipped.
        record: optional path of the on-disk record (SQLite); without it the run is
            kept in memory (``monitor.run``).
        profile: ``"economy"`` (default), ``"business"``, ``"full"`` or a
            :class:`gradvet.MonitorConfig`.
        distributed: ``"auto"`` (default): under an initialized ``torch.distributed``
            with several ranks (DDP or FSDP2 ``fully_shard``), record what one process would
            record on the global batch, rank 0 writing; ``"off"``: each rank records its
            own view; or a process group. See :mod:`gradvet._distributed`.
        overwrite: replace an existing gradvet record at ``record`` (default False: refuse
            it). Any other file there is always refused, never deleted. Entering the same
            Monitor again appends to its own record.
        **overrides: fields of :class:`gradvet.MonitorConfig` to change, e.g.
            ``layer_every=10``.

    Raises:
        TypeError: ``model`` is not a module, or ``optimizer``/``scaler`` have the wrong type.
        ValueError: the model has no trainable parameters, or a config value is invalid.
            On entering: ``record`` is another file, an existing record (without
            ``overwrite``), or is being written by another Monitor.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Union[torch.optim.Optimizer, Sequence[torch.optim.Optimizer], None] = None,
        scaler: Any = None,
        record: Optional[PathLike] = None,
        profile: ProfileLike = None,
        distributed: Any = "auto",
        overwrite: bool = False,
        **overrides: Any,
    ) -> None:
        self.model = model = _distributed.unwrap(require_module(model, "Monitor"))
        self.optimizers = _optimizers(optimizer)
        if scaler is not None and not hasattr(scaler, "get_scale"):
            raise TypeError(f"Monitor(scaler=...) needs a torch.amp.GradScaler, got {type(scaler).__name__}")
        self.config: MonitorConfig = resolve_profile(profile)
        if overrides:
            self.config = self.config.replace(**overrides)
        #: the first optimizer (None without one); all of them are in ``optimizers``
        self.optimizer = self.optimizers[0] if self.optimizers else None
        self.scaler = scaler
        self.param_names, self.parameters, self.frozen = trainable_parameters(model, "Monitor")
        if self.optimizers and not any(self._opt_params(o) for o in self.optimizers):
            warnings.warn(
                f"Monitor(optimizer=...): the optimizer's param groups hold none of the {len(self.parameters)} "
                f"trainable parameters of {type(model).__name__}, so no update ratio can be measured; pass the "
                "optimizer built from this model's parameters",
                UserWarning,
                stacklevel=2,
            )
        self._dist = _distributed.resolve(distributed, model, self.parameters)
        self._param_index = {id(p): i for i, p in enumerate(self.parameters)}
        self._warned_unmonitored = False
        infos, modules, kinds = discover_layers(model, self._param_index)
        self.layer_infos = infos
        self._taps = LayerTaps(infos, modules, kinds, self.config.saturation_threshold, self.config.time_profile)
        self.record_path = resolve_record_path(record)  # absolute: an os.chdir() cannot move it
        if not isinstance(overwrite, bool):
            raise TypeError(f"Monitor(overwrite=...) takes True or False, got {overwrite!r}")
        self._overwrite, self._record_started = overwrite, False  # a second `with` appends
        self._record_error: Optional[BaseException] = None
        self.run: Optional[Run] = None if record is not None else Run()
        self._writer: Optional[RecordWriter] = None
        self._hooks = HookSet()
        self._eager = EagerWhileMeasuring()
        self._entered = False
        self._step = 0
        self._buf: dict[str, list] = {}
        self._loss_node: Any = None
        # non-finite values in the model's inputs on this step: a device count, no host sync
        self._input_bad: Optional[Tensor] = None
        self._last_flush = time.monotonic()
        self._last_stats: Optional[Tensor] = None
        # per optimizer (keyed by id): the measured step whose update ratio its next step() gives
        self._update_step: dict[int, int] = {}
        # weights before optimizer.step() on an update step: (monitored indices, copies)
        self._before: dict[int, tuple[list[int], list[Tensor]]] = {}
        # the copies' buffers, kept across update steps (per optimizer)
        self._snapshots: dict[int, dict[int, Tensor]] = {}
        # optimizer.step(closure): the first step the closure measures (the ratio's step), and
        # the monitor step from which the next closure step is due for a ratio (update_every)
        self._closure_from: dict[int, int] = {}
        self._closure_next: dict[int, int] = {}
        # monitor.step() calls since the last optimizer.step(), and optimizer steps in a row that saw
        # several (a lone one is an AMP step the scaler skipped, not a second call per step)
        self._calls_since_opt, self._multi_in_a_row, self._warned_multi = 0, 0, False
        # ||W|| per parameter measured by the last step() (None if it skipped them)
        self._weight_norms: Optional[Tensor] = None
        self._meta = self._static_meta()
        if self._dist is not None:
            self._meta["distributed"] = self._dist.meta()
        self._facts = [layer_facts(m) for m in modules]

    # -- context --------------------------------------------------------------------
    def __enter__(self) -> Monitor:
        if self._entered:
            raise GradvetUsageError("this Monitor is already active; use one `with monitor:` block at a time")
        if self.record_path is not None and self._writer is None and (self._dist is None or self._dist.is_writer):
            self._writer = RecordWriter(
                self.record_path, overwrite=self._overwrite, append=self._record_started, meta=self._meta
            )
            self._record_started = True
            atexit.register(self.close)  # entered by hand and never closed: flush at exit
        elif self.run is not None:
            self.run.meta.update(self._meta)
        self._taps.attach(self.model, self._hooks)
        self._hooks.add(self.model.register_forward_pre_hook(
            torch.compiler.disable(self._check_inputs), with_kwargs=True))
        for opt in self.optimizers:
            self._hooks.add(opt.register_step_pre_hook(self._opt_pre))
            self._hooks.add(opt.register_step_post_hook(self._opt_post))
        self._set_layer_step(self._step % self.config.layer_every == 0)
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close(error=exc)

    def close(self, error: Optional[BaseException] = None) -> None:
        """Flush, remove every hook, finish the record. Idempotent."""
        if not self._entered:
            return
        self._entered = False
        atexit.unregister(self.close)
        self._hooks.remove()
        self._set_layer_step(False)
        self._taps.release()
        self._loss_node = None
        self._snapshots, self._before, self._weight_norms = {}, {}, None
        try:
            self._flush()
        except Exception as e:  # never mask the user's own exception
            log.exception("gradvet: final flush failed: %s", e)
        status = "finished" if error is None else f"crashed: {type(error).__name__}: {error}"
        final = {"status": status, "steps": self._step, "finished_at": time.time()}
        scale = self._scale_tensor()
        if scale is not None:
            final["final_loss_scale"] = float(scale)  # sync-ok: once, at the end
        if self._writer is not None:
            self._writer.meta(**final)
            self._writer.close()
            self._record_error = self._writer.failed
            self._writer = None
        elif self.run is not None:
            self.run.meta.update(final)

    def annotate(self, **meta: Any) -> None:
        """Add JSON-serialisable entries to the run's metadata (``run.meta``), before or during a run.

        Integrations say here how they measured (the HF Trainer callback: ``grad_norms``).

        Example:
            >>> import torch, gradvet
            >>> monitor = gradvet.Monitor(torch.nn.Linear(2, 1))
            >>> monitor.annotate(grad_norms="pre_clip")
            >>> monitor.run.meta["grad_norms"]
            'pre_clip'
        """
        self._meta.update(meta)
        if self._writer is not None:
            self._writer.meta(**meta)
        if self.run is not None:
            self.run.meta.update(meta)

    # -- measuring ------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Number of optimizer steps measured so far."""
        return self._step

    @property
    def last_grad_norms(self) -> list[Tensor]:
        """Per-parameter gradient L2 norms of the last step (0-d device tensors, true units).

        Aligned with ``monitor.parameters``; gradvet's norm clipper takes them so that
        clipping costs no second pass over the gradients.
        """
        if self._last_stats is None:
            raise GradvetUsageError("no step measured yet; call monitor.step(loss) after backward first")
        return list(self._last_stats[:, 0].unbind(0))

    def step(self, loss: Any = None) -> None:
        """Measure one optimizer step: after ``backward()``, before ``optimizer.step()``.

        Args:
            loss: the (unscaled) scalar loss of this step, or None.

        Raises:
            GradvetUsageError: called outside ``with monitor:``.
            ValueError: ``loss`` is not a scalar.
        """
        if not self._entered:
            raise GradvetUsageError(
                "monitor.step() was called outside `with monitor:`; put the training loop inside "
                "the with block (or call monitor.__enter__() first)"
            )
        loss_t = scalar_loss(loss, "monitor.step")
        self._calls_since_opt += 1
        # the graph is read from the loss when it has one (a model may return more than the loss uses)
        self._loss_node = getattr(loss, "grad_fn", None) if self._taps.structure_pending else None
        s = self._step
        try:
            self._measure(s, loss_t)
        except Exception as e:
            warnings.warn(
                f"gradvet: measuring step {s} failed ({type(e).__name__}: {e}); the step is not "
                "recorded, training continues",
                RuntimeWarning,
                stacklevel=2,
            )
            log.exception("gradvet: measuring step %d failed", s)
        self._step = s + 1
        self._set_layer_step(self._step % self.config.layer_every == 0)
        if len(self._buf.get("step", ())) >= self.config.flush_every or (
            time.monotonic() - self._last_flush > self.config.flush_seconds
        ):
            self._flush()

    def _set_layer_step(self, measured: bool) -> None:
        """Whether the coming forward/backward passes are measured layer by layer; a compiled model runs
        them eagerly (gradvet._compiled) and its compiled graph on the other steps."""
        self._taps.active = measured
        self._eager.set(measured)

    def _scale_tensor(self) -> Optional[Tensor]:
        sc = self.scaler
        if sc is None or not sc.is_enabled():
            return None
        return getattr(sc, "_scale", None)

    def _grad_scale(self) -> Optional[Tensor]:
        """The factor the gradients currently carry (None if already unscaled)."""
        scale = self._scale_tensor()
        if scale is None:
            return None
        states = getattr(self.scaler, "_per_optimizer_states", {})
        seen = [states[id(o)].get("stage") for o in self.optimizers if id(o) in states]
        if seen:
            from torch.amp.grad_scaler import OptState

            if all(stage is OptState.UNSCALED for stage in seen):  # scaler.unscale_(opt) for each
                return None
        return scale

    def _check_inputs(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        """Count NaN/Inf in the floating tensors the model is called with, on every training forward (one
        reduction per input, kept on the device): bad data is the most frequent origin of a NaN, and the
        layer a NaN is born in says nothing about it."""
        if not torch.is_grad_enabled():
            return
        try:
            with torch._C.DisableTorchFunction():
                for t in _floating_tensors((args, kwargs)):
                    n = (~torch.isfinite(t.detach())).sum()
                    self._input_bad = n if self._input_bad is None else self._input_bad + n.to(self._input_bad.device)
        except Exception:  # measuring never costs the training run
            log.exception("gradvet: checking the inputs failed")

    def _measure(self, s: int, loss: Optional[Tensor]) -> None:
        self._weight_norms = None  # never the norms of an earlier step's weights
        grads = [p.grad for p in self.parameters]
        dev = self.parameters[0].device
        gscale = self._grad_scale()
        layer_step = s % self.config.layer_every == 0
        extended = layer_step or s % self.config.param_every == 0 or s % self.config.update_every == 0
        stats = (param_stats if self._dist is None else self._dist.param_stats)(
            self.parameters,
            grads,
            count_nonfinite=self.config.count_nonfinite or layer_step,
            grad_scale=gscale,
            device=dev,
            extended=extended,
        )
        self._last_stats = stats
        self._weight_norms = stats[:, 3] if extended else None
        buf = self._buf
        buf.setdefault("step", []).append(s)
        nan = torch.full((), float("nan"), device=dev)
        # non_blocking: a float loss arrives as a CPU scalar; a blocking H2D copy would sync
        lval = loss.to(dev, non_blocking=True) if loss is not None else nan
        if self._dist is not None and loss is not None:
            lval = self._dist.mean_async(lval)  # mean over ranks; waited for in _flush
        buf.setdefault("loss", []).append(lval)
        bad_in, self._input_bad = self._input_bad, None
        buf.setdefault("input_nonfinite", []).append(nan if bad_in is None else bad_in.to(dev, torch.float32))
        buf.setdefault("param", []).append(stats)
        scale = self._scale_tensor()
        if scale is not None:
            buf.setdefault("loss_scale", []).append(scale.detach().float().reshape(()).clone())
        if layer_step:
            # activation gradients carry the scale of the backward even after
            # scaler.unscale_(opt), which unscales p.grad only
            inv = None if scale is None else 1.0 / scale.float()
            if self._dist is not None:
                self._dist.reduce_taps(self._taps)
            if self._taps.structure_pending:
                self._taps.read_structure(self._loss_node)
                self._loss_node = None
            lstats, times = self._taps.collect(inv)
            buf.setdefault("layer_step", []).append(s)
            buf.setdefault("layer", []).append(lstats)
            buf.setdefault("sens", []).append(self._taps.collect_sens(inv))
            for i, t in times.items():
                buf.setdefault(f"time:{i}", []).append((s, t))
        if s % self.config.update_every == 0:
            self._update_step = {id(o): s for o in self.optimizers}

    # -- update/weight ratios through optimizer step hooks ----------------------------
    def _opt_params(self, optimizer: torch.optim.Optimizer) -> list[tuple[int, Tensor]]:
        ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
        return [(i, p) for i, p in enumerate(self.parameters) if id(p) in ids]

    def _count_calls(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Warn once when monitor.step() runs several times per optimizer step (not under a closure)."""
        calls = self._calls_since_opt
        closure = _has_closure(optimizer, args, kwargs)  # LBFGS calls its closure, and step(), many times
        self._multi_in_a_row = self._multi_in_a_row + 1 if calls > 1 and not closure else 0
        if self._multi_in_a_row >= 2 and not self._warned_multi:
            self._warned_multi = True
            warnings.warn(
                f"monitor.step() was called {calls} times for 1 optimizer step (step {self._step}); gradvet "
                "counts each call as an optimizer step. Call it once per optimizer.step(), after the last "
                "backward() of the step (with gradient accumulation: once per accumulated step)",
                RuntimeWarning,
                stacklevel=4,
            )

    def _opt_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._entered:
            return
        self._count_calls(optimizer, args, kwargs)
        key = id(optimizer)
        self._closure_from.pop(key, None)
        if key not in self._update_step:
            # optimizer.step(closure) (Lightning, LBFGS): monitor.step() runs inside the
            # closure, after this hook; the weights are snapshotted now if that step is due
            if not _has_closure(optimizer, args, kwargs) or self._step < self._closure_next.get(key, 0):
                return
            self._closure_from[key] = self._step
        try:
            pairs = self._opt_params(optimizer)
            index = [i for i, _ in pairs]
            # read under no_grad; the buffers are this optimizer's, kept across update steps
            self._before[key] = index, snapshot([p for _, p in pairs], index, self._snapshots.setdefault(key, {}))
        except Exception as e:
            self._before.pop(key, None)
            log.warning("gradvet: update snapshot failed: %s", e)

    def _opt_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._calls_since_opt = 0
        key = id(optimizer)
        s, before, first = self._update_step.pop(key, None), self._before.pop(key, None), self._closure_from.pop(key, None)
        if first is not None:
            if self._step == first:  # the closure measured no step: nothing to attach a ratio to
                return
            s = first
            self._closure_next[key] = (first // self.config.update_every + 1) * self.config.update_every
        if s is None or before is None or not before[0]:
            return
        try:
            index, snap = before
            now: list[Tensor] = [self.parameters[i] for i in index]  # read under no_grad: no detach per tensor
            dev = self.parameters[0].device
            if self._dist is not None:
                with torch.no_grad():
                    dn, wn = self._dist.update_norms(now, snap, index)
            else:
                # ||W|| is the norm step() measured on these same weights (optimizer.step()
                # comes after monitor.step()); unbind + stack, not an index tensor (an H2D copy)
                # under a closure the last step() may have measured other weights (LBFGS
                # evaluates the closure at trial points): ||W_before|| from the snapshot
                measured = self._weight_norms if first is None else None
                if measured is None:  # step() skipped ||W|| (e.g. an AMP-skipped update step)
                    wn = l2_norms(snap)
                elif len(index) == len(self.parameters):  # _opt_params keeps the monitor's order
                    wn = measured
                else:
                    wn = torch.stack([measured[i] for i in index])
                dn = update_norms_(snap, now)  # the snapshot now holds -update
            ratio = dn.to(dev) / wn.to(dev)
            if len(index) < len(self.parameters):  # the optimizer has only some of them
                # stacked, not index_put with torch.tensor(indices): that H2D copy would sync
                cols: list[Tensor] = [torch.full((), float("nan"), device=dev)] * len(self.parameters)
                for i, r in zip(index, ratio.unbind(0)):
                    cols[i] = r
                ratio = torch.stack(cols)
            steps, rows = self._buf.setdefault("update_step", []), self._buf.setdefault("update", [])
            if steps and steps[-1] == s:  # another optimizer's parameters, same step: one row
                rows[-1] = torch.where(torch.isnan(ratio), rows[-1], ratio)
            else:
                steps.append(s)
                rows.append(ratio)
        except Exception as e:
            log.warning("gradvet: update ratio failed: %s", e)

    # -- flushing -------------------------------------------------------------------
    def _static_meta(self) -> dict[str, Any]:
        return {
            "gradvet_version": __version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "model": type(self.model).__name__,
            "optimizer": ", ".join(type(o).__name__ for o in self.optimizers) or None,
            "amp": self.scaler is not None,
            "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
            "frozen": self.frozen,
            "started_at": time.time(),
            "status": "running",
            "pid": os.getpid(),
        }

    def _tables(self) -> tuple[list[dict], list[dict]]:
        owners = owner_names(self.model, self.parameters)
        settings = optimizer_settings(self.optimizers, self.parameters)
        params = [
            {
                "name": n,
                "layer": owners[i],
                "shape": list(p.shape),
                "numel": p.numel(),
                "sparse_grad": bool(p.grad is not None and p.grad.is_sparse),
                "lr": settings[i].get("lr"),
                "optimizer": {k: v for k, v in settings[i].items() if k != "lr"},
            }
            for i, (n, p) in enumerate(zip(self.param_names, self.parameters))
        ]
        layers = [dict(info.to_dict(), facts=self._facts[i]) for i, info in enumerate(self.layer_infos)]
        return params, layers

    def _warn_unmonitored(self) -> None:
        """Warn once when the model holds trainable parameters the Monitor does not measure: a layer
        added (or a frozen one unfrozen) after the Monitor was built would otherwise go unseen. Host-side
        only, on flushes: a walk over the parameter list, no device work."""
        if self._warned_unmonitored or self._meta.get("source") == "check":  # check's model cannot change
            return
        new = [name for name, p in self.model.named_parameters()
               if p.requires_grad and id(p) not in self._param_index]
        if new:
            self._warned_unmonitored = True
            shown = ", ".join(repr(n) for n in new[:5]) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
            warnings.warn(
                f"gradvet: {len(new)} trainable parameter(s) of {type(self.model).__name__} are not monitored "
                f"({shown}): they were added or unfrozen after the Monitor was created. Build the Monitor "
                "once the model is complete (or a new one after changing it) to measure them.",
                UserWarning,
                stacklevel=3,
            )

    def _flush(self) -> None:
        """Move buffered device tensors to the host and hand them to the store."""
        self._warn_unmonitored()
        buf, self._buf = self._buf, {}
        self._last_flush = time.monotonic()
        if not buf.get("step") and not buf.get("update"):
            return
        blocks: list[tuple[str, np.ndarray, np.ndarray]] = []
        if self._dist is not None:
            self._dist.wait()
        # note: the .cpu() calls below are gradvet's one deliberate CPU-GPU sync point.
        if buf.get("step"):
            steps = np.asarray(buf["step"], dtype=np.int64)
            blocks.append(("loss", steps, torch.stack(buf["loss"]).cpu().numpy()))
            if buf.get("input_nonfinite"):
                bad_in = torch.stack(buf["input_nonfinite"]).cpu().numpy()
                if np.isfinite(bad_in).any():  # NaN: this step's inputs were not checked
                    blocks.append(("input_nonfinite", steps, bad_in))
            pstats = torch.stack(buf["param"]).cpu().numpy()  # [n, P, 4]
            for j, name in enumerate(PARAM_STATS):
                blocks.append((f"param/{name}", steps, pstats[:, :, j]))
            if buf.get("loss_scale"):
                blocks.append(("loss_scale", steps, torch.stack(buf["loss_scale"]).cpu().numpy()))
        if buf.get("layer"):
            lsteps = np.asarray(buf["layer_step"], dtype=np.int64)
            lstats = torch.stack(buf["layer"]).cpu().numpy()  # [k, L, 8]
            for j, name in enumerate(LAYER_STATS):
                blocks.append((f"layer/{name}", lsteps, lstats[:, :, j]))
            if buf.get("sens"):
                sens = torch.stack(buf["sens"]).cpu().numpy()  # [k, L, 2]
                blocks.append(("graph/in_sens", lsteps, sens[:, :, 0]))
                blocks.append(("graph/in_grad", lsteps, sens[:, :, 1]))
        for key in [k for k in buf if k.startswith("time:")]:
            i = int(key.split(":", 1)[1])
            rows = buf[key]
            width = max(t.numel() for _, t in rows)
            arr = np.full((len(rows), width), np.nan, dtype=np.float32)
            for r, (_, t) in enumerate(rows):
                arr[r, : t.numel()] = t.cpu().numpy()
            blocks.append((f"time/{self.layer_infos[i].name}", np.asarray([s for s, _ in rows]), arr))
        if buf.get("update"):
            blocks.append(
                ("param/update_ratio", np.asarray(buf["update_step"]), torch.stack(buf["update"]).cpu().numpy())
            )
        params, layers = self._tables()
        if self._writer is not None:
            self._writer.tables(params, layers)
            self._writer.blocks(blocks)
        elif self.run is not None:
            self.run.params, self.run.layers = params, layers
            for metric, steps_, values in blocks:
                self.run.add(metric, steps_, values)

    # -- results --------------------------------------------------------------------
    def load(self) -> Run:
        """The run so far: flushes, then returns the in-memory run or reads the record."""
        if self._entered:
            self._flush()
        if self.run is not None:
            return self.run
        if self._writer is not None:
            self._writer.flush()
        failed = self._writer.failed if self._writer is not None else self._record_error
        return load_written(self.record_path, failed)  # type: ignore[arg-type]

    def report(self) -> Any:
        """Diagnose the run so far and return a :class:`gradvet.Report`."""
        from gradvet.report import build_report

        return build_report(self.load())


def _floating_tensors(obj: Any, depth: int = 0) -> list[Tensor]:
    """Floating tensors in a model call's arguments (tuples, lists, dicts; two levels deep)."""
    if isinstance(obj, Tensor):
        return [obj] if obj.is_floating_point() else []
    if depth > 2:
        return []
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (tuple, list)) else ()
    return [t for o in items for t in _floating_tensors(o, depth + 1)]


def _optimizers(optimizer: Any) -> tuple[torch.optim.Optimizer, ...]:
    """``Monitor(optimizer=...)`` as a tuple: None, one optimizer, or a list or tuple of them."""
    if optimizer is None:
        return ()
    many = isinstance(optimizer, (list, tuple))
    opts = tuple(unwrap_optimizer(o) for o in (optimizer if many else (optimizer,)))
    for o in opts:
        if not isinstance(o, torch.optim.Optimizer):
            raise TypeError(
                "Monitor(optimizer=...) needs a torch.optim.Optimizer or a list of them, got "
                + (f"a list holding {type(o).__name__}" if many else type(o).__name__)
            )
    if many and not opts:
        raise ValueError("Monitor(optimizer=[]): the list is empty; pass None (no optimizer) or the optimizers")
    if len({id(o) for o in opts}) < len(opts):
        raise ValueError("Monitor(optimizer=[...]) lists the same optimizer twice; pass each once")
    return opts


def _has_closure(optimizer: Any, args: Any, kwargs: Any) -> bool:
    """Whether ``optimizer.step`` was called with a closure (positional or keyword).

    The step hooks receive the bound call's arguments, the optimizer itself first.
    """
    closure = kwargs.get("closure") if kwargs else None
    rest = args[1:] if args and args[0] is optimizer else args
    if closure is None and rest:
        closure = rest[0]
    return callable(closure)
