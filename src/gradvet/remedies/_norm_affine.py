"""Reset the affine parameters of normalisation layers to the identity (gain 1, shift 0).

A normalisation layer computes ``y = gamma * (x - mean) / sqrt(var + eps) + beta``; its
affine parameters start at ``gamma = 1, beta = 0`` so that it passes on the normalised
signal at unit scale (Ioffe & Szegedy, 2015, sec. 3; Ba et al., 2016; Wu & He, 2018;
Zhang & Sennrich, 2019, for BatchNorm, LayerNorm, GroupNorm and RMSNorm). An init that
draws the gains small instead (transformers' EfficientNet draws every BatchNorm gain from
N(0, 0.02)) scales the signal down at every norm, forward and backward; once a norm's
input variance falls below its ``eps`` the norm no longer restores the scale, and the
signal and the gradient vanish with depth.

Which modules count as norms, dispatched by type (one registration per new class):
torch's own ``_BatchNorm`` (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, lazy ones),
``_InstanceNorm`` with ``affine=True``, ``LayerNorm``, ``GroupNorm`` and ``RMSNorm``, and
their subclasses; then any other module whose class name says it is a norm
(``...Norm...``, not ``...Normal...``) and that owns a 1-D ``weight`` parameter
(``LlamaRMSNorm``, ``T5LayerNorm``, ``ConvNextLayerNorm``, timm's ``RmsNorm``). Only
parameters are reset: running statistics (buffers) and frozen norms (``FrozenBatchNorm2d``,
whose affine is buffers) are left alone.

Gemma-style RMSNorms scale by ``(1 + weight)`` with ``weight`` starting at 0
(``GemmaRMSNorm``, ``Gemma2RMSNorm``, ``Qwen3NextRMSNorm``, ...): their identity is
``weight = 0``. They are recognised from their class's source, which computes
``1 + self.weight`` (or ``self.weight + 1``); a class whose source cannot be read is
taken to multiply by ``weight``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Optional

import torch
from torch import nn

from gradvet.errors import GradvetUsageError
from gradvet.remedies._result import Change, RemedyNotApplicable

#: torch's norm classes (and their subclasses) whose ``weight`` multiplies the normalised signal.
TORCH_NORMS: tuple[type[nn.Module], ...] = tuple(c for c in (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    getattr(nn, "RMSNorm", None),  # torch >= 2.4
) if c is not None)
_NORM_NAME = re.compile(r"norm(?!al)", re.IGNORECASE)
_OFFSET = re.compile(r"(?<![\w.])1(?:\.0*)?\s*\+\s*self\.weight\b|\bself\.weight(?:\.\w+\([^()]*\))*\s*\+\s*1(?:\.0*)?(?![\w.])")
_offset_cache: dict[type, bool] = {}


def _scales_by_one_plus_weight(cls: type) -> bool:
    """Whether the class's source computes ``1 + self.weight`` (a Gemma-style RMSNorm), cached per class."""
    if cls not in _offset_cache:
        try:
            src = inspect.getsource(cls)
        except (OSError, TypeError):  # defined where no source is kept (exec, a C extension)
            src = ""
        _offset_cache[cls] = bool(_OFFSET.search(src))
    return _offset_cache[cls]


def norm_identity(m: nn.Module) -> Optional[float]:
    """The ``weight`` value that makes ``m``'s affine the identity: 1.0 (``y = weight * x_hat + bias``), 0.0 for a
    norm that scales by ``1 + weight``, or None when ``m`` is not a norm with a learnable 1-D weight.

    Example:
        >>> norm_identity(nn.BatchNorm2d(4)), norm_identity(nn.LayerNorm(4, elementwise_affine=False))
        (1.0, None)
        >>> norm_identity(nn.Linear(4, 4)) is None
        True
    """
    w = m._parameters.get("weight")
    if not isinstance(w, torch.Tensor) or w.dim() != 1:
        return None
    if not isinstance(m, TORCH_NORMS) and not _NORM_NAME.search(type(m).__name__):
        return None
    return 0.0 if _scales_by_one_plus_weight(type(m)) else 1.0


def _describe(w: torch.Tensor, b: Optional[torch.Tensor]) -> str:
    x = w.detach().float()
    text = f"weight rms={float(x.pow(2).mean().sqrt()):.3g} mean={float(x.mean()):.3g}"
    if b is not None:
        text += f", bias max|.|={float(b.detach().float().abs().max()):.3g}"
    return text


def reset_norm_affine(model: nn.Module, layers: Optional[Iterable[str]] = None) -> list[Change]:
    """Set every normalisation layer's affine to the identity, in place: ``weight = 1``, ``bias = 0``.

    The defaults every norm layer starts from (Ioffe & Szegedy, 2015, "Batch
    normalization", sec. 3: the learned ``gamma, beta`` can recover the identity; torch
    and the papers of LayerNorm, Ba et al., 2016; GroupNorm, Wu & He, 2018; RMSNorm,
    Zhang & Sennrich, 2019, start them at 1 and 0). For a net whose norm gains were drawn
    small (EfficientNet in transformers draws them from N(0, 0.02)), this restores the
    unit scale each norm should hand on, so the signal and its gradient cross the depth.
    A Gemma-style RMSNorm, which scales by ``1 + weight``, gets ``weight = 0``.

    Every norm the model has is reset, zero-initialised gains included: the last BatchNorm
    of each residual branch that ``zero_init_residual`` (Goyal et al., 2017) set to 0 on
    purpose starts at 1 again. The diagnosis prescribes this remedy only when the gains are
    small across the board (the median over the norm layers below 0.1), not for such
    branch ends; pass ``layers=`` to reset only some. Layer-scale gammas, SkipInit/NFNet
    gains and ReZero gates are not norms and are left alone, as are running statistics.

    Args:
        model: edited in place.
        layers: qualified module names to reset; None means every norm layer of the model.

    Returns:
        One :class:`Change` per norm whose affine was not the identity already.

    Raises:
        GradvetUsageError: a name in ``layers`` is not a module of the model, or not a norm
            with a learnable weight.
        RemedyNotApplicable: the model has no norm layer with a learnable weight.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        >>> _ = nn.init.normal_(model[1].weight, 0.0, 0.02)
        >>> reset_norm_affine(model)[0].new
        'weight=1, bias=0'
        >>> bool((model[1].weight == 1).all()), reset_norm_affine(model)
        (True, [])
    """
    chosen: list[tuple[str, nn.Module, Optional[float]]]
    if layers is None:
        chosen = [(n, m, v) for n, m in model.named_modules() if (v := norm_identity(m)) is not None]
        if not chosen:
            raise RemedyNotApplicable(
                f"{type(model).__name__} has no normalisation layer with a learnable weight (BatchNorm, LayerNorm, "
                "GroupNorm, InstanceNorm(affine=True), RMSNorm, or a module whose class name says Norm); nothing to "
                "reset")
    else:
        modules = dict(model.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            raise GradvetUsageError(f"no module named {missing} in the model; names look like {list(modules)[1:6]}")
        chosen = [(n, modules[n], norm_identity(modules[n])) for n in layers]
        bad = [n for n, _, v in chosen if v is None]
        if bad:
            raise GradvetUsageError(f"{bad} are not normalisation layers with a learnable 1-D weight; pick norm "
                                    "layers, or layers=None for all of them")
    changes = []
    with torch.no_grad():
        for name, m, one in chosen:
            w, b = m._parameters["weight"], m._parameters.get("bias")
            if w is None or one is None:  # norm_identity checked both; for the type checker
                continue
            if bool((w == one).all()) and (b is None or bool((b == 0).all())):
                continue
            old = _describe(w, b)
            w.fill_(one)
            if b is not None:
                b.zero_()
            new = f"weight={one:g}" + (" (scale 1 + weight = 1)" if one == 0 else "")
            changes.append(Change(name, "init", old, new + (", bias=0" if b is not None else "")))
    return changes
