"""Gate-bias initialisation of LSTM/GRU layers: make the cell remember from the first step.

PyTorch packs the gates along the first dimension of ``bias_ih``/``bias_hh``: LSTM
``(i, f, g, o)``, GRU ``(r, z, n)``; the gate's pre-activation gets the *sum* of both
biases. In PyTorch's GRU ``h' = (1 - z) * n + z * h``, so keeping the state means
``z -> 1``, a *positive* update-gate bias. Both the LSTM forget gate and the GRU
update gate are the second block, ``[H:2H]``.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from gradvet.errors import GradvetUsageError
from gradvet.remedies._init import INIT_MARK
from gradvet.remedies._result import Change, RemedyNotApplicable

_GATED: tuple[type[nn.Module], ...] = (nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell)


def _gated(model: nn.Module, what: str) -> list[tuple[str, nn.Module]]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, _GATED)]
    if not found:
        plain = [n for n, m in model.named_modules() if isinstance(m, (nn.RNN, nn.RNNCell))]
        hint = (f"; {plain} are plain nn.RNN layers without gates: replace them by nn.LSTM or nn.GRU "
                "(remedy arch:gated_rnn) first") if plain else ""
        raise RemedyNotApplicable(f"{what} needs an nn.LSTM/nn.GRU (or LSTMCell/GRUCell) and "
                                  f"{type(model).__name__} has none{hint}")
    with_bias = [(n, m) for n, m in found if getattr(m, "bias", True) is not False]
    if not with_bias:
        raise RemedyNotApplicable(f"{what}: the recurrent layers {[n for n, _ in found]} were built with "
                                  "bias=False; rebuild them with bias=True")
    return with_bias


def _bias_pairs(rnn: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(bias_ih, bias_hh)`` for every layer and direction of ``rnn``."""
    params = dict(rnn.named_parameters(recurse=False))
    return [(p, params[n.replace("bias_ih", "bias_hh")]) for n, p in params.items() if n.startswith("bias_ih")]


def _hidden(rnn: nn.Module) -> int:
    return int(getattr(rnn, "hidden_size"))  # noqa: B009 - typed as Tensor | Module on nn.Module


def _keep_gate(rnn: nn.Module) -> str:
    return "forget" if isinstance(rnn, (nn.LSTM, nn.LSTMCell)) else "update"


def init_forget_gate_bias(model: nn.Module, value: float = 1.0) -> list[Change]:
    """Set the LSTM forget-gate (GRU update-gate) bias so the cell keeps its state at the start, in place.

    LSTM: ``bias_ih[f] = value``, ``bias_hh[f] = 0``, so ``f = sigmoid(W x + U h + value)``
    starts near ``sigmoid(1) = 0.73`` instead of 0.5 and the cell state (and its gradient)
    decays far more slowly. GRU: the update gate ``z`` gets the same bias (in PyTorch
    ``z -> 1`` keeps the state). The other gates are untouched.
    Gers, Schmidhuber & Cummins (2000); Jozefowicz, Zaremba & Sutskever (2015).

    Args:
        model: edited in place; every nn.LSTM/GRU/LSTMCell/GRUCell with biases, all layers
            and directions.
        value: the summed bias of the forget/update gate.

    Returns:
        One :class:`Change` per recurrent module whose biases were not already set.

    Raises:
        RemedyNotApplicable: no LSTM/GRU with biases.

    Example:
        >>> lstm = nn.LSTM(4, 8)
        >>> init_forget_gate_bias(lstm)[0].new
        'forget-gate bias = 1 (bias_ih=1, bias_hh=0) in 1 layer(s)'
        >>> float((lstm.bias_ih_l0 + lstm.bias_hh_l0)[8:16].min().detach())
        1.0
    """
    changes: list[Change] = []
    for name, rnn in _gated(model, "init:forget_gate_bias"):
        h = _hidden(rnn)
        pairs = _bias_pairs(rnn)
        if all(bool((ih[h:2 * h] == value).all()) and bool((hh[h:2 * h] == 0).all()) for ih, hh in pairs):
            continue
        gate = _keep_gate(rnn)
        old = _describe_gate(pairs, h)
        with torch.no_grad():
            for ih, hh in pairs:
                ih[h:2 * h] = value
                hh[h:2 * h] = 0.0
        changes.append(Change(name, "bias", f"{gate}-gate bias {old}",
                              f"{gate}-gate bias = {value:g} (bias_ih={value:g}, bias_hh=0) in {len(pairs)} layer(s)"))
    return changes


def _describe_gate(pairs: list[tuple[torch.Tensor, torch.Tensor]], h: int) -> str:
    s = torch.cat([(ih + hh)[h:2 * h].detach().float() for ih, hh in pairs])
    return f"mean={float(s.mean()):.3f}"


def sequence_length(model: nn.Module, batch: Any) -> Optional[int]:
    """The time dimension of ``batch``'s inputs as the first nn.LSTM/GRU reads it (``batch_first`` aware)."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        return None
    for m in model.modules():
        if isinstance(m, (nn.LSTM, nn.GRU)):
            return int(x.shape[1] if m.batch_first else x.shape[0])
    return None


def chrono_init(model: nn.Module, t_max: Optional[int] = None, *, batch: Any = None,
                force: bool = False) -> list[Change]:
    """Chrono initialisation of LSTM/GRU gate biases, in place.

    LSTM: ``b_f = log(u)``, ``u ~ U(1, t_max - 1)`` per unit, and ``b_i = -b_f``; a unit
    with forget gate ``sigmoid(b_f)`` keeps its memory for about ``1 + exp(b_f)`` steps, so
    the units' memory spans spread over ``[1, t_max]``. GRU: the update gate gets
    ``b_z = log(u)`` (``z -> 1`` keeps the state in PyTorch). ``bias_hh`` of those gates is
    zeroed so the sums are exactly these values. Tallec & Ollivier (2018), "Can recurrent
    neural networks warp time?".

    Args:
        model: edited in place.
        t_max: the longest dependency to remember, in steps (>= 3); None reads the sequence
            length of ``batch``.
        batch: ``(inputs, targets)`` or inputs, used only for ``t_max``.
        force: re-initialise modules already chrono-initialised with this ``t_max``.

    Returns:
        One :class:`Change` per recurrent module.

    Raises:
        RemedyNotApplicable: no LSTM/GRU, or neither ``t_max`` nor a batch to read it from.
        GradvetUsageError: ``t_max < 3``.

    Example:
        >>> lstm = nn.LSTM(2, 16, batch_first=True)
        >>> chrono_init(lstm, t_max=100)[0].new.startswith("chrono")
        True
    """
    gated = _gated(model, "init:chrono")
    if t_max is None and batch is not None:
        t_max = sequence_length(model, batch)
    if t_max is None:
        raise RemedyNotApplicable("init:chrono needs the longest time span to remember: pass t_max=<steps> "
                                  "or batch=(inputs, targets) with a sequence dimension")
    if int(t_max) < 3:
        raise GradvetUsageError(f"chrono_init needs t_max >= 3 (U(1, t_max - 1) must be an interval), got {t_max}")
    t_max = int(t_max)
    changes: list[Change] = []
    for name, rnn in gated:
        if not force and getattr(rnn, INIT_MARK, None) == f"chrono:{t_max}":
            continue
        h, pairs, lstm = _hidden(rnn), _bias_pairs(rnn), isinstance(rnn, (nn.LSTM, nn.LSTMCell))
        old = _describe_gate(pairs, h)
        with torch.no_grad():
            for ih, hh in pairs:
                b = torch.empty(h, device=ih.device, dtype=torch.float32).uniform_(1.0, t_max - 1.0).log_()
                ih[h:2 * h] = b
                hh[h:2 * h] = 0.0
                if lstm:
                    ih[:h] = -b
                    hh[:h] = 0.0
        setattr(rnn, INIT_MARK, f"chrono:{t_max}")
        gate = _keep_gate(rnn)
        changes.append(Change(name, "bias", f"{gate}-gate bias {old}",
                              f"chrono {gate}-gate bias log(U(1, {t_max - 1})) in [0, {math.log(t_max - 1):.2f}]"
                              + (", input-gate bias = -forget" if lstm else "")))
    return changes
