"""Structural context shared by the rules: activations, norms, init scale, learning rates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from gradvet.record._run import Run

SATURATING = {"sigmoid", "tanh", "hardtanh", "softsign", "hardsigmoid"}
RELU_FAMILY = {"relu", "relu6", "leaky_relu", "prelu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish"}
DYING = {"relu", "relu6"}
NORM_TYPES = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm1d",
              "InstanceNorm2d", "InstanceNorm3d"}
#: std * sqrt(fan_in) of the standard inits (equal widths): PyTorch's default kaiming_uniform(a=sqrt(5))
#: gives 1/sqrt(3); Xavier 1; He sqrt(2).
GAIN_DEFAULT, GAIN_XAVIER, GAIN_HE = 1 / np.sqrt(3), 1.0, np.sqrt(2)


def activations(run: Run) -> list[str]:
    """Activation kinds in the model, input side first, without repeats."""
    seen: list[str] = []
    for layer in run.ordered_layers():
        a = layer.get("activation") or ""
        if a and a not in seen:
            seen.append(a)
    return seen


def is_norm(layer: dict[str, Any]) -> bool:
    """Whether the layer normalises its input, as its autograd nodes showed (``gradvet._graph.normalises``):
    any library's BatchNorm/LayerNorm/GroupNorm/RMSNorm, whatever its class is called. Layers without
    graph facts (older records) fall back to torch's own norm classes."""
    facts = layer.get("graph") or {}
    return bool(facts.get("norm")) or layer["type"] in NORM_TYPES


def has_attention(run: Run) -> bool:
    """Whether some layer's output is read by a softmax attention (its autograd nodes showed it)."""
    return any((layer.get("graph") or {}).get("attention") for layer in run.layers)


def norm_layers(run: Run) -> list[str]:
    return [layer["name"] for layer in run.layers if is_norm(layer)]


def producer(run: Run, name: str) -> Optional[dict[str, Any]]:
    """The parameter layer that ran last before layer ``name`` (its input's producer)."""
    ordered = run.ordered_layers()
    target = next((layer for layer in ordered if layer["name"] == name), None)
    if target is None or target.get("order", -1) < 0:
        return None
    before = [
        layer for layer in ordered
        if 0 <= layer.get("order", -1) < target["order"] and layer["role"] in ("param", "recurrent")
    ]
    return before[-1] if before else None


def unit_layers(run: Run, name: str) -> list[str]:
    """Names to report for a unit finding: the producing layer, then the activation layer."""
    layer = next((x for x in run.layers if x["name"] == name), None)
    if layer is None or layer["role"] != "activation":
        return [name]
    prod = producer(run, name)
    return [prod["name"], name] if prod is not None else [name]


def facts(layers: list[dict[str, Any]], key: str) -> list[float]:
    return [float(layer["facts"][key]) for layer in layers if key in (layer.get("facts") or {})]


def median_fact(layers: list[dict[str, Any]], key: str) -> Optional[float]:
    vals = facts(layers, key)
    return float(np.median(vals)) if vals else None


def param_lrs(run: Run) -> list[Optional[float]]:
    return [p.get("lr") for p in run.params]


def has_optimizer(run: Run) -> bool:
    return bool(run.meta.get("optimizer"))


def adaptive(run: Run, layers: Optional[Sequence[str]] = None) -> bool:
    """Whether every parameter (of ``layers``, or of the run) is trained by an optimizer that divides by a running
    RMS, read from the ``eps`` recorded for its param group (Adam, AdamW, RMSprop, Adagrad...; per parameter, so a
    Muon + AdamW split or a GAN's SGD + Adam is read layer by layer). False without an optimizer (``check``).
    A record without per-parameter settings (written before they were recorded) is read from the optimizer's
    class name."""
    if not any(p.get("optimizer") for p in run.params):
        name = str(run.meta.get("optimizer") or "").lower()
        return any(k in name for k in ("adam", "rmsprop", "adagrad", "adadelta"))
    idx = [i for x in run.layers if layers is None or x["name"] in layers for i in x.get("params") or []]
    return bool(idx) and all((run.params[i].get("optimizer") or {}).get("eps") for i in idx)


#: std * sqrt(fan_in) of a layer's weights above which they, not its inputs, make its pre-activations large
LARGE_GAIN = 1.5


def first_trainable(run: Run) -> Optional[dict[str, Any]]:
    """The first layer (input side) that owns trainable parameters: the one that reads the data, unless an
    embedding or a parameter-free front comes first; None if no layer has parameters."""
    return next((x for x in run.ordered_layers() if x["role"] in ("param", "recurrent") and x.get("params")), None)
