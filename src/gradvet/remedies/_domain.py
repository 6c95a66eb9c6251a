"""Guard the layer where NaN/Inf is born: clamp its inputs to the domain where its op is finite.

A forward pass turns non-finite inside an operation evaluated outside its domain:
``log``, ``sqrt``, ``1/x`` or a fractional power of a value <= 0, or ``exp`` of a value
above ``log(finfo.max)`` (Goodfellow, Bengio & Courville, 2016, *Deep Learning*,
sec. 4.1, "Overflow and underflow"). The common practice is to clamp the argument into
the domain first, as ``torch.distributions.utils.clamp_probs`` clamps probabilities to
``[eps, 1 - eps]`` with ``eps = torch.finfo(dtype).eps``.

:func:`guard_domain` finds the modules where the non-finite values are *born* on a
batch and wraps each in a :class:`DomainGuard` that clamps its inputs (to a lower bound
scaled to the inputs, so the gradient of ``log`` stays bounded too). It is a guard
that keeps training alive and proves the cause (the guarded model is finite); the real
fix is the operation in your code, e.g. ``torch.log(x.clamp_min(1e-6))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Optional

import torch
from torch import nn

from gradvet.check import _SavedState, call_model
from gradvet.errors import GradvetUsageError
from gradvet.remedies._lsuv import _inputs
from gradvet.remedies._result import Change, RemedyNotApplicable

#: Upper bounds tried for overflow, as fractions of ``log(finfo.max) / 2``: ``exp(k * x)``
#: needs ``high <= log(max) / k`` and the scale ``k`` inside the op is unknown.
_HIGH_FRACTIONS = tuple(10.0 ** -j for j in range(7))

#: Lower bound as a fraction of the RMS ``s`` of the guarded module's inputs. At ``s / 20`` the
#: derivative of ``log`` is 20x its value at ``s``, below the 10^1.5 growth that
#: gradvet.check's depth rule calls exploding; a clamp at ``finfo.eps`` alone keeps the forward
#: pass finite but lets ``1/x`` reach ~1e7 in the backward pass (on ``zoo.NanNet``: 200x
#: gradient growth, an exploding_gradients warning; at ``s / 20`` the re-check is healthy).
LOW_FRACTION = 0.05


class DomainGuard(nn.Module):
    """``inner(*clamp(args, low, high), **kwargs)``: every floating-point tensor positional
    argument is clamped to ``[low, high]`` (either bound may be None) before ``inner`` runs.

    ``inner`` stays a registered child named ``inner``, so its ``state_dict`` keys gain an
    ``inner.`` (a guarded ``'log'`` holds ``'log.inner.*'``). The forward pass only calls
    ``torch.clamp`` with Python-number bounds: no host sync. Outside ``[low, high]`` the
    gradient of the clamp is zero, as for ``torch.clamp`` itself.

    Example:
        >>> guard = DomainGuard(nn.Identity(), low=0.0, high=1.0)
        >>> guard(torch.tensor([-1.0, 0.5, 2.0]))
        tensor([0.0000, 0.5000, 1.0000])
        >>> guard
        DomainGuard(
          low=0, high=1
          (inner): Identity()
        )
    """

    def __init__(self, inner: nn.Module, low: Optional[float] = None, high: Optional[float] = None) -> None:
        super().__init__()
        if not isinstance(inner, nn.Module):
            raise TypeError(f"DomainGuard wraps an nn.Module, got {type(inner).__name__}")
        for name, bound in (("low", low), ("high", high)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))
                                      or not math.isfinite(bound)):
                raise GradvetUsageError(f"DomainGuard {name} must be a finite number or None, got {bound!r}")
        if low is None and high is None:
            raise GradvetUsageError("DomainGuard needs a bound: pass low=, high= or both")
        if low is not None and high is not None and low > high:
            raise GradvetUsageError(f"DomainGuard needs low <= high, got low={low}, high={high}")
        self.inner = inner
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        args = tuple(torch.clamp(a, self.low, self.high) if _floating(a) else a for a in args)
        return self.inner(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"low={_fmt(self.low)}, high={_fmt(self.high)}"


def _fmt(bound: Optional[float]) -> str:
    return "None" if bound is None else f"{bound:.3g}"


def _floating(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """The floating-point tensors in ``obj``, looking into tuples, lists and dicts."""
    if _floating(obj):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _finite(obj: Any) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in _tensors(obj))  # host sync: a one-off probe


def _detached(obj: Any) -> Any:
    """A copy of ``obj`` whose tensors cannot be changed by later in-place operations."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_detached(o) for o in obj) if type(obj) in (tuple, list) else obj
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    return obj


Call = tuple[tuple[Any, ...], dict[str, Any], int, int]  # args, kwargs, non-finite outputs, outputs


class _BirthProbe:
    """Forward hooks on every module of ``model`` that record the calls where non-finite values
    are born: all floating inputs finite, some floating output not. A context manager: on exit
    no hook of ours is left on the model."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.births: dict[nn.Module, list[Call]] = {}
        self._pending: dict[nn.Module, list[Optional[tuple[Any, Any]]]] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> _BirthProbe:
        for m in self.model.modules():
            self._handles.append(m.register_forward_pre_hook(self._before, with_kwargs=True))
            self._handles.append(m.register_forward_hook(self._after, with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _before(self, m: nn.Module, args: Any, kwargs: Any) -> None:
        # inputs are copied before the module runs: it may change them in place
        seen = (_detached(args), _detached(kwargs)) if _finite((args, kwargs)) else None
        self._pending.setdefault(m, []).append(seen)

    def _after(self, m: nn.Module, _args: Any, _kwargs: Any, out: Any) -> None:
        seen = self._pending[m].pop()
        if seen is not None and not _finite(out):
            bad = sum(int((~torch.isfinite(t)).sum()) for t in _tensors(out))
            total = sum(t.numel() for t in _tensors(out))
            self.births.setdefault(m, []).append((seen[0], seen[1], bad, total))


def _rms(calls: list[Call]) -> float:
    """RMS of the floating positional inputs recorded (the values a guard clamps)."""
    ts = [t for args, _, _, _ in calls for t in _tensors(args)]
    n = sum(t.numel() for t in ts)
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in ts) / n) if n else 0.0


def _candidates(calls: list[Call], low_fraction: float) -> list[tuple[Optional[float], Optional[float]]]:
    """Bounds to try, in order: ``low = max(low_fraction * rms, eps)`` (the domain of log, sqrt,
    1/x, x**p), then ``high = c``, then ``[-c, c]``, for ``c = log(finfo.max) / 2`` times 1, 0.1, ..., 1e-6.

    ``eps = finfo.eps`` is the floor ``clamp_probs`` uses; ``exp(c) = sqrt(finfo.max)`` leaves
    room to square the result or sum it without overflow. With inputs of several dtypes the
    narrowest decides (largest ``eps``, smallest ``max``)."""
    dtypes = {t.dtype for args, kwargs, _, _ in calls for t in _tensors((args, kwargs))}
    if not dtypes:  # no floating input: nothing a clamp could act on
        return []
    eps = max(torch.finfo(d).eps for d in dtypes)
    c = min(math.log(torch.finfo(d).max) for d in dtypes) / 2
    highs = [c * f for f in _HIGH_FRACTIONS]
    return [(max(low_fraction * _rms(calls), eps), None)] + [(None, h) for h in highs] + [(-h, h) for h in highs]


def _finite_with(m: nn.Module, calls: list[Call], low: Optional[float], high: Optional[float]) -> bool:
    guard = DomainGuard(m, low, high)
    return all(_finite(guard(*args, **kwargs)) for args, kwargs, _, _ in calls)


def _guard_of(model: nn.Module, m: nn.Module) -> Optional[DomainGuard]:
    """The :class:`DomainGuard` whose ``inner`` is ``m``, if any."""
    return next((g for g in model.modules() if isinstance(g, DomainGuard) and g.inner is m), None)


def _bounds(m: nn.Module, calls: list[Call], earlier: Optional[DomainGuard],
            low_fraction: float) -> Optional[tuple[Any, Any]]:
    """The first candidate under which ``m`` is finite on ``calls``; intersected with the bounds of
    the guard ``earlier`` that already wraps ``m`` (its recorded inputs were clamped by it)."""
    for low, high in _candidates(calls, low_fraction):
        if earlier is not None:
            low = max((b for b in (earlier.low, low) if b is not None), default=None)
            high = min((b for b in (earlier.high, high) if b is not None), default=None)
            if low is not None and high is not None and low > high:
                continue
        if _finite_with(m, calls, low, high):
            return low, high
    return None


def _nonfinite_params(m: nn.Module) -> list[str]:
    return [n for n, p in m.named_parameters() if not bool(torch.isfinite(p.detach()).all())]


def _plan(model: nn.Module, births: dict[nn.Module, list[Call]],
          low_fraction: float) -> list[tuple[str, nn.Module, Any, Any]]:
    """``(name, module, low, high)`` for each innermost birthplace; raises when one cannot be guarded."""
    order = {m: (i, n) for i, (n, m) in enumerate(model.named_modules())}
    inner = [m for m in births if not any(d is not m and d in births for d in m.modules())]
    plan = []
    for m in sorted(inner, key=lambda mod: order[mod][0]):
        name = order[m][1]
        bad = _nonfinite_params(m)
        if bad:
            raise RemedyNotApplicable(
                f"{name or type(model).__name__!r} turns finite inputs non-finite because its parameters {bad} "
                "hold NaN/Inf: that is not an operation outside its domain; apply 'init:reset_nonfinite' "
                "(or load the weights from an earlier checkpoint)")
        if m is model:
            raise RemedyNotApplicable(
                f"the non-finite values are born in {type(model).__name__}.forward itself (no submodule's output "
                "turns non-finite first), so there is no module to wrap: clamp the argument of the operation "
                "in your code, e.g. torch.log(x.clamp_min(1e-6)), or move it into its own nn.Module")
        found = _bounds(m, births[m], _guard_of(model, m), low_fraction)
        if found is None:
            raise RemedyNotApplicable(
                f"no clamp of {name!r}'s inputs ({type(m).__name__}) makes its output finite on the batch (tried "
                "low=finfo.eps and overflow bounds down to 1e-6 * log(finfo.max) / 2): the NaN/Inf does not come "
                f"from an input outside the op's domain; read {type(m).__name__}.forward for a 0/0, inf - inf "
                "or a non-finite constant")
        plan.append((name, m, *found))
    return plan


def _wrap(model: nn.Module, m: nn.Module, guard: DomainGuard) -> None:
    """Put ``guard`` in place of ``m`` in every parent that holds ``m`` (a shared module is guarded everywhere)."""
    for parent in list(model.modules()):
        for cname, child in list(parent._modules.items()):  # not named_children(): it skips a second name
            if child is m and parent is not guard:
                setattr(parent, cname, guard)


def guard_domain(model: nn.Module, batch: Any, *, low_fraction: float = LOW_FRACTION) -> list[Change]:
    """Wrap, in place, each module where NaN/Inf is born on ``batch`` in a :class:`DomainGuard`.

    One forward pass of the batch's inputs (``torch.no_grad``, the model's train/eval
    modes as they are; buffers, gradients and the RNG are restored afterwards) finds the
    innermost modules whose floating inputs are all finite and whose output is not. For
    each, bounds are tried on its recorded inputs in this order, and the first under
    which its output is finite is kept: ``low = max(low_fraction * s, finfo.eps)`` with
    ``s`` the RMS of its inputs (log, sqrt, 1/x and fractional powers of values <= 0;
    ``finfo.eps`` is the floor of ``torch.distributions.utils.clamp_probs``), then
    ``high = c`` and ``[-c, c]`` for ``c = log(finfo.max) / 2`` times 1, 0.1, ..., 1e-6
    (``exp`` overflow, whose scale inside the op is unknown). A module already inside a
    ``DomainGuard`` gets that guard's bounds tightened instead of a second guard.
    Goodfellow, Bengio & Courville (2016), sec. 4.1. This keeps training alive and proves
    the cause; fix the operation in your code afterwards. A one-off repair at setup
    time: it reads every module's inputs and outputs on the host.

    Args:
        model: edited in place; state_dict keys of a wrapped module ``m`` become ``m.inner.*``.
        batch: ``(inputs, targets)`` or inputs; a dict of inputs is passed as keyword arguments.
        low_fraction: the lower bound as a fraction of the inputs' RMS, in ``[0, 1)``;
            the default 1/20 also bounds the gradient of ``log`` (see :data:`LOW_FRACTION`),
            0 clamps at ``finfo.eps`` only, as ``clamp_probs`` does.

    Returns:
        One :class:`Change` per guarded module; empty when the forward pass is finite and
        the model already holds a ``DomainGuard`` (an earlier application).

    Raises:
        RemedyNotApplicable: the forward pass is finite; or the NaN/Inf is born in the root
            module's own ``forward``, or from non-finite parameters (``init:reset_nonfinite``),
            or no bound makes the module's output finite.
        GradvetUsageError: ``low_fraction`` outside ``[0, 1)``.

    Example:
        >>> class Log(nn.Module):
        ...     def forward(self, x):
        ...         return torch.log(x)
        >>> model = nn.Sequential(nn.Linear(4, 4), Log())
        >>> with torch.no_grad():
        ...     _ = model[0].weight.zero_(), model[0].bias.copy_(torch.tensor([-1.0, 0.0, 1.0, 3.0]))
        >>> [str(c) for c in guard_domain(model, torch.randn(8, 4))]  # Log's inputs: -1, 0, 1, 3 (RMS 1.66)
        ['1: wrap Log(): 16 of 32 outputs non-finite on the batch -> DomainGuard(low=0.0829, high=None) (outputs finite)']
        >>> model(torch.randn(1, 4)).detach().round(decimals=2)
        tensor([[-2.4900, -2.4900,  0.0000,  1.1000]])
    """
    if isinstance(low_fraction, bool) or not isinstance(low_fraction, (int, float)) or not 0 <= low_fraction < 1:
        raise GradvetUsageError(f"low_fraction must be a number in [0, 1), got {low_fraction!r}")
    inputs = _inputs(batch)
    saved = _SavedState(model)
    try:
        with torch.no_grad():
            with _BirthProbe(model) as probe:
                call_model(model, inputs)
            if not probe.births:
                if any(isinstance(m, DomainGuard) for m in model.modules()):
                    return []
                raise RemedyNotApplicable(
                    f"every forward output of {type(model).__name__} is finite on this batch: nothing to guard; "
                    "if gradvet.check reports non-finite gradients, they are born in the backward pass (e.g. "
                    "sqrt or norm at 0): use skip_nonfinite, or fix that op's gradient in your code")
            plan = _plan(model, probe.births, low_fraction)
    finally:
        saved.restore()
    return [_apply(model, name, m, low, high, probe.births[m]) for name, m, low, high in plan]


def _apply(model: nn.Module, name: str, m: nn.Module, low: Optional[float], high: Optional[float],
           calls: list[Call]) -> Change:
    """Guard ``m`` with ``[low, high]``: a new :class:`DomainGuard`, or the one already around it."""
    old = f"{m!r}: {sum(c[2] for c in calls)} of {sum(c[3] for c in calls)} outputs non-finite on the batch"
    guard = _guard_of(model, m)
    if guard is not None:
        guard.low, guard.high = low, high
        name = next(n for n, g in model.named_modules() if g is guard)
    else:
        guard = DomainGuard(m, low, high).train(m.training)
        _wrap(model, m, guard)
    return Change(name, "wrap", old, f"DomainGuard(low={_fmt(guard.low)}, high={_fmt(guard.high)}) (outputs finite)")
