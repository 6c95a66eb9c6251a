"""Structural helpers shared by the remedies: which layers carry weights, what follows them.

PyTorch does not record the forward order of a model's modules, so the remedies
read the *registration* order inside each parent module: exact for
``nn.Sequential`` (its forward is its registration order), a best guess for
custom modules. Every helper here is read-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.instancenorm import _InstanceNorm

from gradvet.errors import GradvetUsageError

#: Layers whose weights the init remedies set and after which norms are inserted.
WEIGHTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

_RMS: tuple[type[nn.Module], ...] = (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()

#: Normalisation layers (a layer followed by one of these is "already normalised").
NORMS: tuple[type[nn.Module], ...] = (
    _BatchNorm, nn.LayerNorm, nn.GroupNorm, _InstanceNorm, nn.LocalResponseNorm, *_RMS,
)

#: Modules that sit between a layer and its activation without changing what the activation sees
#: in kind: norms, dropout, identity.
PASS_THROUGH: tuple[type[nn.Module], ...] = (*NORMS, _DropoutNd, nn.Identity)

#: Element-wise activation modules.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign,
    nn.LogSigmoid, nn.Tanhshrink,
)

RECURRENT: tuple[type[nn.Module], ...] = (nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell)


def qualified(prefix: str, name: str) -> str:
    """``'a.b' + 'c' -> 'a.b.c'``; the root's prefix is ``''``."""
    return f"{prefix}.{name}" if prefix else name


def weighted_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` for every Linear/Conv1d/2d/3d, in registration order."""
    for name, m in model.named_modules():
        if isinstance(m, WEIGHTED):
            if isinstance(m.weight, nn.parameter.UninitializedParameter):
                raise GradvetUsageError(
                    f"layer {name!r} is a lazy module whose shape is not known yet; run one forward "
                    "pass (model(x)) before applying a remedy"
                )
            yield name, m


def following_activation(model: nn.Module) -> dict[str, Optional[nn.Module]]:
    """For each Linear/Conv: the activation module that follows it, or None.

    In an ``nn.Sequential`` the next sibling decides, skipping norms, dropout and
    identities; any other module in between means "no activation" (a linear output).
    In a custom module the first activation registered after the layer is taken.
    """
    out: dict[str, Optional[nn.Module]] = {}
    for prefix, parent in model.named_modules():
        kids = list(parent.named_children())
        for i, (cname, child) in enumerate(kids):
            if isinstance(child, WEIGHTED):
                later = [k for _, k in kids[i + 1:]]
                out[qualified(prefix, cname)] = _next_activation(later, isinstance(parent, nn.Sequential))
    return out


def _next_activation(later: list[nn.Module], sequential: bool) -> Optional[nn.Module]:
    for m in later:
        if isinstance(m, ACTIVATIONS):
            return m
        if sequential and not isinstance(m, PASS_THROUGH):
            return None
    return None


def sequentials(model: nn.Module) -> Iterator[tuple[str, nn.Sequential]]:
    """Every ``nn.Sequential`` in the model (the root included), outermost first."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Sequential):
            yield name, m


def rebuild(seq: nn.Sequential, items: list[tuple[Optional[str], nn.Module]]) -> None:
    """Replace ``seq``'s children by ``items`` in order, keeping the object (parents keep pointing at it).

    ``items`` are ``(old key or None for a new module, module)``. Numeric keys are renumbered
    ``0..n-1`` as ``nn.Sequential`` numbers them; named keys are kept and a new module is
    called ``<previous key>_<n>``.
    """
    taken = {k for k, _ in items if k is not None}
    numeric = all(k.isdigit() for k in taken)
    keys: list[str] = []
    for i, (k, _) in enumerate(items):
        if numeric:
            keys.append(str(i))
        elif k is not None:
            keys.append(k)
        else:
            base, n = (keys[-1] if keys else "m"), 1
            while f"{base}_{n}" in taken:
                n += 1
            taken.add(f"{base}_{n}")
            keys.append(f"{base}_{n}")
    seq._modules.clear()
    for key, (_, m) in zip(keys, items):
        seq._modules[key] = m


def like(module: nn.Module, fallback: nn.Module) -> dict[str, object]:
    """``device``/``dtype`` keyword arguments matching ``module``'s first floating tensor (else ``fallback``'s)."""
    for src in (module, fallback):
        for t in (*src.parameters(), *src.buffers()):
            if t.is_floating_point():
                return {"device": t.device, "dtype": t.dtype}
    return {}


def describe_std(t: torch.Tensor) -> str:
    """``'std=0.010'``: the standard deviation of a tensor, for a :class:`Change` (one host sync)."""
    x = t.detach().float()
    if x.numel() < 2:
        return f"value={float(x.sum()):.3g}"
    s = float(x.std())
    return f"std={s:.3f}" if s == 0 or s >= 1e-3 else f"std={s:.2e}"
