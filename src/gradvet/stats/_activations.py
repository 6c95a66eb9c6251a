"""Activation kinds: which units are *saturated* and which can *die*.

A unit is **saturated** where its activation's derivative is below a fraction
``threshold`` of that derivative's maximum (Glorot & Bengio, 2010, saw sigmoid
top layers saturate at 1 with the gradient gone). Each kind states its predicate
on the activation's *output*, so that in-place activations (whose input is
overwritten) are measured correctly:

- sigmoid ``y``: ``y(1-y) < threshold * 1/4``
- tanh ``y``: ``1 - y^2 < threshold``
- softsign ``y``: derivative ``(1-|y|)^2 < threshold``
- hardtanh / relu6 / hardsigmoid: the derivative is exactly 0 at the clamps.

A unit is **dead** (ReLU family, Lu et al. 2019, "Dying ReLU and initialization")
when its output is zero for every sample of the batch: no gradient reaches its
weights. Leaky/parametric/smooth variants (LeakyReLU, PReLU, ELU, GELU, SiLU,
Mish, Softplus) cannot die and do not saturate on both sides, so they report
neither.

New kinds are one call to :func:`register_activation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

SatFn = Callable[[Tensor, float], Tensor]


@dataclass(frozen=True)
class ActivationKind:
    """How to read saturation and death off an activation's output.

    Attributes:
        name: short name, e.g. ``"sigmoid"``.
        fn: the activation itself (applied to a pre-activation when the
            activation is functional and follows a Linear/Conv).
        saturated: ``(y, threshold) -> bool mask`` of saturated entries, or None.
        can_die: whether a unit whose output is zero on the whole batch is dead.
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    saturated: Optional[SatFn] = None
    can_die: bool = False


def _sigmoid_sat(y: Tensor, t: float) -> Tensor:
    return y * (1 - y) < 0.25 * t


def _tanh_sat(y: Tensor, t: float) -> Tensor:
    return 1 - y * y < t


def _softsign_sat(y: Tensor, t: float) -> Tensor:
    return (1 - y.abs()).square() < t


def _clamp_sat(lo: float, hi: float) -> SatFn:
    return lambda y, t: (y <= lo) | (y >= hi)


def _relu6_sat(y: Tensor, t: float) -> Tensor:
    return y >= 6.0


IDENTITY = ActivationKind("identity", lambda x: x)

#: Registry: module class -> factory(module) -> ActivationKind.
ACTIVATIONS: dict[type, Callable[[nn.Module], ActivationKind]] = {}
#: Functional activations recognised after a Linear/Conv (torch function -> kind).
FUNCTIONAL: dict[Callable[..., Tensor], ActivationKind] = {}


def register_activation(
    cls: type, factory: Callable[[nn.Module], ActivationKind], *functions: Callable[..., Tensor]
) -> None:
    """Register an activation module class (and the functions that compute it).

    Args:
        cls: the ``nn.Module`` subclass.
        factory: builds the :class:`ActivationKind` from a module instance.
        functions: functional forms (``torch.sigmoid``, ``F.relu``...) that map to the
            same kind when applied to a Linear/Conv output inside a custom forward.
    """
    ACTIVATIONS[cls] = factory
    if functions:
        kind = factory(cls()) if _default_constructible(cls) else None
        for fn in functions:
            if kind is not None:
                FUNCTIONAL[fn] = kind


def _default_constructible(cls: type) -> bool:
    try:
        cls()
    except TypeError:
        return False
    return True


SIGMOID = ActivationKind("sigmoid", torch.sigmoid, _sigmoid_sat)
TANH = ActivationKind("tanh", torch.tanh, _tanh_sat)
RELU = ActivationKind("relu", torch.relu, None, can_die=True)

register_activation(nn.Sigmoid, lambda m: SIGMOID, torch.sigmoid, F.sigmoid, Tensor.sigmoid)
register_activation(nn.Tanh, lambda m: TANH, torch.tanh, F.tanh, Tensor.tanh)
register_activation(nn.ReLU, lambda m: RELU, torch.relu, F.relu, Tensor.relu, torch.relu_, F.relu_, Tensor.relu_)
register_activation(
    nn.ReLU6, lambda m: ActivationKind("relu6", F.relu6, _relu6_sat, can_die=True), F.relu6
)
register_activation(
    nn.Softsign, lambda m: ActivationKind("softsign", F.softsign, _softsign_sat), F.softsign
)
register_activation(
    nn.Hardtanh,
    lambda m: ActivationKind(
        "hardtanh",
        lambda x: F.hardtanh(x, m.min_val, m.max_val),  # type: ignore[arg-type]
        _clamp_sat(float(m.min_val), float(m.max_val)),  # type: ignore[arg-type]
    ),
    F.hardtanh,
)
register_activation(
    nn.Hardsigmoid, lambda m: ActivationKind("hardsigmoid", F.hardsigmoid, _clamp_sat(0.0, 1.0)), F.hardsigmoid
)
for _cls, _name, _fns in (
    (nn.LeakyReLU, "leaky_relu", (F.leaky_relu,)),
    (nn.PReLU, "prelu", ()),
    (nn.ELU, "elu", (F.elu,)),
    (nn.SELU, "selu", (F.selu, torch.selu)),
    (nn.CELU, "celu", (F.celu,)),
    (nn.GELU, "gelu", (F.gelu,)),
    (nn.SiLU, "silu", (F.silu,)),
    (nn.Mish, "mish", (F.mish,)),
    (nn.Softplus, "softplus", (F.softplus,)),
    (nn.Hardswish, "hardswish", (F.hardswish,)),
):
    register_activation(_cls, (lambda n: (lambda m: ActivationKind(n, lambda x: x)))(_name), *_fns)


#: Activation modules of other libraries, read as the torch kind they compute, by (package, class name):
#: gradvet does not import them. Hugging Face's GPT-2 MLP holds ``NewGELUActivation`` (a tanh formula,
#: not ``F.gelu``), timm's blocks ``timm.layers.GELU``; ``relu2`` (ReLU squared) is zero where ReLU is.
THIRD_PARTY: dict[tuple[str, str], type] = {
    **{("transformers", n): nn.GELU for n in (
        "GELUActivation", "NewGELUActivation", "FastGELUActivation", "QuickGELUActivation", "GELUTanh",
        "PytorchGELUTanh", "AccurateGELUActivation", "ClippedGELUActivation")},
    ("transformers", "SiLUActivation"): nn.SiLU,
    ("transformers", "MishActivation"): nn.Mish,
    ("transformers", "ReLUSquaredActivation"): nn.ReLU,
    **{("timm", n): nn.GELU for n in ("GELU", "GELUTanh", "QuickGELU")},
    ("timm", "Swish"): nn.SiLU,
    ("timm", "Mish"): nn.Mish,
    ("timm", "HardMish"): nn.Mish,
    ("timm", "Sigmoid"): nn.Sigmoid,
    ("timm", "Tanh"): nn.Tanh,
    ("timm", "HardSwish"): nn.Hardswish,
    ("timm", "HardSigmoid"): nn.Hardsigmoid,
}


def activation_kind(module: nn.Module) -> Optional[ActivationKind]:
    """Return the registered kind of an activation module, or None if it is not one.

    Example:
        >>> activation_kind(nn.ReLU()).name, activation_kind(nn.Linear(2, 2))
        ('relu', None)
    """
    for cls in type(module).__mro__:
        factory = ACTIVATIONS.get(cls)
        if factory is not None:
            return factory(module)
    cls = type(module)
    same = THIRD_PARTY.get((cls.__module__.split(".", 1)[0], cls.__name__))
    if same is not None and not any(True for _ in module.parameters()):
        return ACTIVATIONS[same](same())
    return None
