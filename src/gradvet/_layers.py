"""Which modules gradvet taps, and what each one is.

A *layer* is a module that owns parameters directly (Linear, ConvNd, norms,
Embedding, RNN/LSTM/GRU, MultiheadAttention, a custom module with its own
``nn.Parameter``), or a registered activation module. Containers are not layers.
Layers are ordered input side first by the order their forward first ran
(``named_modules()`` order for layers that never ran).

A plain ``nn.RNN`` is also read as its nonlinearity: the sequence output of its last
layer is ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (or ``relu(...)``), so its
forward hook measures saturation (or dead units) on that output as it does for a ``nn.Tanh``
module. LSTM and GRU outputs are products and mixtures of gates, not one activation's
output: they are read as plain layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from gradvet.stats._activations import RELU, TANH, ActivationKind, activation_kind

# Outputs of these layer types are channel-first: units are indexed by dim 1.
_CHANNEL_FIRST = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
)


@dataclass
class LayerInfo:
    """Static description of one tapped module.

    Attributes:
        name: module name as ``model.named_modules()`` gives it ("" is the root).
        type: class name.
        role: ``"param"``, ``"activation"``, ``"recurrent"`` or ``"other"`` (a parameter-free
            leaf or custom module, tapped so that a NaN born inside it can be located).
        activation: activation kind name ("" for plain layers); for a parameter layer
            followed by a functional activation, that activation's name once seen.
        params: indices into the monitor's parameter list owned by this layer.
        order: execution order (input side first), -1 until the layer has run.
        graph: what the backward graph says of the layer (read on the first measured step,
            ``LayerTaps.read_structure``): ``trunk`` (its input's position on the trunk, 0
            nearest the loss), ``stream``, ``branch`` (its output is off the trunk), ``norm`` (it
            divides by a statistic of its input), ``per_unit`` (values per unit behind its
            dead-unit fraction), ``batch_values`` (a BatchNorm in training mode: the values per
            channel its batch statistics rest on, the fewest over the structure step's calls).
    """

    name: str
    type: str
    role: str
    activation: str = ""
    params: list[int] = field(default_factory=list)
    order: int = -1
    channel_first: bool = False
    time_dim: Optional[int] = None
    graph: dict = field(default_factory=dict)
    tied_to: str = ""

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "type": self.type,
            "role": self.role,
            "activation": self.activation,
            "params": list(self.params),
            "order": self.order,
        }
        if self.graph:
            out["graph"] = dict(self.graph)
        if self.tied_to:
            out["tied_to"] = self.tied_to
        return out


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

#: ``nn.RNNBase.mode`` -> the activation whose output the layer returns (bidirectional: both halves are)
RECURRENT_KINDS: dict[str, ActivationKind] = {"RNN_TANH": TANH, "RNN_RELU": RELU}


def layer_kind(mod: nn.Module) -> Optional[ActivationKind]:
    """The activation kind to read off ``mod``'s output: an activation module's, or a plain RNN's nonlinearity.

    Example:
        >>> layer_kind(nn.RNN(2, 3)).name, layer_kind(nn.RNN(2, 3, nonlinearity="relu")).name
        ('tanh', 'relu')
        >>> layer_kind(nn.LSTM(2, 3)) is None
        True
    """
    if isinstance(mod, nn.RNNBase):
        return RECURRENT_KINDS.get(mod.mode)
    return activation_kind(mod)


def user_class(mod: nn.Module) -> type:
    """The module's own class, seen through wrappers that subclass it dynamically (FSDP2's ``FSDPLinear``)."""
    for cls in type(mod).__mro__:
        if not cls.__name__.startswith("FSDP") or cls.__module__.startswith("torch.distributed") is False:
            return cls
    return type(mod)


def _is_other_layer(mod: nn.Module) -> bool:
    """Parameter-free leaves and custom modules: tapped so a NaN born in them is located."""
    if isinstance(mod, _CONTAINERS):
        return False
    leaf = next(iter(mod.children()), None) is None
    custom = not user_class(mod).__module__.startswith("torch.")
    return leaf or custom


def _own_parameters(mod: nn.Module) -> list[nn.Parameter]:
    """``list(mod.parameters(recurse=False))``, read from the module's own table: the generator walk
    costs ~5 us a module, which adds up over the hundreds of modules of a real network."""
    own = getattr(mod, "_parameters", None)
    if not isinstance(own, dict):
        return list(mod.parameters(recurse=False))
    out: list[nn.Parameter] = []
    for p in own.values():
        if p is not None and not any(p is q for q in out):
            out.append(p)
    return out


def discover_layers(
    model: nn.Module, param_index: dict[int, int]
) -> tuple[list[LayerInfo], list[nn.Module], list[Optional[ActivationKind]]]:
    """Find the layers of ``model``.

    Args:
        model: the model.
        param_index: ``id(parameter) -> index`` of the monitored parameters.

    Returns:
        ``(infos, modules, kinds)`` aligned lists.
    """
    infos: list[LayerInfo] = []
    modules: list[nn.Module] = []
    kinds: list[Optional[ActivationKind]] = []
    seen: dict[int, str] = {}  # parameter index -> the first module that owns it
    for name, mod in model.named_modules():
        own = _own_parameters(mod)
        kind = layer_kind(mod)
        if not own and kind is None and not _is_other_layer(mod):
            continue
        idx = []
        tied = ""
        for p in own:
            i = param_index.get(id(p))
            if i is not None and i not in seen:
                seen[i] = name
                idx.append(i)
            elif i is not None and not tied:
                tied = seen[i]
        if isinstance(mod, nn.RNNBase):
            role = "recurrent"
        elif kind is not None and not own:
            role = "activation"
        elif not own:
            role = "other"
        else:
            role = "param"
        info = LayerInfo(
            name=name,
            type=user_class(mod).__name__,
            role=role,
            activation=kind.name if kind is not None else "",
            params=idx,
            channel_first=isinstance(mod, _CHANNEL_FIRST),
            tied_to=tied,
        )
        if isinstance(mod, nn.RNNBase):
            info.time_dim = 1 if mod.batch_first else 0
        infos.append(info)
        modules.append(mod)
        kinds.append(kind)
    return infos, modules, kinds


def owner_names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    """Name of the module that owns each parameter directly (first owner if tied)."""
    owner: dict[int, str] = {}
    for name, mod in model.named_modules():
        for p in _own_parameters(mod):
            owner.setdefault(id(p), name)
    return [owner.get(id(p), "") for p in params]
