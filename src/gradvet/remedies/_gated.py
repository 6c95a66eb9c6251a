"""Replace plain RNN layers by GRUs: the architecture cure for vanishing gradients through time.

A tanh RNN multiplies the gradient by ``W_hh^T diag(tanh')`` at every step, so over
T steps it shrinks (or grows) geometrically and no initialisation keeps it flat for
long (Bengio, Simard & Frasconi, 1994; Pascanu, Mikolov & Bengio, 2013). Gated cells
add a path whose per-step factor is a learned gate near 1 (Hochreiter & Schmidhuber,
1997; Cho et al., 2014; Chung et al., 2014 compare the two on long sequences).

``nn.GRU`` is a drop-in replacement for ``nn.RNN``: same constructor sizes, same
inputs ``(x, h0)`` and the same outputs ``(output, h_n)`` with the same shapes, so
the model's ``forward`` needs no change. ``nn.LSTM`` is not (its state is ``(h, c)``),
so it is not offered here.
"""

from __future__ import annotations

from typing import Union

from torch import nn

from gradvet.remedies._layout import like, qualified
from gradvet.remedies._result import Change, RemedyNotApplicable

#: Marker left on a GRU that :func:`gate_rnns` put in: the repr of the RNN it replaced.
GATED_MARK = "_gradvet_gated_from"


def _gru_like(rnn: Union[nn.RNN, nn.RNNCell], model: nn.Module) -> nn.Module:
    new: nn.Module
    if isinstance(rnn, nn.RNNCell):
        new = nn.GRUCell(rnn.input_size, rnn.hidden_size, bias=rnn.bias)
    else:
        new = nn.GRU(rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers, bias=rnn.bias,
                     batch_first=rnn.batch_first, dropout=float(rnn.dropout), bidirectional=rnn.bidirectional)
    new = new.to(**like(rnn, model))  # type: ignore[call-overload]
    new.train(rnn.training)
    return new


def gate_rnns(model: nn.Module) -> list[Change]:
    """Replace every ``nn.RNN`` by an ``nn.GRU`` (and ``nn.RNNCell`` by ``nn.GRUCell``) of the same sizes, in place.

    Sizes, ``num_layers``, ``bias``, ``batch_first``, ``dropout`` and ``bidirectional``
    are kept; the GRU has three times the recurrent parameters, freshly initialised
    (PyTorch's default), and the RNN's weights are dropped: this changes the
    architecture, so retrain. Subclasses of ``nn.RNN`` are left alone (their
    ``forward`` may do more than the RNN's). Cho et al. (2014); Chung et al. (2014).

    Args:
        model: edited in place; it must not itself be the ``nn.RNN`` (a module cannot
            replace itself): build ``nn.GRU(...)`` directly instead.

    Returns:
        One :class:`Change` per replaced layer (empty when an earlier call replaced them all).

    Raises:
        RemedyNotApplicable: no plain ``nn.RNN``/``nn.RNNCell`` inside ``model``, or ``model`` is one.

    Example:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.rnn, self.head = nn.RNN(2, 8, batch_first=True), nn.Linear(8, 1)
        ...     def forward(self, x):
        ...         return self.head(self.rnn(x)[0][:, -1])
        >>> net = Net()
        >>> [str(c) for c in gate_rnns(net)]
        ['rnn: replace RNN(2, 8, batch_first=True) -> GRU(2, 8, batch_first=True)']
    """
    if type(model) in (nn.RNN, nn.RNNCell):
        raise RemedyNotApplicable(
            f"the model itself is an nn.{type(model).__name__} and cannot replace itself in place: build "
            f"nn.{'GRUCell' if isinstance(model, nn.RNNCell) else 'GRU'} with the same arguments instead"
        )
    changes: list[Change] = []
    earlier = False
    for prefix, parent in list(model.named_modules()):
        for cname, child in list(parent.named_children()):
            earlier |= hasattr(child, GATED_MARK)
            if type(child) not in (nn.RNN, nn.RNNCell) or not isinstance(child, (nn.RNN, nn.RNNCell)):
                continue
            new = _gru_like(child, model)
            setattr(new, GATED_MARK, repr(child))
            setattr(parent, cname, new)
            changes.append(Change(qualified(prefix, cname), "replace", repr(child), repr(new)))
    if not changes and not earlier:
        sub = [n for n, m in model.named_modules() if isinstance(m, (nn.RNN, nn.RNNCell))]
        hint = (f"; {sub} subclass nn.RNN/nn.RNNCell and are left alone (their forward may differ): "
                "replace them in your code") if sub else ""
        raise RemedyNotApplicable(f"arch:gated_rnn replaces plain nn.RNN/nn.RNNCell layers and "
                                  f"{type(model).__name__} has none{hint}")
    return changes
