"""Variance-preserving re-initialisation of Linear/Conv layers (and RNN recurrent weights).

Idempotence rule: every module an init remedy sets carries ``_gradvet_init``, a string
naming the scheme and its settings (``'kaiming:fan_in:relu'``). A module whose marker
equals the one the call would write is skipped, so a second identical call changes
nothing; a different scheme or setting re-initialises, and ``force=True`` always does.
The marker travels with ``copy.deepcopy`` and ``torch.save(model)`` but not with a
``state_dict``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Callable, Optional

import torch
from torch import nn

from gradvet.errors import GradvetUsageError
from gradvet.remedies._layout import RECURRENT, describe_std, following_activation, weighted_layers
from gradvet.remedies._result import Change, RemedyNotApplicable

INIT_MARK = "_gradvet_init"
_NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu")

Nonlinearity = tuple[str, Optional[float]]


def _slope(m: nn.Module) -> Nonlinearity:
    return ("leaky_relu", float(m.negative_slope))  # type: ignore[arg-type]


def _prelu(m: nn.Module) -> Nonlinearity:
    return ("leaky_relu", float(m.weight.detach().float().mean()))  # type: ignore[operator]


def _rrelu(m: nn.Module) -> Nonlinearity:
    return ("leaky_relu", (float(m.lower) + float(m.upper)) / 2)  # type: ignore[arg-type]


def _fixed(name: str) -> Callable[[nn.Module], Nonlinearity]:
    return lambda _m: (name, None)


#: Activation class -> the ``nn.init.calculate_gain`` nonlinearity it calls for. Smooth rectifiers
#: (GELU, SiLU, Mish, ELU, ...) take the ReLU gain; SELU takes 'linear' (variance 1/fan_in, as
#: self-normalising networks need; Klambauer et al., 2017). One registration per new activation.
GAINS: dict[type[nn.Module], Callable[[nn.Module], Nonlinearity]] = {
    nn.LeakyReLU: _slope, nn.PReLU: _prelu, nn.RReLU: _rrelu, nn.SELU: _fixed("linear"),
    nn.Tanh: _fixed("tanh"), nn.Hardtanh: _fixed("tanh"), nn.Softsign: _fixed("tanh"), nn.Tanhshrink: _fixed("tanh"),
    nn.Sigmoid: _fixed("sigmoid"), nn.Hardsigmoid: _fixed("sigmoid"), nn.LogSigmoid: _fixed("sigmoid"),
    **{c: _fixed("relu") for c in (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.CELU,
                                    nn.Hardswish, nn.Softplus)},
}


def nonlinearity_of(act: Optional[nn.Module]) -> Nonlinearity:
    """``(name, param)`` for ``nn.init.calculate_gain`` from the activation module that follows a layer."""
    if act is None:
        return ("linear", None)
    for cls in type(act).__mro__:  # subclasses dispatch to their nearest registered base
        if cls in GAINS:
            return GAINS[cls](act)
    return ("linear", None)


def _explicit(nonlinearity: str) -> Nonlinearity:
    if nonlinearity not in _NONLINEARITIES:
        raise GradvetUsageError(f"nonlinearity must be None or one of {_NONLINEARITIES}, got {nonlinearity!r}")
    return (nonlinearity, 0.01 if nonlinearity == "leaky_relu" else None)


def _label(nl: Nonlinearity) -> str:
    return nl[0] if nl[1] is None else f"{nl[0]}({nl[1]:g})"


def _plan(model: nn.Module, nonlinearity: Optional[str]) -> list[tuple[str, nn.Module, Nonlinearity]]:
    acts = following_activation(model)
    layers = [(n, m, _explicit(nonlinearity) if nonlinearity else nonlinearity_of(acts.get(n)))
              for n, m in weighted_layers(model)]
    if not layers:
        raise RemedyNotApplicable(
            f"{type(model).__name__} has no Linear/Conv1d/2d/3d layers to initialise; initialise custom "
            "parameters in the module's __init__ or reset_parameters()"
        )
    return layers


def _reinit(name: str, m: nn.Module, marker: str, force: bool, fill: Callable[[torch.Tensor], str]) -> list[Change]:
    """Shared bookkeeping: skip if marked, record the std before/after, zero the bias, mark."""
    if not force and getattr(m, INIT_MARK, None) == marker:
        return []
    w: torch.Tensor = m.weight  # type: ignore[assignment]
    old = describe_std(w)
    with torch.no_grad():
        how = fill(w)
        if getattr(m, "bias", None) is not None:
            m.bias.zero_()  # type: ignore[operator, union-attr]
    setattr(m, INIT_MARK, marker)
    return [Change(name, "init", old, f"{describe_std(w)} ({how})")]


def init_kaiming(model: nn.Module, mode: str = "fan_in", nonlinearity: Optional[str] = None, *,
                 force: bool = False) -> list[Change]:
    """He/Kaiming normal init of every Linear/Conv, biases zeroed, in place.

    ``W ~ N(0, std^2)`` with ``std = gain / sqrt(fan)``, ``gain = calculate_gain(nonlinearity)``
    (``sqrt(2)`` for ReLU, ``sqrt(2 / (1 + a^2))`` for a leaky slope ``a``), which keeps the
    variance of the signal (``fan_in``) or of the gradient (``fan_out``) constant through
    rectifier layers. He, Zhang, Ren & Sun (2015), "Delving deep into rectifiers".

    Args:
        model: edited in place.
        mode: ``'fan_in'`` or ``'fan_out'``.
        nonlinearity: a ``calculate_gain`` name for every layer; None infers it per layer
            from the activation module that follows it (see ``following_activation``).
        force: re-initialise layers already marked with the same scheme.

    Returns:
        One :class:`Change` per re-initialised layer.

    Raises:
        RemedyNotApplicable: no Linear/Conv layer.

    Example:
        >>> model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        >>> init_kaiming(model)[0].new.endswith("(kaiming fan_in, relu)")
        True
    """
    if mode not in ("fan_in", "fan_out"):
        raise GradvetUsageError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    changes: list[Change] = []
    for name, m, nl in _plan(model, nonlinearity):
        def fill(w: torch.Tensor, nl: Nonlinearity = nl) -> str:
            nn.init.kaiming_normal_(w, a=nl[1] or 0.0, mode=mode, nonlinearity=nl[0])  # type: ignore[arg-type]
            return f"kaiming {mode}, {_label(nl)}"
        changes += _reinit(name, m, f"kaiming:{mode}:{_label(nl)}", force, fill)
    return changes


def init_xavier(model: nn.Module, distribution: str = "uniform", gain: Optional[float] = None, *,
                force: bool = False) -> list[Change]:
    """Xavier/Glorot init of every Linear/Conv, biases zeroed, in place.

    ``Var(W) = gain^2 * 2 / (fan_in + fan_out)``: uniform on ``[-b, b]`` with
    ``b = gain * sqrt(6 / (fan_in + fan_out))``, or normal with that variance; a compromise
    that keeps both the forward signal and the backward gradient near constant variance.
    Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward networks".

    Args:
        model: edited in place.
        distribution: ``'uniform'`` or ``'normal'``.
        gain: one gain for all layers; None takes ``calculate_gain`` of the activation that
            follows each layer (5/3 for tanh, 1 for sigmoid or none).
        force: re-initialise layers already marked with the same scheme.

    Returns:
        One :class:`Change` per re-initialised layer.

    Raises:
        RemedyNotApplicable: no Linear/Conv layer.

    Example:
        >>> model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
        >>> [c.module for c in init_xavier(model)]
        ['0', '2']
    """
    if distribution not in ("uniform", "normal"):
        raise GradvetUsageError(f"distribution must be 'uniform' or 'normal', got {distribution!r}")
    fn = nn.init.xavier_uniform_ if distribution == "uniform" else nn.init.xavier_normal_
    changes: list[Change] = []
    for name, m, nl in _plan(model, None):
        g = float(gain) if gain is not None else nn.init.calculate_gain(nl[0], nl[1])  # type: ignore[arg-type]

        def fill(w: torch.Tensor, g: float = g) -> str:
            fn(w, gain=g)
            return f"xavier {distribution}, gain {g:.3g}"
        changes += _reinit(name, m, f"xavier:{distribution}:{g:.6g}", force, fill)
    return changes


def _orthogonal_(w: torch.Tensor, gain: float) -> None:
    """Orthogonal fill via a float32 scratch tensor (QR is not implemented for half precision)."""
    q = torch.empty(w.shape, dtype=torch.float32, device=w.device)
    nn.init.orthogonal_(q, gain=gain)
    w.copy_(q)


def init_orthogonal(model: nn.Module, gain: Optional[float] = None, *, force: bool = False) -> list[Change]:
    """Orthogonal init of Linear/Conv weights (flattened to 2-D) and of RNN recurrent weights, in place.

    ``W = gain * Q`` with ``Q`` (semi-)orthogonal, ``Q Q^T = I``: all singular values equal,
    so the layer neither shrinks nor amplifies any direction of the signal (dynamical
    isometry). For ``nn.RNN/LSTM/GRU`` each gate's block of ``weight_hh`` is made orthogonal
    separately with gain 1 (a recurrent gain above 1 explodes over time); ``weight_ih`` and
    the RNN biases are left alone. Linear/Conv biases are zeroed.
    Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of learning
    in deep linear neural networks".

    Args:
        model: edited in place.
        gain: one gain for all Linear/Conv layers; None takes ``calculate_gain`` of the
            activation that follows each layer.
        force: re-initialise layers already marked with the same scheme.

    Returns:
        One :class:`Change` per re-initialised layer or recurrent module.

    Raises:
        RemedyNotApplicable: no Linear/Conv layer and no recurrent module.

    Example:
        >>> model = nn.Sequential(nn.Linear(32, 32))
        >>> w = (init_orthogonal(model, gain=1.0), model[0].weight)[1]
        >>> bool(torch.allclose(w @ w.T, torch.eye(32), atol=1e-5))
        True
    """
    rnns = [(n, m) for n, m in model.named_modules() if isinstance(m, RECURRENT)]
    try:
        plan = _plan(model, None)
    except RemedyNotApplicable:
        if not rnns:
            raise
        plan = []
    changes: list[Change] = []
    for name, m, nl in plan:
        g = float(gain) if gain is not None else nn.init.calculate_gain(nl[0], nl[1])  # type: ignore[arg-type]

        def fill(w: torch.Tensor, g: float = g) -> str:
            _orthogonal_(w, g)
            return f"orthogonal, gain {g:.3g}"
        changes += _reinit(name, m, f"orthogonal:{g:.6g}", force, fill)
    for name, rnn in rnns:
        changes += _orthogonal_recurrent(name, rnn, force)
    return changes


def _orthogonal_recurrent(name: str, rnn: nn.Module, force: bool) -> list[Change]:
    if not force and getattr(rnn, INIT_MARK, None) == "orthogonal_hh":
        return []
    hh = [p for n, p in rnn.named_parameters(recurse=False) if n.startswith("weight_hh")]
    gates = hh[0].shape[0] // int(getattr(rnn, "hidden_size"))  # noqa: B009 - typed as Tensor | Module
    old = describe_std(hh[0])
    with torch.no_grad():
        for w in hh:
            for block in w.chunk(gates, dim=0):
                _orthogonal_(block, 1.0)
    setattr(rnn, INIT_MARK, "orthogonal_hh")
    return [Change(name, "init", f"weight_hh {old}",
                   f"weight_hh orthogonal per gate ({gates} gate block(s) in each of {len(hh)} layer/direction(s))")]


def reset_biases(model: nn.Module, layers: Optional[Iterable[str]] = None, value: float = 0.0) -> list[Change]:
    """Set biases to ``value`` (default 0), in place.

    A ReLU unit whose bias is strongly negative is off for every input ("dead") and gets no
    gradient to recover; resetting the bias to 0 puts its boundary back through the data,
    so it is on for about half the inputs. Lu, Shin, Su & Karniadakis (2019), "Dying ReLU
    and initialization: theory and numerical examples".

    Args:
        model: edited in place.
        layers: qualified module names whose ``bias`` to reset; None means every Linear/Conv.
        value: the new bias value.

    Returns:
        One :class:`Change` per bias that was not already ``value`` everywhere.

    Raises:
        GradvetUsageError: a name in ``layers`` is not a module of the model.
        RemedyNotApplicable: none of the selected modules has a bias.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        >>> _ = nn.init.constant_(model[0].bias, -5.0)
        >>> reset_biases(model)[0].new
        'bias=0'
    """
    modules = dict(model.named_modules())
    if layers is None:
        chosen = list(weighted_layers(model))
    else:
        missing = [n for n in layers if n not in modules]
        if missing:
            raise GradvetUsageError(f"no module named {missing} in the model; names look like {list(modules)[1:6]}")
        chosen = [(n, modules[n]) for n in layers]
    with_bias: list[tuple[str, torch.Tensor]] = [
        (n, b) for n, m in chosen if isinstance(b := getattr(m, "bias", None), torch.Tensor)]
    if not with_bias:
        raise RemedyNotApplicable("none of the selected layers has a bias; nothing to reset "
                                  "(layers created with bias=False stay without one)")
    changes = []
    with torch.no_grad():
        for n, b in with_bias:
            if bool((b == value).all()):
                continue
            old = f"mean={float(b.float().mean()):.3f} min={float(b.min()):.3f} max={float(b.max()):.3f}"
            b.fill_(value)
            changes.append(Change(n, "bias", old, f"bias={value:g}"))
    return changes
