"""Pure statistics on tensors: the functional core under the Monitor's hooks."""

from gradvet.stats._activations import (
    ACTIVATIONS,
    ActivationKind,
    activation_kind,
    register_activation,
)
from gradvet.stats._layer import LAYER_STATS, derive_layer_stats, output_stats
from gradvet.stats._params import PARAM_STATS, param_stats

__all__ = [
    "ACTIVATIONS",
    "LAYER_STATS",
    "PARAM_STATS",
    "ActivationKind",
    "activation_kind",
    "derive_layer_stats",
    "output_stats",
    "param_stats",
    "register_activation",
]
