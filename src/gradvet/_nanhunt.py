"""Where a NaN/Inf is born, op by op: the first operation of a forward pass whose inputs are
finite and whose output is not.

The per-layer taps see module outputs only, so a NaN made by a functional op written in
``forward()`` (``torch.sqrt(self.l3(h))``) is first seen at the *next* module's output and
blamed on it. :func:`find_origin` re-runs the forward pass under a
:class:`~torch.overrides.TorchFunctionMode` that tests every top-level op's output (a host
sync per op: this is a one-off hunt, run by ``gradvet.check`` only when its pass was
non-finite, never in the per-step path), and names the op, the module running it, the module
whose output fed it, the next module, the source line, and why the op's input left its domain
(Goodfellow, Bengio & Courville, 2016, *Deep Learning*, sec. 4.1, "Overflow and underflow").
"""

from __future__ import annotations

import math
import os
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

_HERE = os.path.dirname(os.path.abspath(__file__))
#: frames that are not "where" an op was called: torch's, and gradvet's own that run the model
_SKIP = (os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,
         *(os.path.join(_HERE, f) for f in ("_nanhunt.py", "check.py", "monitor.py", "_taps.py", "_hooks.py")),
         os.path.join(_HERE, "remedies") + os.sep)

#: the snippet that keeps each op in its domain (the real fix is in the user's code)
GUARDS = {
    "sqrt": "torch.sqrt(x.clamp_min(1e-12))",
    "rsqrt": "torch.rsqrt(x.clamp_min(1e-12))",
    "log": "torch.log(x.clamp_min(1e-12))",
    "log2": "torch.log2(x.clamp_min(1e-12))",
    "log10": "torch.log10(x.clamp_min(1e-12))",
    "log1p": "torch.log1p(x.clamp_min(-1 + 1e-6))",
    "div": "x / y.clamp_min(1e-12)  (or y + eps for a signed divisor)",
    "reciprocal": "1 / x.clamp_min(1e-12)",
    "pow": "x.clamp_min(1e-12) ** p  (a fractional power of a negative base is NaN)",
    "exp": "torch.exp(x.clamp_max(80.0)), or a log-sum-exp form (torch.logsumexp, F.log_softmax)",
    "acos": "torch.acos(x.clamp(-1 + 1e-6, 1 - 1e-6))",
    "asin": "torch.asin(x.clamp(-1 + 1e-6, 1 - 1e-6))",
}


#: ops that select or reshape a module's output without computing on it: their result still "is" that output
_VIEWS = frozenset({
    "__getitem__", "view", "reshape", "transpose", "permute", "contiguous", "squeeze", "unsqueeze", "flatten",
    "select", "narrow", "split", "chunk", "unbind", "float", "to", "type", "half", "bfloat16", "double", "t",
    "view_as", "reshape_as", "expand", "expand_as", "movedim", "unflatten", "clone", "detach",
})


@dataclass(frozen=True)
class Origin:
    """The first op of a forward pass with finite inputs and a non-finite output."""

    op: str  #: ``torch.sqrt``, ``Tensor.__truediv__``, ``torch._C._nn.linear``
    kind: str  #: the op's family in :data:`GUARDS` (``sqrt``, ``div``, ...), or ``""``
    module: str  #: the innermost module whose forward ran the op (``""``: the root model)
    leaf: bool  #: ``module`` has no child modules (the op is the layer's own, e.g. a Linear overflowing)
    fed_by: Optional[str]  #: the module whose output is among the op's inputs
    after: Optional[str]  #: the last leaf module to finish before the op
    next: Optional[str]  #: the next leaf module to run after the op
    where: str  #: ``model.py:12 in forward``: the user's line that called the op
    detail: str  #: why the input left the op's domain (``37 of 512 values are negative``)

    def describe(self) -> str:
        """One sentence for a finding's evidence."""
        op = f"`{self.op}`"
        if self.leaf:
            place = f"inside {self.module!r}: {op}"
        elif self.after and self.next:
            of = f" of {self.fed_by}'s output" if self.fed_by else ""
            place = f"between {self.after!r} and {self.next!r}: {op}{of}"
        elif self.after:
            place = f"after {self.after!r}: {op}" + (f" of {self.fed_by}'s output" if self.fed_by else "")
        elif self.next:
            place = f"before {self.next!r}: {op}"
        else:
            place = f"in {self.module or 'the model'}'s forward: {op}"
        why = f", where {self.detail}" if self.detail else ""
        at = f" (at {self.where})" if self.where else ""
        return f"{place}{why}{at}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Origin:
        """The inverse of :meth:`to_dict` (a record's metadata); missing fields are empty."""
        return cls(op=str(d.get("op", "")), kind=str(d.get("kind") or ""), module=str(d.get("module") or ""),
                   leaf=bool(d.get("leaf")), fed_by=d.get("fed_by"), after=d.get("after"), next=d.get("next"),
                   where=str(d.get("where") or ""), detail=str(d.get("detail") or ""))


#: op names (``__name__`` without underscores, in-place ``_`` dropped) -> their family in :data:`GUARDS`
_FAMILY = {
    **{n: "div" for n in ("div", "divide", "true_divide", "floor_divide", "truediv", "rtruediv", "rdiv",
                          "floordiv", "rfloordiv")},
    **{n: "pow" for n in ("pow", "rpow", "float_power")},
    "arccos": "acos", "arcsin": "asin",
}


def _kind(func: Any) -> str:
    """The op's family in :data:`GUARDS` (``torch.sqrt``, ``Tensor.sqrt_`` -> ``sqrt``; ``x / y``,
    ``torch.div`` -> ``div``), or ``""``.

    Example:
        >>> _kind(torch.Tensor.__rtruediv__), _kind(torch.rsqrt), _kind(torch.Tensor.log_), _kind(torch.relu)
        ('div', 'rsqrt', 'log', '')
    """
    name = str(getattr(func, "__name__", "")).strip("_").removesuffix("_")
    name = _FAMILY.get(name, name)
    return name if name in GUARDS else ""


def _op_name(func: Any) -> str:
    mod = getattr(func, "__module__", None) or ""
    qual = str(getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or func)
    head, _, tail = qual.rpartition(".")
    if head in ("TensorBase", "Tensor"):
        return f"Tensor.{tail}"
    if head == "_VariableFunctionsClass" or mod in ("torch", "torch._C._VariableFunctions") or not mod:
        return f"torch.{tail or qual}"
    if mod in ("torch._C._nn", "torch.nn.functional"):
        return f"torch.nn.functional.{tail or qual}"
    return f"{mod}.{qual}"


def _tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _finite(ts: list[Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ts if t.is_floating_point() or t.is_complex())


def _user_frame() -> str:
    for f in reversed(traceback.extract_stack()[:-1]):
        if not os.path.abspath(f.filename).startswith(_SKIP):
            return f"{Path(f.filename).name}:{f.lineno} in {f.name}"
    return ""


def _count(mask: Tensor) -> int:
    return int(mask.sum())


def _detail(kind: str, args: tuple, kwargs: dict) -> str:
    """Why the op's input left its domain, in numbers."""
    ts = [t for t in _tensors((args, kwargs)) if t.is_floating_point()]
    scalars = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if not ts:
        return ""
    x = ts[0].detach()
    n = x.numel()
    if kind in ("sqrt", "rsqrt", "log", "log2", "log10"):
        neg, zero = _count(x < 0), _count(x == 0)
        parts = ([f"{neg} of {n} values are negative"] if neg else []) + ([f"{zero} are 0"] if zero else [])
        return " and ".join(parts) + (f" (min {float(x.min()):.3g})" if neg else "")
    if kind == "log1p":
        return f"{_count(x <= -1)} of {n} values are <= -1 (min {float(x.min()):.3g})"
    if kind in ("div", "reciprocal"):
        y = ts[1].detach() if kind == "div" and len(ts) > 1 else x if kind == "reciprocal" else None
        if y is None:
            zero_scalar = any(s == 0 for s in scalars)
            return "the divisor is 0" if zero_scalar else ""
        return f"{_count(y == 0)} of {y.numel()} divisor values are 0" + (
            f" (min |divisor| {float(y.abs().min()):.3g})" if _count(y == 0) == 0 else "")
    if kind == "pow":
        neg = _count(x < 0)
        return f"{neg} of {n} base values are negative" if neg else f"max |base| {float(x.abs().max()):.3g} overflows"
    if kind == "exp":
        limit = math.log(torch.finfo(x.dtype).max)
        return (f"{_count(x > limit)} of {n} values exceed {limit:.1f} (max {float(x.max()):.3g}), past which exp "
                f"overflows {str(x.dtype).removeprefix('torch.')}")
    if kind in ("acos", "asin"):
        return f"{_count(x.abs() > 1)} of {n} values are outside [-1, 1]"
    big = float(x.abs().max()) if n else 0.0
    dtype = str(x.dtype).removeprefix("torch.")
    return (f"its inputs are finite (max |x| {big:.3g}) and its output overflows {dtype} "
            f"(largest finite value {torch.finfo(x.dtype).max:.5g})")


class _Hunt(TorchFunctionMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.names = {m: n for n, m in model.named_modules()}
        self.stack: list[nn.Module] = []
        self.outputs: dict[int, tuple[str, Tensor]] = {}  # id(output) -> (module, output): kept alive
        self.found: Optional[dict[str, Any]] = None
        self.next: Optional[str] = None
        self.last_leaf: Optional[str] = None

    def pre(self, module: nn.Module, args: Any) -> None:
        if self.found is not None and self.next is None and not any(True for _ in module.children()):
            self.next = self.names.get(module, "")
        self.stack.append(module)

    def post(self, module: nn.Module, args: Any, out: Any) -> None:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        name = self.names.get(module, "")
        if self.found is None and not any(True for _ in module.children()):
            self.last_leaf = name
        for t in _tensors(out):
            self.outputs[id(t)] = (name, t)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.found is None and getattr(func, "__name__", "") in _VIEWS:  # out[:, -1] is still lstm's output
            src = next((self.outputs[id(t)][0] for t in _tensors(args[:1]) if id(t) in self.outputs), None)
            if src is not None:
                for t in _tensors(out):
                    self.outputs[id(t)] = (src, t)
        if self.found is None:
            outs = [t for t in _tensors(out) if t.is_floating_point() or t.is_complex()]
            if outs and not _finite(outs):
                ins = _tensors((args, kwargs))
                if _finite(ins):
                    mod = self.stack[-1] if self.stack else None
                    fed = next((self.outputs[id(t)][0] for t in ins if id(t) in self.outputs), None)
                    kind = _kind(func)
                    self.found = {
                        "op": _op_name(func),
                        "kind": kind,
                        "module": self.names.get(mod, "") if mod is not None else "",
                        "leaf": mod is not None and not any(True for _ in mod.children()),
                        "fed_by": fed,
                        "after": self.last_leaf,
                        "where": _user_frame(),
                        "detail": _detail(kind, args, kwargs),
                    }
        return out


def find_origin(model: nn.Module, forward: Callable[[], Any]) -> Optional[Origin]:
    """Run ``forward()`` (a call of ``model``) op by op and return where its first non-finite value
    is born, or None when every op's output is finite or the first non-finite value comes from
    non-finite inputs (the data, or weights already NaN).

    Runs under ``torch.no_grad()`` (the values are those of a training forward pass; only the graph
    is not kept); hooks are removed afterwards, even if ``forward`` raises.

    Example:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.a, self.b = nn.Identity(), nn.Identity()
        ...     def forward(self, x):
        ...         return self.b(torch.sqrt(self.a(x)))
        >>> net = Net()
        >>> origin = find_origin(net, lambda: net(torch.tensor([1.0, -4.0])))
        >>> origin.op, origin.fed_by, origin.next, origin.detail
        ('torch.sqrt', 'a', 'b', '1 of 2 values are negative (min -4)')
    """
    hunt = _Hunt(model)
    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(hunt.pre))
            handles.append(m.register_forward_hook(hunt.post))
        with torch.no_grad(), hunt:
            forward()
    finally:
        for h in handles:
            h.remove()
    if hunt.found is None:
        return None
    return Origin(next=hunt.next, **hunt.found)
