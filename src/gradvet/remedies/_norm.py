"""Insert normalisation layers between each Linear/Conv and its activation.

A norm layer re-centres and re-scales every layer's pre-activations, so their scale
no longer depends on the weights' scale or on the depth, and saturating activations
see inputs in their sensitive range. Ioffe & Szegedy (2015) (batch norm); Ba, Kiros &
Hinton (2016) (layer norm); Zhang & Sennrich (2019) (RMS norm).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

from torch import nn

from gradvet.errors import GradvetUsageError
from gradvet.remedies._layout import ACTIVATIONS, NORMS, like, qualified, rebuild, sequentials
from gradvet.remedies._result import Change, RemedyNotApplicable

NormFactory = Callable[[nn.Module], Optional[tuple[nn.Module, str]]]


def _width(layer: nn.Module) -> int:
    return int(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)  # type: ignore[arg-type]


def _batch(layer: nn.Module) -> Optional[tuple[nn.Module, str]]:
    cls = {nn.Linear: nn.BatchNorm1d, nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
    norm = next(c for t, c in cls.items() if isinstance(layer, t))
    return norm(_width(layer)), ""


def _layer(layer: nn.Module) -> Optional[tuple[nn.Module, str]]:
    if isinstance(layer, nn.Linear):
        return nn.LayerNorm(_width(layer)), ""
    return nn.GroupNorm(1, _width(layer)), " (GroupNorm with one group: layer norm over channels and positions)"


def _rms(layer: nn.Module) -> Optional[tuple[nn.Module, str]]:
    if not hasattr(nn, "RMSNorm"):
        raise GradvetUsageError("norm:rms needs torch.nn.RMSNorm (torch >= 2.4); upgrade torch or use norm:layer")
    if not isinstance(layer, nn.Linear):
        return None  # RMSNorm normalises the last dimension, which for a conv is a spatial one
    return nn.RMSNorm(_width(layer)), ""


#: kind -> factory ``layer -> (norm module, note)`` (None: this kind cannot follow that layer).
NORM_FACTORIES: dict[str, NormFactory] = {"batch": _batch, "layer": _layer, "rms": _rms}

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def insert_norm(model: nn.Module, kind: str = "batch") -> list[Change]:
    """Insert a norm after every Linear/Conv that an activation follows, in every ``nn.Sequential``, in place.

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` over the batch (``'batch'``:
    BatchNorm1d/2d/3d), over the features (``'layer'``: LayerNorm for Linear, GroupNorm(1, C)
    for Conv), or ``y = gamma * x / rms(x)`` (``'rms'``: RMSNorm, Linear only). Only a
    Linear/Conv directly followed by an activation module in the same Sequential gets one,
    so a model's output layer is never normalised; a pair with a norm already in between is
    skipped (so re-applying changes nothing). New modules take the layer's device and dtype.
    Inserting shifts the Sequential's numeric indices, and so the ``state_dict`` keys.
    BatchNorm1d after a Linear expects ``(batch, features)`` inputs; for sequence inputs
    ``(batch, time, features)`` use ``'layer'``.
    Ioffe & Szegedy (2015); Ba, Kiros & Hinton (2016); Zhang & Sennrich (2019).

    Args:
        model: edited in place.
        kind: ``'batch'``, ``'layer'`` or ``'rms'``.

    Returns:
        One :class:`Change` per inserted norm; ``module`` is the layer's name before the edit.

    Raises:
        RemedyNotApplicable: no Sequential holds a Linear/Conv followed by an activation.
        GradvetUsageError: unknown ``kind``, or ``'rms'`` without torch.nn.RMSNorm.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
        >>> insert_norm(model, "batch")[0].new
        "Linear -> BatchNorm1d(16) -> Tanh, the norm named '1'"
        >>> [type(m).__name__ for m in model]
        ['Linear', 'BatchNorm1d', 'Tanh', 'Linear']
    """
    if kind not in NORM_FACTORIES:
        raise GradvetUsageError(f"kind must be one of {sorted(NORM_FACTORIES)}, got {kind!r}")
    made: list[tuple[str, str, str, nn.Module]] = []
    counts = [0, 0, 0]  # pairs seen, pairs already normalised, pairs this kind cannot serve
    for prefix, seq in list(sequentials(model)):  # names as they were before any edit
        made += _insert_in(prefix, seq, NORM_FACTORIES[kind], model, counts)
    final = {id(m): n for n, m in model.named_modules()}  # names after every edit, nested ones included
    changes = [Change(name, "insert", old, f"{new}, the norm named {final[id(norm)]!r}")
               for name, old, new, norm in made]
    _report(kind, counts[0], counts[1], counts[2], changes, model)
    return changes


def _insert_in(prefix: str, seq: nn.Sequential, make: NormFactory, model: nn.Module,
               counts: list[int]) -> list[tuple[str, str, str, nn.Module]]:
    """Insert norms into one Sequential; ``(old layer name, old, new, norm)`` per insertion."""
    items: list[tuple[Optional[str], nn.Module]] = []
    made = []
    kids = list(seq.named_children())
    for i, (key, child) in enumerate(kids):
        items.append((key, child))
        nxt = kids[i + 1][1] if i + 1 < len(kids) else None
        if not isinstance(child, _LAYERS) or not isinstance(nxt, (*NORMS, *ACTIVATIONS)):
            continue
        counts[0] += 1
        if isinstance(nxt, NORMS):
            counts[1] += 1
            continue
        built = make(child)
        if built is None:
            counts[2] += 1
            continue
        norm = built[0].to(**like(child, model))  # type: ignore[call-overload]
        items.append((None, norm))
        a, b = type(child).__name__, type(nxt).__name__
        made.append((qualified(prefix, key), f"{a} -> {b}", f"{a} -> {type(norm).__name__}({_width(child)}) -> {b}"
                     + built[1], norm))
    if made:
        rebuild(seq, items)
    return made


def _report(kind: str, pairs: int, normed: int, skipped: int, changes: list[Change], model: nn.Module) -> None:
    if skipped:
        warnings.warn(f"norm:{kind}: {skipped} Conv layer(s) left without a norm: RMSNorm normalises the last "
                      "dimension, a spatial one for convolutions; use norm:layer or norm:batch there",
                      stacklevel=3)
    if pairs == 0:
        raise RemedyNotApplicable(
            f"{type(model).__name__} has no nn.Sequential in which a Linear/Conv is directly followed by an "
            "activation module, so gradvet cannot tell where a norm goes; add the norm yourself in __init__ and "
            f"call it in forward() between the layer and its activation (e.g. self.norm = nn.{'LayerNorm' if kind != 'batch' else 'BatchNorm1d'}(width))"
        )
    if not changes and normed == 0 and skipped:
        raise RemedyNotApplicable(f"norm:{kind} supports Linear layers only, and every Linear -> activation "
                                  "pair here is a Conv; use norm:layer or norm:batch")
