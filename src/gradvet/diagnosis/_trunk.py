"""Vanishing and exploding gradients along the trunk of a branched network.

For a network with branches (residual blocks, attention, gates, concatenation),
layer-by-layer comparison of ``||dL/d out||`` compares branch layers with the
stream that bypasses them, whose signals differ by design. The rule here reads
only the **trunk** (``gradvet._graph``): the activations every gradient path from
the loss to the first layer passes through (the residual stream between blocks,
the LayerNorm outputs of a post-LN transformer, the feature maps between
stages).

Along the trunk it compares ``s = ||dL/dx * x||`` (elementwise product, summed
over the batch): the loss's first-order response to a *relative* change of the
activation. Unlike ``||dL/dx||`` it is blind to the activation's scale, which a
pre-LN residual stream grows with depth while LayerNorm makes the loss
invariant to it, so a healthy GPT-2 or ViT reads flat (measured: within 1.5x
over the depth). Reference: the trunk point nearest the loss (the head's input).

- **vanishing** when a trunk point gets <= 1/100 of the reference (error at 1e-4):
  the layers behind it learn from almost no signal (Glorot & Bengio, 2010;
  Hochreiter, 1991). Plain stacks without branches keep the chain rule
  (``_depth``), calibrated on them.
- **exploding** when it grows toward the input by >= 10^1.5 (error at 10^3). In a
  normalised network (most weight layers next to a BatchNorm/LayerNorm/RMSNorm)
  the growth is reported as ``info``: normalisation makes the loss invariant to
  the scale of the weights before it, so a large gradient shrinks its own
  effective step as the weights grow (van Laarhoven, 2017; Arora et al., 2019,
  auto rate-tuning), and BatchNorm nets are known to start with gradients that
  grow toward the input and train well (Yang et al., 2019, "A mean field theory
  of batch normalization"; measured at init: ResNet-50 140x).
- Without any normalisation layer the scale is not free, and ``||dL/dx||`` itself
  is compared as well (a residual stream that grows layer by layer in a
  transformer without LayerNorm hands its early layers gradients 10-100x larger).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from gradvet.diagnosis._context import RELU_FAMILY, SATURATING, activations
from gradvet.diagnosis._measures import _log10, nanmedian
from gradvet.diagnosis._prescribe import remedy
from gradvet.findings import Cause, Finding, Remedy
from gradvet.record._run import Run

VANISH_WARN, VANISH_ERROR = -2.0, -4.0
EXPLODE_WARN, EXPLODE_ERROR = 1.5, 3.0
#: a network is "normalised" when it has at least this many normalisation layers per weight layer
NORMALISED_SHARE = 0.25


def is_norm(layer: dict[str, Any]) -> bool:
    """BatchNorm/LayerNorm/GroupNorm/RMSNorm and the libraries' variants (timm's BatchNormAct2d, LlamaRMSNorm)."""
    return "Norm" in layer["type"]


def branched(run: Run) -> bool:
    """Whether the run's graph was read and some parameter layer sits on a branch off the trunk."""
    return any((layer.get("graph") or {}).get("branch") for layer in run.layers) and any(
        "trunk" in (layer.get("graph") or {}) for layer in run.layers
    )


def weight_layers(run: Run) -> list[dict[str, Any]]:
    return [x for x in run.layers if x["role"] in ("param", "recurrent") and x.get("params") and not is_norm(x)]


def normalised(run: Run) -> bool:
    norms = [x for x in run.layers if is_norm(x)]
    return bool(norms) and len(norms) >= NORMALISED_SHARE * max(len(weight_layers(run)), 1)


@dataclass
class Trunk:
    """The measured trunk points, input side first: the layer each belongs to and its signals."""

    names: list[str]
    first: str  # the first parameter layer: its output starts the trunk
    rel: np.ndarray  # log10 of s over the reference (nearest the loss); last entry is 0
    raw: Optional[np.ndarray]  # the same for ||dL/dx|| (None where not recorded)


def trunk_profile(run: Run) -> Optional[Trunk]:
    s = run.get("graph/in_sens")
    if s is None or not len(s.steps):
        return None
    points = sorted(
        ((layer["graph"]["trunk"], layer) for layer in run.ordered_layers() if "trunk" in (layer.get("graph") or {})),
        key=lambda t: -t[0],
    )
    gr = run.get("graph/in_grad")
    cols, raws, names = [], [], []
    for _, layer in points:
        col = s.values[:, layer["index"]].astype(np.float64)
        if np.isfinite(col).any() and layer["name"] not in names:
            cols.append(nanmedian(col))
            raws.append(nanmedian(gr.values[:, layer["index"]].astype(np.float64)) if gr is not None else np.nan)
            names.append(layer["name"])
    if len(cols) < 2 or not cols[-1] > 0:
        return None
    vals, rvals = np.asarray(cols), np.asarray(raws)
    rel = _log10(vals) - np.log10(vals[-1])
    raw = _log10(rvals) - np.log10(rvals[-1]) if rvals[-1] > 0 else None
    weights = [x for x in run.ordered_layers() if x["role"] in ("param", "recurrent") and x.get("params")]
    first = weights[0]["name"] if weights else names[0]
    return Trunk(names, first, rel, raw)


def trunk_rule(run: Run) -> list[Finding]:
    t = trunk_profile(run)
    if t is None:
        return []
    findings = []
    grow = t.rel
    if t.raw is not None and not any(is_norm(x) for x in run.layers):
        grow = np.fmax(t.rel, t.raw)
    lo, hi = float(np.nanmin(t.rel[:-1])), float(np.nanmax(grow[:-1]))
    if lo <= VANISH_WARN:
        findings.append(_vanishing(run, t, lo))
    if hi >= EXPLODE_WARN:
        findings.append(_exploding(run, t, grow, hi))
    return findings


def _named(t: Trunk, hit: list[bool]) -> list[str]:
    names = [n for n, h in zip(t.names, hit) if h]
    if hit and hit[0] and t.first not in names:
        names.insert(0, t.first)  # the first layer's weight gradient is its output's signal times its input
    return names


def _data(t: Trunk) -> dict[str, Any]:
    return {"trunk": t.names, "log10_sensitivity_vs_head": [None if not np.isfinite(r) else round(float(r), 3)
                                                            for r in t.rel]}


def _vanishing(run: Run, t: Trunk, lo: float) -> Finding:
    hit = [bool(np.isfinite(r) and r <= VANISH_WARN) for r in t.rel[:-1]]
    acts = activations(run)
    worst = t.names[int(np.nanargmin(t.rel[:-1]))]
    evidence = (
        f"along the trunk (the activations every gradient passes through), the loss's sensitivity "
        f"||dL/dx * x|| at the input of {worst!r} is {10 ** lo:.1e} of that at the head's input "
        f"{t.names[-1]!r}; {sum(hit)} of {len(t.names) - 1} trunk points get less than 1% of it"
    )
    causes: list[Cause] = []
    sat = [a for a in acts if a in SATURATING]
    if sat:
        causes.append(Cause("saturating_activation", f"{'/'.join(sat)} on the trunk: each passes on at most "
                            f"{'a quarter' if 'sigmoid' in sat else 'all'} of the gradient, less where saturated",
                            0.9))
    if not any(is_norm(x) for x in run.layers):
        causes.append(Cause("no_normalisation", "no normalisation layer re-scales the signal along the trunk", 0.5))
    causes.append(Cause("depth", f"{len(t.names)} trunk points multiply their local factors", 0.4))
    rems: list[Remedy] = []
    if sat:
        rems.append(remedy("activation:relu", 0.9, "sigmoid/tanh shrink the gradient at every layer"))
    rems += [remedy("norm:layer" if "gelu" in acts else "norm:batch", 0.7), remedy("residual", 0.6),
             remedy("init:kaiming" if any(a in RELU_FAMILY for a in acts) else "init:xavier", 0.5),
             remedy("optim:adam", 0.3)]
    return Finding("vanishing_gradients", "error" if lo <= VANISH_ERROR else "warning", _named(t, hit + [False]),
                   evidence, causes, rems, _data(t))


def _exploding(run: Run, t: Trunk, grow: np.ndarray, hi: float) -> Finding:
    hit = [bool(np.isfinite(r) and r >= 1.0) for r in grow[:-1]]
    norm = normalised(run)
    worst = t.names[int(np.nanargmax(grow[:-1]))]
    what = "sensitivity ||dL/dx * x||" if grow is t.rel else "gradient ||dL/dx|| (or sensitivity ||dL/dx * x||)"
    evidence = (
        f"along the trunk, the loss's {what} at the input of {worst!r} is {10 ** hi:.1e}x "
        f"that at the head's input {t.names[-1]!r}"
    )
    if norm:
        evidence += ("; the network is normalised, which makes the loss invariant to the scale of the weights "
                     "before each norm: such growth at init is common (BatchNorm ResNets) and self-correcting")
    causes = [Cause("depth", f"{len(t.names)} trunk points multiply local gains above 1", 0.5)]
    if not any(is_norm(x) for x in run.layers):
        causes.insert(0, Cause("no_normalisation", "without normalisation nothing bounds the growth of the "
                               "residual stream and its gradient", 0.8))
    rems = [remedy("clip:norm", 0.8), remedy("norm:layer", 0.6), remedy("lr:lower", 0.5)]
    severity = "info" if norm else ("error" if hi >= EXPLODE_ERROR else "warning")
    return Finding("exploding_gradients", severity, _named(t, hit + [False]) or [t.first], evidence, causes, rems,
                   _data(t))
