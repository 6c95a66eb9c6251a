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
invariant to it, so a healthy GPT-2 or ViT reads flat (measured: GPT-2 0.029
+- 3% over its trunk). Each point is compared with the loss-side end of its
*stream*: the trunk is cut where something not derived from the first layer
joins it (a position table, a class token, a decoder's own tokens meeting the
encoder's output; ``gradvet._graph.merges``), since how much the stream uses
what comes from the input side there is a design choice at init.

- **vanishing** when a trunk point gets <= 1/100 of the reference (error at 1e-4):
  the layers behind it learn from almost no signal (Glorot & Bengio, 2010;
  Hochreiter, 1991). Plain stacks without branches keep the chain rule
  (``_depth``), calibrated on them.
- **exploding** when it grows toward the input by >= 10^1.5 (error at 10^3). In a
  normalised network (at least one layer that normalises its input per four
  weight layers) the growth is reported as ``info``: normalisation makes the loss invariant to
  the scale of the weights before it, so a large gradient shrinks its own
  effective step as the weights grow (van Laarhoven, 2017; Arora et al., 2019,
  auto rate-tuning), and BatchNorm nets are known to start with gradients that
  grow toward the input and train well (Yang et al., 2019, "A mean field theory
  of batch normalization"; measured at init: ResNet-50 260x). No threshold makes a
  normalised net's growth a warning, however large: its size at init depends on the
  batch as much as on the net. Over the 216 healthy corpus cases (197 normalised with a
  trunk) the growth is 10^0.2 at the median, 10^2.5 at the 95th percentile, and up to
  10^6.0 (Inception-v3) and 10^10.2 (torchvision's ResNeXt-101 32x8d, global gradient
  norm 2.7e11, at 32 px and 2 images); transformers' LeViT (corpus, 64 px, 2 images)
  reads 10^11.8, gradient norm 1.5e13, only 1.6 decades above ResNeXt, and plain SGD
  (momentum 0.9, lr 0.05) is NaN within 5 steps. Both are a batch of 2 reaching a 1x1
  feature map, where each BatchNorm normalises 2 values per channel and ``dL/dx ~ 1/std``
  of a near-tie, so the numbers are rounding (on 2 CPU threads instead of 1 LeViT's
  gradient norm is 5.9e11 and SGD at lr 0.01 fits the batch): with 8 images LeViT reads
  10^1.3 (no finding), gradient norm 242, and SGD at lr 0.05 fits the batch; at 224 px
  and 32 images its norm 1.1e5 falls to 130 after one SGD step (lr 0.05) and the loss
  falls. ResNeXt reads 10^3.4 with 8 images (tests/diagnosis/test_levit_growth.py).
  What the finding does say: when some BatchNorm's batch statistics rested on fewer than
  ``SMALL_NORM_BATCH`` (8) values per channel (``graph.batch_values``, recorded by the
  taps), its first cause is ``small_batch``, naming the layer and the count: the growth
  is partly the batch's, and a larger batch or larger inputs read the net itself
  (tests/diagnosis/test_small_norm_batch.py).
- **layer scale**: a vanishing no deeper than 10x below the smallest layer-scale
  gain is ``info`` (``smallest_gate``).
- Without any normalisation layer the scale is not free, and ``||dL/dx||`` itself
  is compared as well (a residual stream that grows layer by layer in a
  transformer without LayerNorm hands its early layers gradients 10-100x larger).
- **no gradient at all**: a trunk point whose ``||dL/dx||`` reads 0 (none, or elements
  below ~1e-22, whose float32 squares underflow) while the loss-side end of its stream
  gets some is the most vanished reading there is, and a scale-free one (no
  rescaling of ``x`` makes ``0 * x`` non-zero); it reads as the floor
  (``_measures._FLOOR``), even where ``||dL/dx * x||`` has no reference. Found
  on transformers' EfficientNet, whose ``_init_weights`` draws every BatchNorm gain
  from N(0, 0.02): a BatchNorm whose input variance falls below its ``eps`` no longer
  restores the scale, so every block shrinks the signal, forward and backward; the
  activations fall from std 1 to 1e-33 at ``top_conv``, ``||dL/dx * x||`` underflows
  to 0 in float32 at every trunk point (the loss-side end included), and
  ``||dL/dx||`` falls from 0.24 at the classifier to 1e-22 of it, then to 0 over the
  first 14 trunk points (docs/corpus.md). Zeros by design are not read this way: behind a
  zero-init layer *on* the trunk (a zero head) nothing reaches the trunk until its
  first step (Goyal et al., 2017; Zhang et al., 2019, Fixup), and its stream's
  loss-side end gets 0 too; zero-init residual branch ends (NFNet, ResNets'
  ``zero_init_last``), layer scale (CaiT, ConvNeXt) and ReZero gates (Bachlechner
  et al., 2021) sit on branches, which the trunk bypasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from gradvet.diagnosis._context import (
    GAIN_XAVIER,
    RELU_FAMILY,
    SATURATING,
    activations,
    first_trainable,
    has_attention,
    is_norm,
    median_fact,
)
from gradvet.diagnosis._measures import _FLOOR, _log10, before_fit, nanmedian, per_row, zero_layers
from gradvet.diagnosis._prescribe import remedy
from gradvet.diagnosis._spike import after_spike, drop_present, spike_cause
from gradvet.findings import Cause, Finding, Remedy
from gradvet.record._run import Run

VANISH_WARN, VANISH_ERROR = -2.0, -4.0
EXPLODE_WARN, EXPLODE_ERROR = 1.5, 3.0
#: a vector parameter starting this small is a layer scale (a gate that is meant to grow)
GATE_RMS = 1e-3
#: a network is "normalised" when it has at least this many normalisation layers per weight layer
NORMALISED_SHARE = 0.25
#: a BatchNorm whose batch statistics rest on fewer values per channel than this makes the growth read
#: behind it partly the batch's (transformers' LeViT with 2 images at 64 px: 2 values per channel at its 1x1
#: maps, gradient norm 1.5e13; with 8 images, 242)
SMALL_NORM_BATCH = 8
#: normalisation gains (BatchNorm/LayerNorm weights, which start at 1) this small at init shrink the signal
NORM_GAIN_SMALL = 0.1


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
    """The measured trunk points, input side first: the layer whose input each is, and its signals
    relative to the loss-side end of its stream (NaN for a stream of one point)."""

    names: list[str]
    first: str  # the first parameter layer: its output starts the trunk
    stream: list[int]
    rel: np.ndarray  # log10 of ||dL/dx * x|| over the stream's loss-side end (0 there)
    raw: Optional[np.ndarray]  # the same for ||dL/dx||
    ref: list[str]  # the loss-side end of each point's stream
    grad: Optional[np.ndarray] = None  # ||dL/dx|| of each point (median over the steps read)
    zero: Optional[list[bool]] = None  # read at the floor: no gradient at all, its stream's end gets some
    steps: Optional[np.ndarray] = None  # the steps read (those before the net fit its batch)
    low: Optional[np.ndarray] = None  # per step read, its lowest point against its stream's end (NaN: none)


def _relative(vals: np.ndarray, stream: list[int]) -> tuple[np.ndarray, list[int]]:
    rel, ref = np.full(len(vals), np.nan), [0] * len(vals)
    for sid in set(stream):
        idx = [j for j, x in enumerate(stream) if x == sid]
        end = idx[-1]  # input side first: the last point of the stream is nearest the loss
        if len(idx) >= 2 and vals[end] > 0:
            rel[idx] = _log10(vals[idx]) - np.log10(vals[end])
        for j in idx:
            ref[j] = end
    return rel, ref


def trunk_profile(run: Run) -> Optional[Trunk]:
    s = run.get("graph/in_sens")
    if s is None or not len(s.steps):
        return None
    points = sorted(
        ((layer["graph"]["trunk"], layer) for layer in run.ordered_layers() if "trunk" in (layer.get("graph") or {})),
        key=lambda t: -t[0],
    )
    gr = run.get("graph/in_grad")
    rows = before_fit(run, s.steps)  # the readings of a net that has yet to fit its batch
    cols, raws, names, stream, pos, per_step = [], [], [], [], [], []
    for at, layer in points:
        col = s.values[rows, layer["index"]].astype(np.float64)
        if np.isfinite(col).any() and layer["name"] not in names:
            per_step.append(col)
            cols.append(nanmedian(col))
            raws.append(nanmedian(gr.values[rows, layer["index"]].astype(np.float64)) if gr is not None else np.nan)
            names.append(layer["name"])
            stream.append(int(layer["graph"].get("stream", 0)))
            pos.append(int(at))
    if len(cols) < 2:
        return None
    rel, ref = _relative(np.asarray(cols), stream)
    grads = np.asarray(raws)
    raw, _ = _relative(grads, stream)
    zero = _no_gradient(run, grads, ref, pos)
    rel[zero] = np.fmin(rel[zero], _FLOOR)
    if not np.isfinite(rel).any():
        return None
    first = (first_trainable(run) or {}).get("name", names[0])
    return Trunk(names, first, stream, rel, raw if np.isfinite(raw).any() else None, [names[j] for j in ref],
                 grads, [bool(z) for z in zero], s.steps[rows], _lowest(np.asarray(per_step).T, stream))


def _lowest(vals: np.ndarray, stream: list[int]) -> np.ndarray:
    """Per step (rows of ``vals``, ``[steps, points]``), the lowest point against its stream's end, NaN
    where none was read: :func:`_relative` of each row, for all rows at once (a report of a long full-profile
    run reads every step: a loop over rows cost ~0.1 ms each)."""
    vals = np.asarray(vals, dtype=np.float64).reshape(len(vals), -1)
    rel = np.full(vals.shape, np.nan)
    for sid in set(stream):
        idx = [j for j, x in enumerate(stream) if x == sid]
        if len(idx) < 2:
            continue
        end = vals[:, idx[-1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = _log10(vals[:, idx]) - np.log10(end)[:, None]
        rel[:, idx] = np.where((end > 0)[:, None], r, np.nan)
    return per_row(rel)


def _no_gradient(run: Run, grads: np.ndarray, ref: list[int], pos: list[int]) -> np.ndarray:
    """Per trunk point, whether its gradient reads 0 while the loss-side end of its stream gets some.

    A layer on the trunk whose weights start at exactly zero (a zero head, a zero-init layer of a plain
    stack) blocks the gradient behind it by design until its first step: the points behind it (farther from
    the loss, ``pos`` larger) are blocked, not vanished. A layer with only a zero bias (an LM head whose weight
    is tied to the embedding) blocks nothing.
    """
    end = grads[ref]
    zero = (grads == 0.0) & (end > 0) & np.isfinite(end) & (np.arange(len(grads)) != np.asarray(ref))
    if not zero.any():
        return zero
    for layer in zero_layers(run):
        at = (layer.get("graph") or {}).get("trunk")
        weights = [i for i in layer.get("params") or [] if not str(run.params[i].get("name", "")).endswith("bias")]
        if at is not None and weights:
            zero &= np.asarray(pos) < int(at)
    return zero


def smallest_gate(run: Run) -> Optional[tuple[str, float]]:
    """The smallest layer scale: a vector parameter (not a bias) whose entries start with rms <= 1e-3.

    Layer scale (Touvron et al., 2021, CaiT; DeiT III) multiplies a branch by a learned per-channel
    gain starting at 1e-5..1e-6, so the gradient that must pass through that branch starts as small,
    by design; the gain's own gradient is not small and it grows within the first updates.
    """
    s = run.get("param/param_norm")
    if s is None or not len(s.steps):
        return None
    first = s.values[0].astype(np.float64)
    best: Optional[tuple[str, float]] = None
    for i, p in enumerate(run.params):
        shape, name = p.get("shape") or [], str(p.get("name", ""))
        if len(shape) != 1 or shape[0] < 8 or name.endswith("bias") or not np.isfinite(first[i]):
            continue
        rms = first[i] / np.sqrt(shape[0])
        if 0 < rms <= GATE_RMS and (best is None or rms < best[1]):
            best = (name, float(rms))
    return best


def trunk_rule(run: Run) -> list[Finding]:
    t = trunk_profile(run)
    if t is None:
        return []
    findings = []
    grow = t.rel
    if t.raw is not None and not any(is_norm(x) for x in run.layers):
        grow = np.fmax(t.rel, t.raw)
    lo, hi = float(np.nanmin(t.rel)), float(np.nanmax(grow))
    if lo <= VANISH_WARN:
        findings.append(_vanishing(run, t, lo))
    if hi >= EXPLODE_WARN:
        findings.append(_exploding(run, t, grow, hi))
    return findings


def small_norm_batches(run: Run) -> list[dict[str, Any]]:
    """The BatchNorm layers whose batch statistics rested on fewer than :data:`SMALL_NORM_BATCH` values per
    channel on the structure step (``graph.batch_values``, recorded by the taps)."""
    return [x for x in run.layers if (x.get("graph") or {}).get("batch_values", SMALL_NORM_BATCH) < SMALL_NORM_BATCH]


def _named(t: Trunk, hit: list[bool]) -> list[str]:
    """The layers whose inputs are hit, input side first, after the first layer when the first point is hit."""
    names = [n for n, h in zip(t.names, hit) if h]
    if hit and hit[0] and t.first not in names:
        names.insert(0, t.first)  # the first layer's weight gradient is its output's signal times its input
    return names


def _data(t: Trunk) -> dict[str, Any]:
    data: dict[str, Any] = {"trunk": t.names, "stream": t.stream, "log10_sensitivity_vs_stream_end": [
        None if not np.isfinite(r) else round(float(r), 3) for r in t.rel]}
    if t.zero and any(t.zero) and t.grad is not None:
        data["no_gradient"] = [n for n, z in zip(t.names, t.zero) if z]
        data["input_grad_norm"] = [None if not np.isfinite(g) else float(f"{g:.4g}") for g in t.grad]
    return data


def _norm_gain(run: Run) -> Optional[tuple[float, int]]:
    """Median rms of the normalisation layers' gains at the first step, and how many were read."""
    s = run.get("param/param_norm")
    if s is None or not len(s.steps):
        return None
    first = s.values[0].astype(np.float64)
    rms = []
    for layer in run.layers:
        if not is_norm(layer):
            continue
        for i in layer.get("params") or []:
            shape, name = run.params[i].get("shape") or [], str(run.params[i].get("name", ""))
            if len(shape) == 1 and shape[0] > 0 and name.endswith("weight") and np.isfinite(first[i]):
                rms.append(first[i] / np.sqrt(shape[0]))
    return (float(np.median(rms)), len(rms)) if rms else None


def small_norm_gains(run: Run) -> Optional[tuple[Cause, Remedy]]:
    """The ``init_scale`` cause and the ``init:reset_norm`` remedy when the normalisation layers' gains start
    small across the board (median rms below :data:`NORM_GAIN_SMALL`; transformers' EfficientNet: 0.019),
    else None. A zero-init last BatchNorm per residual branch leaves the median at 1."""
    gain = _norm_gain(run)
    if gain is None or gain[0] >= NORM_GAIN_SMALL:
        return None
    cause = Cause("init_scale", f"the normalisation layers' gains start at rms {gain[0]:.2g} (median of "
                  f"{gain[1]}), not 1: each norm scales the signal down, and once its input's variance "
                  "is below the norm's eps it no longer restores the scale, so every block shrinks the "
                  "signal forward and backward", 0.9)
    return cause, remedy("init:reset_norm", 0.95, f"the norm gains start at rms {gain[0]:.2g}, not 1")


def _no_gradient_evidence(t: Trunk, j: int) -> str:
    """The evidence when the deepest trunk points get no gradient at all."""
    grad = t.grad if t.grad is not None else np.full(len(t.names), np.nan)
    end = t.names.index(t.ref[j])
    text = (f"along the trunk (the activations every gradient passes through), the gradient ||dL/dx|| at the "
            f"input of {t.names[j]!r} is 0 in float32 (none, or elements below ~1e-22 whose squares underflow), "
            f"while at the input of {t.ref[j]!r}, nearer the loss, it is {grad[end]:.1e}; {sum(t.zero or [])} of "
            f"{len(t.names)} trunk points get no gradient at all")
    live = [k for k in range(len(t.names)) if t.stream[k] == t.stream[j] and k != end and grad[k] > 0
            and np.isfinite(grad[k])]
    if live:
        k = live[0]  # the point nearest the input that still gets some
        text += (f"; the last that gets some, the input of {t.names[k]!r}, gets {grad[k] / grad[end]:.1e} "
                 f"of the loss-side end's")
    return text


def _vanishing(run: Run, t: Trunk, lo: float) -> Finding:
    hit = [bool(np.isfinite(r) and r <= VANISH_WARN) for r in t.rel]
    acts = activations(run)
    j = int(np.nanargmin(t.rel))
    if t.zero and t.zero[j]:
        evidence = _no_gradient_evidence(t, j)
    else:
        evidence = (
            f"along the trunk (the activations every gradient passes through), the loss's sensitivity "
            f"||dL/dx * x|| at the input of {t.names[j]!r} is {10 ** lo:.1e} of that at the input of "
            f"{t.ref[j]!r}, nearer the loss; {sum(hit)} of {len(t.names)} trunk points get less than 1% of it"
        )
    causes: list[Cause] = []
    gains = small_norm_gains(run)
    if gains is not None:
        causes.append(gains[0])
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
    if has_attention(run):  # a transformer: LayerNorm, no He re-init of its attention (Xiong et al., 2020)
        rems += [remedy("norm:layer", 0.7), remedy("residual", 0.6), remedy("optim:adam", 0.3)]
    else:
        rems += [remedy("norm:batch", 0.7), remedy("residual", 0.6),
                 remedy("init:kaiming" if any(a in RELU_FAMILY for a in acts) else "init:xavier", 0.5),
                 remedy("optim:adam", 0.3)]
    if gains is not None:  # the init_scale cause: reset the gains before any other edit
        rems.insert(0, gains[1])
    rems = drop_present(run, rems, normalised=normalised(run), residual=True)  # a trunk with branches joining it
    data = _data(t)
    spike = None if t.steps is None or t.low is None else spike_cause(run, t.steps, t.low, VANISH_WARN)
    if spike is not None:  # the net trained until a step too large (gradvet.diagnosis._spike)
        causes.append(spike.cause)
        rems = after_spike(rems, spike.remedies)
        evidence += spike.evidence
        data["loss_spike"] = spike.data()
    severity = "error" if lo <= VANISH_ERROR else "warning"
    gate = smallest_gate(run)
    if gate is not None and lo >= np.log10(gate[1]) - 1:
        severity = "info"
        evidence += (f"; the drop is no larger than the layer scale {gate[0]!r} (rms {gate[1]:.1e}) that gates a "
                     "branch on the way, which starts small by design and grows as it learns (Touvron et al., 2021)")
    return Finding("vanishing_gradients", severity, _named(t, hit), evidence, causes, rems, data)


def _exploding(run: Run, t: Trunk, grow: np.ndarray, hi: float) -> Finding:
    hit = [bool(np.isfinite(r) and r >= 1.0) for r in grow]
    norm = normalised(run)
    j = int(np.nanargmax(grow))
    what = "sensitivity ||dL/dx * x||" if grow is t.rel else "gradient ||dL/dx|| (or sensitivity ||dL/dx * x||)"
    evidence = (
        f"along the trunk, the loss's {what} at the input of {t.names[j]!r} is {10 ** hi:.1e}x "
        f"that at the input of {t.ref[j]!r}, nearer the loss"
    )
    if norm:
        evidence += ("; the network is normalised, which makes the loss invariant to the scale of the weights "
                     "before each norm: such growth at init is common (BatchNorm ResNets) and self-correcting")
    causes = [Cause("depth", f"{len(t.names)} trunk points multiply local gains above 1", 0.5)]
    rems = [remedy("clip:norm", 0.8), remedy("norm:layer", 0.6), remedy("lr:lower", 0.5)]
    gain = median_fact(weight_layers(run), "init_gain")
    if gain is not None and gain > 1.2 * GAIN_XAVIER:
        causes.insert(0, Cause("init_scale", f"weights start with std = {gain:.2g}/sqrt(fan_in) (median), "
                               f"{gain / GAIN_XAVIER:.2g}x Xavier's 1/sqrt(fan_in): every branch adds more to the "
                               "stream than it passes on", 0.9))
        rems.insert(0, remedy("init:xavier", 0.9))
    if not any(is_norm(x) for x in run.layers):
        causes.insert(1 if causes[0].id == "init_scale" else 0,
                      Cause("no_normalisation", "without normalisation nothing bounds the growth of the "
                            "residual stream and its gradient", 0.8))
    small = small_norm_batches(run)
    if small:
        n, name = min((layer["graph"]["batch_values"], layer["name"]) for layer in small)
        causes.insert(0, Cause("small_batch", f"{len(small)} BatchNorm layers normalise over fewer than "
                               f"{SMALL_NORM_BATCH} values per channel in this batch ({n} at {name!r}): a "
                               "BatchNorm's input gradient grows as 1 / the spread of those values, so the growth "
                               "read here is partly the batch's; measure with a larger batch or larger inputs", 0.9))
    severity = "info" if norm else ("error" if hi >= EXPLODE_ERROR else "warning")
    rems = drop_present(run, rems, normalised=norm, residual=True)
    return Finding("exploding_gradients", severity, _named(t, hit) or [t.first], evidence, causes, rems,
                   _data(t))
