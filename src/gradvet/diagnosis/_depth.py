"""Vanishing and exploding gradients with depth.

Rule: along the layers that own trainable parameters (input side first), take
``rel_l = log10(||dL/d out_l|| / ||dL/d out_last||)`` (median over measured steps).

- **vanishing** when some layer gets <= 1/100 of the output-side signal
  (``rel <= -2``; error at <= 1e-4), or when the signal decays steadily over
  >= 6 layers, each passing on <= 60% of it, >= 30x in all (default-init tanh
  and linear stacks of depth 8 sit there: -1.8 and -1.7, 0.55x-0.58x per layer). Calibration on digits MLPs (depth 3-20,
  sigmoid/tanh/ReLU, default/Xavier/He/small init, SGD, 100 steps): every net
  that failed to learn had rel <= -2.3 at its first layer; every net that learned
  had rel >= -1.8 (3-layer sigmoid at PyTorch's default init: -1.7). This is the
  regime Glorot & Bengio (2010) describe for sigmoid stacks, and He et al. (2015)
  for deep ReLU nets at Xavier init, where the weight gradients of the first and
  last layers look equal while the signal collapses (which a per-parameter norm
  comparison misses, and this rule does not).
- **exploding** when the signal grows toward the input by >= 10^1.5 (error at
  10^3), or by >= 10 while some layer's gradient is as large as its weights
  (``||g_W|| >= ||W||``: one step at lr 1 would erase the layer). Chaotic tanh
  nets (sigma_w^2 E[tanh'^2] > 1, Schoenholz et al., 2017) and over-scaled ReLU
  inits cross it; on digits a ReLU net crossing it diverged to NaN under SGD.

A vanishing that begins only after a loss spike (every reading before it above the
threshold) names the learning rate first (``loss_spike``, ``gradvet.diagnosis._spike``).
The weights' init scale is a cause only in a net that is not normalised: a norm after
each layer makes the loss invariant to the scale of the weights before it (a Conv-BN
stack with small norm gains has one ``init_scale`` cause, the gains').
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradvet.diagnosis._context import (
    DYING,
    GAIN_HE,
    GAIN_XAVIER,
    RELU_FAMILY,
    SATURATING,
    activations,
    has_attention,
    median_fact,
    norm_layers,
)
from gradvet.diagnosis._engine import register_rule
from gradvet.diagnosis._measures import Depth, depth_profile, per_layer_factor, per_row
from gradvet.diagnosis._prescribe import remedy
from gradvet.diagnosis._spike import after_spike, drop_present, spike_cause
from gradvet.diagnosis._trunk import branched, normalised, small_norm_gains, trunk_rule
from gradvet.findings import Cause, Finding, Remedy
from gradvet.record._run import Run
from gradvet.report import layer_reports

VANISH_WARN, VANISH_ERROR = -2.0, -4.0
# a steady decay over many layers: >= 6 layers, each passing on <= 60% of the signal, >= 30x in all
STEADY_MIN_LAYERS, STEADY_FACTOR, STEADY_TOTAL = 6, 0.6, -1.5
EXPLODE_WARN, EXPLODE_ERROR, EXPLODE_WITH_BIG_GRAD = 1.5, 3.0, 1.0
# from this many parameterised layers without normalisation, skip connections are the first remedy: He et al.
# (2016) saw plain nets of 34+ layers train worse than 18-20-layer ones although their gradients flowed
DEEP_PLAIN = 20
# from this many layers of a plain stack, a shallower net and layer-wise pretraining are prescribed too
SHALLOWER_FROM = 6


def _relative_grads(run: Run) -> dict[str, float]:
    """||g_W|| / ||W|| of each layer at the last step."""
    out = {}
    for rep in layer_reports(run):
        if rep.grad_norm is not None and rep.param_norm:
            out[rep.name] = rep.grad_norm / rep.param_norm
    return out


def _vanishing_causes(run: Run, d: Depth, factor: float) -> list[Cause]:
    acts = activations(run)
    causes = []
    sat = [a for a in acts if a in SATURATING]
    gain = median_fact(d.layers, "init_gain")
    n = len(d.names)
    if sat:
        causes.append(Cause(
            "saturating_activation",
            f"{'/'.join(sat)} layers: sigmoid's derivative is at most 0.25 (tanh's is 1 only at 0), so each "
            f"layer multiplies the gradient by a factor below 1; measured {factor:.2g}x per layer",
            0.9,
        ))
    gains = small_norm_gains(run)
    if gains is not None:
        causes.append(gains[0])
    if gain is not None and not normalised(run):  # a norm after each layer makes the weights' scale free
        relu = any(a in RELU_FAMILY for a in acts)
        target, name = (GAIN_HE, "He") if relu else (GAIN_XAVIER, "Xavier")
        if gain < 0.8 * target:
            causes.append(Cause(
                "init_scale",
                f"weights are initialised with std = {gain:.2g}/sqrt(fan_in); {name} init uses "
                f"{target:.2g}/sqrt(fan_in), so each layer shrinks the signal by about {gain / target:.2g}x",
                0.8 if gain < 0.5 * target else 0.6,
            ))
    causes.append(Cause(
        "depth",
        f"{n} layers without a path that bypasses them: the per-layer factors multiply "
        f"({factor:.2g}^{n - 1} = {factor ** (n - 1):.1e})",
        0.5,
    ))
    if not norm_layers(run):
        causes.append(Cause("no_normalisation", "no normalisation layer re-scales the signal between layers", 0.3))
    if any(a in DYING for a in acts):
        causes.append(Cause("dead_units", "ReLU units that are off for every sample pass no gradient back", 0.2))
    return causes


def _vanishing_remedies(run: Run, depth: int) -> list[Remedy]:
    acts = activations(run)
    sat = any(a in SATURATING for a in acts)
    relu = any(a in RELU_FAMILY for a in acts)
    rems = []
    gains = small_norm_gains(run)
    if gains is not None:  # the gains, not the architecture: reset them first
        rems.append(gains[1])
    deep_plain = depth >= DEEP_PLAIN and not norm_layers(run)
    if deep_plain:
        rems.append(remedy("residual", 0.95, f"{depth} layers in a plain stack: He et al. (2016) found plain nets "
                                             "this deep train worse than shallower ones even with good init"))
    if sat:
        rems.append(remedy("activation:relu", 0.9, "sigmoid/tanh shrink the gradient at every layer"))
    if has_attention(run):  # a transformer: LayerNorm, and no He re-init of its attention (Xiong et al., 2020)
        rems.append(remedy("norm:layer", 0.7))
    else:
        rems.append(remedy("init:kaiming" if relu or sat else "init:xavier", 0.85))
        rems.append(remedy("norm:batch", 0.7))
    if not deep_plain:
        rems.append(remedy("residual", 0.6))
    if not has_attention(run):
        rems.append(remedy("init:lsuv", 0.4))
    rems.append(remedy("optim:adam", 0.3))
    if depth >= SHALLOWER_FROM and not norm_layers(run) and not has_attention(run) and not branched(run):
        # a plain stack: fewer layers, or layers that start from pretrained weights (docs/treatment.md: the
        # 10-layer sigmoid MLP on digits stays at 10% test accuracy; 3 of its layers reach 73% at the same
        # lr 0.02 and 95% at lr 0.1; greedy autoencoder pretraining then fine-tuning reaches 95%)
        rems.append(remedy("arch:shallower", 0.25, f"{depth} layers multiply their factors"))
        rems.append(remedy("pretrain:layerwise", 0.2))
    return rems


@register_rule("depth")
def depth_rule(run: Run) -> list[Finding]:
    if branched(run):
        return trunk_rule(run)  # a graph, not a chain: read along its trunk
    d = depth_profile(run)
    if d is None:
        return []
    rel = d.median_rel()
    inner = rel[:-1]
    findings = []
    lo = float(np.nanmin(inner)) if np.isfinite(inner).any() else 0.0
    hi = float(np.nanmax(inner)) if np.isfinite(inner).any() else 0.0
    steady = (
        len(d.names) >= STEADY_MIN_LAYERS
        and np.isfinite(rel[0])
        and rel[0] <= STEADY_TOTAL
        and per_layer_factor(rel) <= STEADY_FACTOR
    )
    if lo <= VANISH_WARN or steady:
        findings.append(_vanishing(run, d, rel, lo, steady))
    big = max(_relative_grads(run).values(), default=0.0)
    if hi >= EXPLODE_WARN or (hi >= EXPLODE_WITH_BIG_GRAD and big >= 1.0):
        findings.append(_exploding(run, d, rel, hi, big))
    return findings


def _data(d: Depth, rel: np.ndarray) -> dict[str, Any]:
    return {"layers": d.names, "log10_signal_vs_output": [None if not np.isfinite(r) else round(float(r), 3) for r in rel]}


def _vanishing(run: Run, d: Depth, rel: np.ndarray, lo: float, steady: bool = False) -> Finding:
    cut = VANISH_WARN if lo <= VANISH_WARN else STEADY_TOTAL
    starved = [n for n, r in zip(d.names[:-1], rel[:-1]) if np.isfinite(r) and r <= cut]
    factor = per_layer_factor(rel)
    first = d.names[0]
    evidence = (
        f"the gradient signal reaching {first!r} is {10 ** rel[0]:.1e} of that reaching the output-side "
        f"layer {d.names[-1]!r}; it shrinks about {factor:.2g}x per layer over {len(d.names)} layers; "
        f"{len(starved)} layer(s) get less than {100 * 10 ** cut:.0f}% of it"
    )
    data = _data(d, rel)
    data["per_layer_factor"] = factor
    causes, rems = _vanishing_causes(run, d, factor), _vanishing_remedies(run, len(d.names))
    rems = drop_present(run, rems, normalised=normalised(run), residual=False)  # a chain: no skips to have
    spike = spike_cause(run, d.steps, per_row(d.rel[:, :-1]), cut)  # each step's lowest layer but the output's
    if spike is not None:  # the net trained until a step too large (gradvet.diagnosis._spike)
        causes.append(spike.cause)
        rems = after_spike(rems, spike.remedies)
        evidence += spike.evidence
        data["loss_spike"] = spike.data()
    return Finding("vanishing_gradients", "error" if lo <= VANISH_ERROR else "warning", starved, evidence, causes,
                   rems, data)


def _exploding(run: Run, d: Depth, rel: np.ndarray, hi: float, big: float) -> Finding:
    grown = [n for n, r in zip(d.names[:-1], rel[:-1]) if np.isfinite(r) and r >= EXPLODE_WITH_BIG_GRAD]
    factor = per_layer_factor(rel)
    acts = activations(run)
    gain = median_fact(d.layers, "init_gain")
    causes = []
    if gain is not None:
        target = GAIN_HE if any(a in RELU_FAMILY for a in acts) else GAIN_XAVIER
        if gain > 1.2 * target:
            causes.append(Cause(
                "init_scale",
                f"weights are initialised with std = {gain:.2g}/sqrt(fan_in), {gain / target:.2g}x the "
                f"variance-preserving {target:.2g}/sqrt(fan_in), so each layer amplifies the gradient",
                0.9,
            ))
    if any(a in ("tanh", "sigmoid") for a in acts):
        causes.append(Cause(
            "chaotic_regime",
            "tanh layers with large weights sit in the chaotic phase (sigma_w^2 E[tanh'^2] > 1, Schoenholz "
            "et al., 2017): gradients grow exponentially with depth",
            0.6,
        ))
    causes.append(Cause("depth", f"{len(d.names)} layers multiply a per-layer gain of about {factor:.2g}x", 0.4))
    evidence = (
        f"the gradient signal grows toward the input: {d.names[0]!r} gets {10 ** rel[0]:.1e}x the signal of "
        f"{d.names[-1]!r} (about {factor:.2g}x per layer)"
    )
    if big >= 1.0:
        evidence += f"; the largest gradient is {big:.2g}x its layer's weight norm"
    rems = [
        remedy("init:xavier" if any(a in SATURATING for a in acts) or has_attention(run) else "init:kaiming", 0.9),
        remedy("clip:norm", 0.8),
        remedy("norm:layer", 0.6),
        remedy("lr:lower", 0.5),
        remedy("init:orthogonal", 0.4),
    ]
    rems = drop_present(run, rems, normalised=normalised(run), residual=False)
    data = _data(d, rel)
    data.update(per_layer_factor=factor, max_grad_to_weight=big)
    if normalised(run):  # see gradvet.diagnosis._trunk: the scale before a norm is free
        evidence += ("; the network is normalised, which makes the loss invariant to the scale of the weights "
                     "before each norm: such growth at init is common and self-correcting")
        return Finding("exploding_gradients", "info", grown or d.names[:1], evidence, causes, rems, data)
    return Finding("exploding_gradients", "error" if hi >= EXPLODE_ERROR else "warning",
                   grown or d.names[:1], evidence, causes, rems, data)
