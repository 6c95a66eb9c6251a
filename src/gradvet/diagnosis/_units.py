"""Dead and saturated units.

- **dead** (ReLU, ReLU6): a unit whose output is zero for every sample of the
  batch passes no gradient to its weights (Lu et al., 2019, "Dying ReLU and
  initialization"). Warning when >= 50% of a layer's units are dead, error at
  >= 90%; judged only where each unit showed >= 16 values in the batch (a
  squeeze-excitation unit sees one per sample), and not where the producing layer
  outputs exactly zero although its weights are not (its input is zero: a
  zero-initialised layer upstream, as in NFNet's blocks at init). A healthy
  He-initialised ReLU layer has almost none at init (a unit is off on a random
  input with probability ~1/2, on all B inputs with ~2^-B).
- **saturated** (sigmoid, tanh, hardtanh, softsign, hardsigmoid): an output where
  the activation's derivative is below 10% of its maximum (on a side branch of a
  graph network, a gate, only ``info``; so is the model's output activation, with
  no parameter after it, once the loss has fallen to half its early level: a
  classifier that fits its labels drives its output sigmoid to 0 and 1 by design,
  and a log-likelihood loss undoes the flat tail, e.g. BCE's gradient with respect
  to the logit is ``p - y``). Warning when >= 50%
  of a layer's outputs are saturated, error at >= 90% (Glorot & Bengio, 2010,
  observed sigmoid top layers saturating at 1 and learning stalling). Measured
  on digits: standardised inputs saturate 0-5% of the first tanh/sigmoid layer;
  inputs scaled by 20 saturate 84-92%.

Both read the median of the last three measured layer steps, so a transient (one
step in three) does not trigger. The dead rule leaves the first layer step (the
init) out of that window once a later one exists: dying is sticky (a unit off on
every input gets no gradient to bring it back), and the question is whether units
are dead now. The default profile measures layer steps 0, 50, 100, ...: in a run of
51-100 steps the window was [init, step 50], whose median is their mean, so units
that died in training (0% at init, 80% at step 50: torchvision's SqueezeNet 1.1
class map under AdamW) read 40% and were missed. The window is then step 50 alone;
under the full profile it is the last three steps as before. Saturation keeps the
init in its window: it can come and go as the net learns.

Units that were alive at every layer step after the init and before a loss spike, and dead
from it on, name the spike first (``loss_spike``, ``gradvet.diagnosis._spike``: ``lr:lower``
and ``clip:norm`` first, the rule's own remedies at 0.8 of their score).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from gradvet.diagnosis._context import (
    DYING,
    LARGE_GAIN,
    SATURATING,
    first_trainable,
    producer,
    unit_layers,
)
from gradvet.diagnosis._engine import register_rule
from gradvet.diagnosis._measures import before_fit, has_fit, per_row, recent_median
from gradvet.diagnosis._prescribe import remedy
from gradvet.diagnosis._spike import SpikeCause, after_spike, spike_cause
from gradvet.diagnosis._time import unnormalised_inputs
from gradvet.findings import Cause, Finding
from gradvet.record._run import Run

WARN, ERROR = 0.5, 0.9
#: a unit is called dead only when its verdict rests on this many values per measured batch: a healthy
#: ReLU unit is off on n random inputs with probability ~2^-n, which is 1/4 for the one value per sample
#: that a squeeze-excitation unit (a 1x1 map) sees in a batch of 2
MIN_PER_UNIT = 16


def _recent(run: Run, stat: str, before: bool = False, after_init: bool = False) -> dict[str, float]:
    """Layer name -> the median of ``stat`` over the last three layer steps (``before``: the last three before
    the net fit its batch, :func:`gradvet.diagnosis._measures.before_fit`; the first layer step always counts;
    ``after_init``: the first layer step left out when a later one exists)."""
    s = run.get(f"layer/{stat}")
    if s is None or not len(s.steps):
        return {}
    rows = s.values[before_fit(run, s.steps)] if before else s.values
    if after_init and len(rows) > 1:
        rows = rows[1:]
    med = recent_median(rows[-3:])
    return {layer["name"]: float(med[layer["index"]]) for layer in run.ordered_layers()
            if layer["index"] < len(med) and not np.isnan(med[layer["index"]])}


def _weight_norms(run: Run) -> dict[str, float]:
    """Layer name -> norm of its weights at the last step that measured them."""
    s = run.get("param/param_norm")
    if s is None or not len(s.steps):
        return {}
    rows = [r for r in s.values.astype(np.float64) if np.isfinite(r).any()]
    if not rows:
        return {}
    out: dict[str, float] = {}
    for p, v in zip(run.params, rows[-1]):
        if np.isfinite(v):
            out[p["layer"]] = float(np.hypot(out.get(p["layer"], 0.0), v))
    return out


def _no_input(run: Run, layer: dict, weights: dict[str, float]) -> bool:
    """Whether the units of activation ``layer`` are off because nothing reaches them: its producer has
    non-zero weights yet outputs exactly 0 everywhere, so the producer's own input is 0 (a zero-initialised
    layer upstream: timm's NFNet zero-inits the last conv of each block, so its squeeze-excitation sees
    zeros at init, until that conv learns). A unit dies of its own weights, not of a silent input."""
    prod = producer(run, layer["name"]) if layer.get("role") == "activation" else None
    if prod is None or weights.get(prod["name"], 0.0) <= 0:
        return False
    if (prod.get("facts") or {}).get("bias_mean", 0.0) != 0.0:  # a bias alone would make the output non-zero
        return False
    mean = _recent(run, "act_mean", after_init=True).get(prod["name"])
    std = _recent(run, "act_std", after_init=True).get(prod["name"])
    # an output that is exactly 0 everywhere leaves every unit off: anything less is not this case
    return mean == 0.0 and std == 0.0 and _recent(run, "dead_frac", after_init=True).get(layer["name"], 0.0) >= 1.0


def _flagged(run: Run, stat: str, kinds: set[str]) -> list[tuple[dict, float]]:
    vals = _recent(run, stat, after_init=stat == "dead_frac")  # dying is sticky: the init is not "now"
    flagged = [
        (layer, vals[layer["name"]]) for layer in run.ordered_layers()
        if layer.get("activation") in kinds and vals.get(layer["name"], 0.0) >= WARN
        and (stat != "dead_frac" or (layer.get("graph") or {}).get("per_unit", MIN_PER_UNIT) >= MIN_PER_UNIT)
    ]
    if stat == "dead_frac" and flagged:
        weights = _weight_norms(run)
        flagged = [(layer, v) for layer, v in flagged if not _no_input(run, layer, weights)]
    return flagged


def _names(run: Run, flagged: list[tuple[dict, float]]) -> list[str]:
    names: list[str] = []
    for layer, _ in flagged:
        for n in unit_layers(run, layer["name"]):
            if n not in names:
                names.append(n)
    return names


@register_rule("dead")
def dead_rule(run: Run) -> list[Finding]:
    flagged = _flagged(run, "dead_frac", DYING)
    if not flagged:
        return []
    worst = max(v for _, v in flagged)
    parts = [f"{100 * v:.0f}% of units in {layer['name']!r} output zero for every sample" for layer, v in flagged]
    causes = []
    for layer, _ in flagged:
        prod = producer(run, layer["name"]) if layer["role"] == "activation" else layer
        f = (prod or {}).get("facts") or {}
        if f.get("bias_mean", 0.0) < 0 and f.get("bias_neg_frac", 0.0) > 0.5:
            causes.append(Cause(
                "negative_bias",
                f"{(prod or layer)['name']!r} starts with negative biases (mean {f['bias_mean']:.2g}, "
                f"{100 * f['bias_neg_frac']:.0f}% negative) that push units below zero for every input",
                0.9,
            ))
            break
    causes.append(Cause("large_updates", "a large update (high learning rate) can push units into the "
                        "region where they never fire again", 0.5))
    causes.append(Cause("init", "an initialisation whose scale or bias leaves units off on the whole data", 0.3))
    rems = [remedy("activation:leaky_relu", 0.9), remedy("init:reset_bias", 0.8), remedy("init:kaiming", 0.6),
            remedy("lr:lower", 0.4)]
    data: dict[str, Any] = {"dead_frac": {layer["name"]: v for layer, v in flagged}}
    evidence = "; ".join(parts)
    spike = _spike(run, flagged)
    if spike is not None:  # the units were alive until a step too large (gradvet.diagnosis._spike)
        causes.append(spike.cause)
        rems = after_spike(rems, spike.remedies)
        evidence += spike.evidence
        data["loss_spike"] = spike.data()
    return [Finding("dead_units", "error" if worst >= ERROR else "warning", _names(run, flagged),
                    evidence, causes, rems, data)]


def _spike(run: Run, flagged: list[tuple[dict, float]]) -> Optional[SpikeCause]:
    """The ``loss_spike`` cause when the flagged layers' units died only after a loss spike: at every layer
    step before it each had under :data:`WARN` dead, and from it on the most dead of them has a median of
    :data:`WARN` or more (Lu et al., 2019: a large step can push a unit's bias where it never fires again).
    The init's reading is left out, as in the rule's window: units alive at init may have died at any step
    before the next reading (under the default profile, step 50), so only a live reading after the init
    and before the spike places the dying after it (torchvision's VGG-11 under AdamW: alive at init, dead at
    step 50, its loss 8.6 at step 1 and 10.9 at step 40: either could have killed them)."""
    s = run.get("layer/dead_frac")
    if s is None or len(s.steps) < 3:
        return None
    cols = s.values[1:, [layer["index"] for layer, _ in flagged]].astype(np.float64)
    cols = np.where(np.isfinite(cols), cols, np.nan)
    return spike_cause(run, s.steps[1:], per_row(cols, np.nanmax), WARN, rising=True, what="the units died")


def _on_branch(run: Run, layer: dict) -> bool:
    """Whether the activation's producer sits off the trunk (a side branch of a graph network)."""
    prod = producer(run, layer["name"]) if layer.get("role") == "activation" else layer
    return bool(((prod or {}).get("graph") or {}).get("branch"))


def _gates(run: Run, flagged: list[tuple[dict, float]]) -> Finding:
    """Saturation on side branches only: an ``info``. A squeeze-excitation gate (Hu et al., 2018) multiplies
    the trunk's signal by a sigmoid; once trained, gates sit near 0 or 1 (a channel off or on) and the
    trunk carries the gradient past them (timm's EfficientNet-B0 after training: 60-100% of every SE gate)."""
    parts = [f"{100 * v:.0f}% of {layer['name']!r}" for layer, v in flagged]
    return Finding(
        "saturated_units", "info", _names(run, flagged),
        f"{len(flagged)} {flagged[0][0]['activation']} layer(s) on side branches sit where their derivative is "
        f"below 10% of its maximum ({', '.join(parts[:4])}{' ...' if len(parts) > 4 else ''}); gates off the "
        "trunk (squeeze-excitation, gating) saturate as they learn to switch channels, and the trunk carries "
        "the gradient past them",
        (), (), {"sat_frac": {layer["name"]: v for layer, v in flagged}, "branch": True},
    )


def _is_output(run: Run, layer: dict) -> bool:
    """Whether the activation runs after every parameter layer: its output goes to the loss as it is."""
    order = layer.get("order", -1)
    return layer.get("role") == "activation" and order >= 0 and not any(
        x.get("order", -1) > order for x in run.layers if x["role"] in ("param", "recurrent") and x.get("params")
    )


def _after_fit(flagged: list[tuple[dict, float]], early: dict[str, float], run: Run) -> Finding:
    """Hidden units that saturate only after the net fit its batch: an ``info``.

    Found on torchvision's MaxViT-T under the full profile (AdamW 1e-3, its one-image batch): the tanh
    before its last Linear (``classifier.4``) is 0% saturated while the loss falls 2.65 -> 0.035 (step 2)
    and 88% from step 11 on, once the loss is 7e-4: the pre-logits of a memorised batch pushed to +-1.
    Saturation that is there before the fit (sigmoid/tanh nets on unscaled inputs, from step 0) stays a
    warning: it is what keeps a net from learning (Glorot & Bengio, 2010)."""
    parts = [f"{100 * v:.0f}% of {layer['name']!r} (before: {100 * early.get(layer['name'], 0.0):.0f}%)"
             for layer, v in flagged]
    return Finding(
        "saturated_units", "info", _names(run, flagged),
        f"units saturate only after the loss fell to half its early level or less ({', '.join(parts)}): a net "
        "that fits its batch pushes these activations into their flat tails; while it was learning they were not",
        (), (), {"sat_frac": {layer["name"]: v for layer, v in flagged}, "after_fit": True},
    )


def _outputs(flagged: list[tuple[dict, float]], run: Run) -> Finding:
    """Saturation of the output activation of a net that fit its batch: an ``info``."""
    parts = [f"{100 * v:.0f}% of {layer['name']!r}" for layer, v in flagged]
    return Finding(
        "saturated_units", "info", _names(run, flagged),
        f"the output activation sits where its derivative is below 10% of its maximum ({', '.join(parts)}) "
        "after the loss fell to half its early level or less: confident outputs of a net that fits its labels, "
        "with no parameter after them; a log-likelihood loss undoes the flat tail (BCE's gradient with respect "
        "to the logit is p - y)",
        (), (), {"sat_frac": {layer["name"]: v for layer, v in flagged}, "output": True},
    )


def _recurrent(run: Run, layer: dict, flagged: list[tuple[dict, float]], parts: list[str], worst: float) -> Finding:
    """Saturation of a plain tanh RNN's output (its pre-activation is not recorded: the output is the tanh's),
    with the inputs blamed as the time rule blames them (:func:`gradvet.diagnosis._time.unnormalised_inputs`)
    and recurrent remedies instead of a norm layer or ReLU, which do not fit an ``nn.RNN``."""
    inputs = unnormalised_inputs(run, layer)
    causes = [Cause("unnormalised_inputs", inputs, 0.9)] if inputs is not None else []
    causes.append(Cause("saturating_activation", "tanh is flat for large |x|: each recurrent step multiplies the "
                        "gradient by tanh', nearly zero there (Bengio, Simard & Frasconi, 1994)", 0.5))
    rems = [remedy("data:normalize", 0.95)] if inputs is not None else []
    rems += [remedy("arch:gated_rnn", 0.8), remedy("init:orthogonal", 0.6)]
    return Finding("saturated_units", "error" if worst >= ERROR else "warning", _names(run, flagged),
                   "; ".join(parts), causes, rems, {"sat_frac": {x["name"]: v for x, v in flagged}})


@register_rule("saturated")
def saturated_rule(run: Run) -> list[Finding]:
    flagged = _flagged(run, "sat_frac", SATURATING)
    if not flagged:
        return []
    fit = has_fit(run)
    out = [(layer, v) for layer, v in flagged if _is_output(run, layer)] if fit else []
    branch = [(layer, v) for layer, v in flagged if _on_branch(run, layer) and (layer, v) not in out]
    flagged = [(layer, v) for layer, v in flagged if not _on_branch(run, layer) and (layer, v) not in out]
    late: list[tuple[dict, float]] = []
    early: dict[str, float] = {}
    if fit and flagged:
        early = _recent(run, "sat_frac", before=True)
        late = [(layer, v) for layer, v in flagged if early.get(layer["name"], 0.0) < WARN]
        flagged = [(layer, v) for layer, v in flagged if (layer, v) not in late]
    if not flagged:  # only info: the warning below speaks for the hidden layers alone
        return (([_gates(run, branch)] if branch else []) + ([_outputs(out, run)] if out else [])
                + ([_after_fit(late, early, run)] if late else []))
    worst = max(v for _, v in flagged)
    parts = [
        f"{100 * v:.0f}% of outputs of {layer['name']!r} ({layer['activation']}) sit where its derivative is "
        f"below 10% of its maximum" for layer, v in flagged
    ]
    stds = _recent(run, "act_std")
    causes = []
    first = flagged[0][0]
    if first["role"] == "recurrent":  # a plain tanh RNN: its output is the tanh's, its remedies recurrent ones
        return [_recurrent(run, first, flagged, parts, worst)]
    prod = producer(run, first["name"]) if first["role"] == "activation" else first
    if prod is not None:
        pre_std = stds.get(prod["name"])
        f = prod.get("facts") or {}
        gain = f.get("init_gain")
        reads_data = (first_trainable(run) or {}).get("name") == prod["name"]
        if pre_std is not None and pre_std > 2.0 and reads_data and (gain is None or gain < LARGE_GAIN):
            causes.append(Cause(
                "unnormalised_inputs",
                f"the pre-activations of {prod['name']!r} have std {pre_std:.3g} with weights of ordinary "
                f"scale ({gain:.2g}/sqrt(fan_in)): the inputs are not standardised" if gain is not None else
                f"the pre-activations of {prod['name']!r} have std {pre_std:.3g}: the inputs are not standardised",
                0.9,
            ))
        if gain is not None and gain > LARGE_GAIN:
            causes.append(Cause(
                "large_weights",
                f"{prod['name']!r} has weights of std {gain:.2g}/sqrt(fan_in): large pre-activations push units "
                "into the flat tails",
                0.8,
            ))
    causes.append(Cause("saturating_activation", "sigmoid/tanh are flat for large |x|: their gradient is "
                        "nearly zero there", 0.5))
    rems = []
    if any(c.id == "unnormalised_inputs" for c in causes):
        rems.append(remedy("data:normalize", 0.95))
    rems += [remedy("norm:batch", 0.8), remedy("activation:relu", 0.7), remedy("init:xavier", 0.6)]
    return [Finding("saturated_units", "error" if worst >= ERROR else "warning", _names(run, flagged),
                    "; ".join(parts), causes, rems, {"sat_frac": {layer["name"]: v for layer, v in flagged}})]
