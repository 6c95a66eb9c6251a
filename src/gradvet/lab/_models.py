"""Model builders for the lab: MLPs with a choice of activation, init, norm and skips; RNNs.

Layers carry readable names (``blocks.3.fc``, ``head``, ``rnn``) so that charts and
findings can name them.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from gradvet.remedies import init_forget_gate_bias

#: Activation factories by name (timm-style string keys).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
}

#: Weight inits: "default" is PyTorch's (std = 1/sqrt(3 fan_in)); "xavier" is Glorot &
#: Bengio (2010), std = sqrt(2/(fan_in+fan_out)); "he" is He et al. (2015), std = sqrt(2/fan_in).
INITS = ("default", "xavier", "he")


def _require(name: str, value: str, choices: object) -> None:
    if value not in choices:  # type: ignore[operator]
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")  # type: ignore[call-overload]


def init_linear_(layer: nn.Linear, init: str, scale: float = 1.0, bias: Optional[float] = None) -> None:
    """Re-initialise ``layer`` in place.

    Args:
        layer: the Linear layer.
        init: one of :data:`INITS`.
        scale: multiply the initial weights by this (over-scaled init: ``scale > 1``).
        bias: set every bias to this value (None keeps the init's bias: zero, or
            PyTorch's default for ``init="default"``).

    Raises:
        ValueError: unknown ``init``.
    """
    _require("init", init, INITS)
    with torch.no_grad():
        if init == "xavier":
            nn.init.xavier_normal_(layer.weight)
            layer.bias.zero_()
        elif init == "he":
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            layer.bias.zero_()
        layer.weight.mul_(scale)
        if bias is not None:
            layer.bias.fill_(bias)


#: Norm layers by name; ``True`` means batch norm.
NORMS: dict[str, Callable[[int], nn.Module]] = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}


class Block(nn.Module):
    """``drop(act(norm(fc(x))))``, plus ``x`` when ``skip`` (He et al., 2016).

    ``norm``: False, True (batch norm, Ioffe & Szegedy, 2015) or a key of :data:`NORMS`
    (``"layer"``: Ba et al., 2016); ``dropout``: the share of units zeroed in training
    (Srivastava et al., 2014).
    """

    def __init__(self, d_in: int, d_out: int, act: str, norm: Union[bool, str], skip: bool,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        kind = "batch" if norm is True else norm or None
        if kind is not None:
            _require("norm", kind, NORMS)
        self.norm = NORMS[kind](d_out) if kind else None
        self.act = ACTIVATIONS[act]()
        self.drop = nn.Dropout(dropout) if dropout else None
        self.skip = skip and d_in == d_out

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        if self.norm is not None:
            h = self.norm(h)
        h = self.act(h)
        if self.drop is not None:
            h = self.drop(h)
        return x + h if self.skip else h


class MLP(nn.Module):
    """``depth`` Linear layers: ``depth - 1`` blocks of width ``width`` and a linear head.

    Example:
        >>> model = MLP(depth=10, act="sigmoid")
        >>> model(torch.randn(8, 64)).shape
        torch.Size([8, 10])
    """

    def __init__(
        self,
        depth: int,
        act: str,
        init: str = "default",
        *,
        width: int = 64,
        d_in: int = 64,
        d_out: int = 10,
        norm: Union[bool, str] = False,
        skip: bool = False,
        scale: float = 1.0,
        bias: Optional[float] = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"MLP: depth must be an int >= 2 (hidden blocks + head), got {depth!r}")
        _require("activation", act, ACTIVATIONS)
        dims = [d_in] + [width] * (depth - 1)
        self.blocks = nn.ModuleList(Block(a, b, act, norm, skip, dropout) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(width, d_out)
        for block in self.blocks:
            init_linear_(block.fc, init, scale, bias)  # type: ignore[arg-type]
        init_linear_(self.head, init, scale)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


CELLS = ("RNN", "LSTM", "GRU")


class SeqRegressor(nn.Module):
    """A recurrent layer reading the whole sequence, and a linear head on its last state.

    Example:
        >>> model = SeqRegressor("LSTM", gate_bias=1.0)
        >>> model(torch.randn(4, 20, 2)).shape
        torch.Size([4, 1])
    """

    def __init__(self, cell: str, hidden: int = 32, d_in: int = 2, gate_bias: Optional[float] = None) -> None:
        super().__init__()
        _require("cell", cell, CELLS)
        self.rnn = getattr(nn, cell)(d_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        if gate_bias is not None:
            init_forget_gate_bias(self.rnn, value=gate_bias)  # gradvet's own remedy

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def he_std(fan_in: int) -> float:
    """He et al. (2015) weight std for ReLU layers."""
    return math.sqrt(2.0 / fan_in)
