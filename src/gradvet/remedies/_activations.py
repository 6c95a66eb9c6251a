"""Activation factory and the activation-swap remedy.

Sigmoid and tanh have derivatives of at most 1/4 and 1, and both vanish once a unit
saturates, so a deep stack of them multiplies the gradient by a small factor per
layer. Rectifiers pass the gradient unchanged on their active side (Glorot, Bordes
& Bengio, 2011; Maas, Hannun & Ng, 2013; Hendrycks & Gimpel, 2016).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Union

from torch import nn

from gradvet.errors import GradvetUsageError
from gradvet.remedies._layout import RECURRENT, like, qualified
from gradvet.remedies._result import Change, RemedyNotApplicable

ActSpec = Union[str, type, Callable[[], nn.Module]]

#: Activation names accepted by :func:`create_act` (the ``activation:<name>`` ids use these).
ACT_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": partial(nn.LeakyReLU, 0.01),
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}

#: Marker left on a module that :func:`swap_activations` put in: the repr of what it replaced.
SWAP_MARK = "_gradvet_swapped_from"


def create_act(spec: ActSpec) -> nn.Module:
    """Build an activation module from a name, a module class or a zero-argument factory.

    In the style of timm's ``create_act_layer``, so that a CLI flag, a config value and
    Python code all name activations the same way.

    Args:
        spec: a name from :data:`ACT_FACTORIES` (``'relu'``, ``'leaky_relu'``, ``'prelu'``,
            ``'elu'``, ``'selu'``, ``'gelu'``, ``'silu'``/``'swish'``, ``'mish'``, ``'tanh'``,
            ``'sigmoid'``), an ``nn.Module`` subclass, or a callable taking no arguments that
            returns a module (e.g. ``functools.partial(nn.LeakyReLU, 0.1)``).

    Returns:
        A new module instance.

    Raises:
        GradvetUsageError: unknown name.
        TypeError: anything else (a module instance, a number, a callable that needs arguments
            or does not return a module).

    Example:
        >>> from functools import partial
        >>> create_act("gelu"), create_act(nn.ReLU), create_act(partial(nn.LeakyReLU, 0.2))
        (GELU(approximate='none'), ReLU(), LeakyReLU(negative_slope=0.2))
    """
    if isinstance(spec, str):
        key = spec.lower().replace("-", "_")
        if key not in ACT_FACTORIES:
            raise GradvetUsageError(f"unknown activation {spec!r}; choose one of {sorted(ACT_FACTORIES)}")
        return ACT_FACTORIES[key]()
    if isinstance(spec, nn.Module):
        raise TypeError(
            f"create_act received the module instance {spec!r}; pass its class (nn.{type(spec).__name__}) "
            "or a factory such as functools.partial(nn.LeakyReLU, 0.1), so that every position gets its own module"
        )
    if isinstance(spec, type) and not issubclass(spec, nn.Module):
        raise TypeError(f"create_act needs an nn.Module subclass, got the class {spec.__name__}")
    if not callable(spec):
        raise TypeError(
            f"create_act needs a name, an nn.Module class or a zero-argument factory, got {type(spec).__name__} "
            f"{spec!r}; e.g. create_act('relu')"
        )
    return _call_factory(spec)


def _call_factory(spec: Callable[[], Any]) -> nn.Module:
    try:
        m = spec()
    except TypeError as e:
        raise TypeError(
            f"create_act could not call {spec!r} without arguments ({e}); bind them first, e.g. "
            "functools.partial(nn.LeakyReLU, 0.1)"
        ) from e
    if not isinstance(m, nn.Module):
        raise TypeError(f"create_act: {spec!r}() returned {type(m).__name__}, not an nn.Module")
    return m


def _same(a: nn.Module, b: nn.Module) -> bool:
    return type(a) is type(b) and a.extra_repr() == b.extra_repr()


def swap_activations(
    model: nn.Module,
    to: ActSpec = "relu",
    replace: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Tanh),
) -> list[Change]:
    """Replace every activation module of the classes in ``replace`` by a new ``to`` activation, in place.

    Looks everywhere: nested modules, ``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``.
    Modules that an earlier swap put in (they carry ``_gradvet_swapped_from``) are swapped
    again when they differ from ``to``; so re-applying with the same target changes
    nothing, and applying another target replaces the earlier choice. Activations called
    as functions in ``forward`` (``torch.sigmoid``) and the tanh inside RNN cells are not
    modules and cannot be swapped. Glorot, Bordes & Bengio (2011).

    Args:
        model: edited in place.
        to: what to put in, anything :func:`create_act` takes.
        replace: activation classes to replace.

    Returns:
        One :class:`Change` per replaced module (empty if all were already swapped to ``to``).

    Raises:
        RemedyNotApplicable: no module of the ``replace`` classes exists.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2))
        >>> [str(c) for c in swap_activations(model, "relu")]
        ['1: activation Sigmoid() -> ReLU()']
    """
    target = create_act(to)
    changes: list[Change] = []
    found_swapped = False
    for prefix, parent in list(model.named_modules()):
        for cname, child in list(parent.named_children()):
            ours = hasattr(child, SWAP_MARK)
            if not (isinstance(child, replace) or ours):
                continue
            found_swapped |= ours
            if _same(child, target):
                continue
            new = create_act(to).to(**like(child, model))  # type: ignore[call-overload]
            new.train(child.training)
            setattr(new, SWAP_MARK, getattr(child, SWAP_MARK, repr(child)))
            setattr(parent, cname, new)
            changes.append(Change(qualified(prefix, cname), "activation", repr(child), repr(new)))
    if not changes and not found_swapped:
        raise RemedyNotApplicable(_nothing_to_swap(model, replace))
    return changes


def _nothing_to_swap(model: nn.Module, replace: tuple[type[nn.Module], ...]) -> str:
    names = "/".join(f"nn.{c.__name__}" for c in replace)
    msg = (
        f"no {names} modules found in {type(model).__name__}; if forward() calls torch.sigmoid/torch.tanh "
        "(or F.sigmoid/F.tanh) directly, edit it to use a module (self.act = nn.ReLU()) or call "
        "torch.relu there instead"
    )
    if any(isinstance(m, RECURRENT) for m in model.modules()):
        msg += (
            "; the tanh inside RNN/LSTM/GRU cells is not a module and cannot be swapped (for nn.RNN "
            "use nonlinearity='relu', or switch to an LSTM/GRU)"
        )
    return msg
