"""Scale-free measurements the rules are drawn from (pure functions of a Run).

The rules compare the gradient *signal* ||dL/d output|| of layers with each
other, across depth and across time, never a raw gradient norm with a fixed
absolute threshold: a net trained to near-zero loss has tiny gradients
everywhere and is not sick, and AMP loss scaling multiplies every gradient by
the same factor.

Why the total norm of dL/d output (not its per-element RMS): under fan-in
scaled initialisation (PyTorch's default, Xavier, He) a healthy layer passes on
``||dL/dh_l||^2 = n_{l+1} Var(W) E[f'^2] ||dL/dh_{l+1}||^2 * ...`` which keeps the
total norm, not the per-element size, constant across layers of different width
(He et al., 2015, eq. 14; Glorot & Bengio, 2010). Its ratio across depth is the
product of the per-layer factors ``sigma_w^2 E[phi'^2]`` that mean-field theory
calls chi (Schoenholz et al., 2017): < 1 vanishes, > 1 explodes.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from gradvet.record._run import Run

_TINY = 1e-30
_FLOOR = -30.0  # log10 used for an exactly zero signal (e.g. behind a layer of dead units)
#: a layer step taken after the loss fell below this fraction of its early level reads a net that has fit
#: its batch: the depth rules do not judge it
FIT = 0.5


def nanmedian(x: np.ndarray, axis: Any = None) -> Any:
    """``np.nanmedian`` that returns NaN for all-NaN input without a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def per_row(values: np.ndarray, reduce: Any = np.nanmin) -> np.ndarray:
    """``reduce`` (``np.nanmin``, ``np.nanmax``) of each row of ``values``; NaN for a row with no finite entry
    (a step on which nothing was read), without the all-NaN warning.

    Example:
        >>> per_row(np.array([[3.0, 1.0], [np.nan, np.nan], [np.nan, 2.0]])).tolist()
        [1.0, nan, 2.0]
    """
    out = np.full(len(values), np.nan)
    read = np.isfinite(values).any(axis=1)
    out[read] = reduce(values[read], axis=1)
    return out


def _log10(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.maximum(x, 0.0))
    return np.where(np.isneginf(out), _FLOOR, out)


@dataclass
class Depth:
    """The gradient signal along the layers that own trainable parameters.

    Attributes:
        names: layer names, input side first.
        layers: the layer dicts of the run, same order.
        steps: layer steps.
        rel: ``[steps, n]`` log10 of each layer's signal over the output-side layer's.
        gated: per layer, whether it got exactly no signal at the first step behind a
            zero-initialised layer (its signal grows from zero as that layer moves).
    """

    names: list[str]
    layers: list[dict[str, Any]]
    steps: np.ndarray
    rel: np.ndarray
    gated: Optional[np.ndarray] = None

    def median_rel(self) -> np.ndarray:
        """Per-layer median of ``rel`` over steps (NaN-aware); for gated layers, the last measured value,
        since their signal starts at zero by design and the median would measure the warm-up."""
        if not len(self.rel):
            return np.zeros(len(self.names))
        med = nanmedian(self.rel, axis=0)
        if self.gated is not None:
            for j in np.where(self.gated)[0]:
                finite = self.rel[np.isfinite(self.rel[:, j]), j]
                med[j] = finite[-1] if len(finite) else np.nan
        return med


#: the early level of a run's loss is read from at most this many of its first finite losses
EARLY = 3


def early_window(loss: np.ndarray, n: int = EARLY) -> int:
    """How many leading steps of ``loss`` make its early level: the first ``n`` finite losses, stopping
    before the first one already off the first finite loss by a factor ``1/FIT`` (2) either way.

    The early level is the loss the net starts from, before training has changed it: three losses rather
    than one so that a minibatch's noise does not set it, but none that training has already moved. SGD at
    lr 0.05 with momentum 0.9 memorises the corpus batch in one step (torchvision ConvNeXt-T: 2.58 at
    step 0, 1.3e-6 at step 1, 7.5e-6 at step 2), and a median over those three (7.5e-6) takes a converged
    loss for the starting one: the run then never reads as converged, and a gradient that moves among
    converged values reads as grown 500x. A loss that doubles within the window (a divergence from the
    first step: VGG-11-BN 2.7 -> 101 -> 2.4e5) is likewise no starting level.

    Example:
        >>> early_window(np.array([2.58, 1.3e-6, 7.5e-6, 1e-4])), early_window(np.array([2.3, 2.2, 2.1, 2.0]))
        (1, 3)
        >>> early_window(np.array([np.nan, 2.3, 2.2, 2.1]))  # positions, non-finite ones included
        4
    """
    loss = np.asarray(loss, dtype=np.float64)
    ok = np.where(np.isfinite(loss))[0]
    if not len(ok):
        return min(n, len(loss))
    first = loss[ok[0]]
    if not first > 0:  # no level to be off by a factor from (a log-likelihood may be negative)
        return int(ok[min(n, len(ok)) - 1] + 1)
    end, taken = ok[0] + 1, 1
    for i in ok[1:]:
        if taken >= n or not FIT * first < loss[i] < first / FIT:
            break
        end, taken = i + 1, taken + 1
    return int(end)


def early_loss(loss: np.ndarray) -> float:
    """The run's early loss level: the median of the finite losses in :func:`early_window`; NaN if none.

    Example:
        >>> float(early_loss(np.array([2.58, 1.3e-6, 7.5e-6]))), float(early_loss(np.array([2.3, 2.2, 2.1])))
        (2.58, 2.2)
    """
    loss = np.asarray(loss, dtype=np.float64)
    head = loss[: early_window(loss)]
    head = head[np.isfinite(head)]
    return float(np.median(head)) if len(head) else float("nan")


def before_fit(run: Run, steps: np.ndarray) -> np.ndarray:
    """Per layer step in ``steps``, whether the net was still learning: its loss above ``FIT`` (1/2) of
    the early level (:func:`early_loss`). The first layer step always counts.

    Vanishing and exploding with depth describe how the gradient reaches the layers of a net that has
    yet to learn (Glorot & Bengio, 2010, read them at init and early in training). As a net fits its
    batch the loss's gradient turns toward what the fitted net can still change, and a LayerNorm removes
    the part that would only rescale its output: torchvision's ViT, whose trunk reads -0.3 decades at
    step 1, reads -2.5 at step 50 when its loss has fallen from 2.3 to 0.66, while it keeps learning.
    A step whose loss is not finite counts (the non-finite rule speaks of it)."""
    keep = np.ones(len(steps), dtype=bool)
    loss = np.asarray(run.loss, dtype=np.float64)
    if np.isfinite(loss).sum() < 3 or not len(steps):
        return keep
    early = early_loss(loss)
    if not early > 0:
        return keep
    at = dict(zip((int(s) for s in run.steps), loss))
    fit = np.array([bool(np.isfinite(at.get(int(s), np.nan)) and at[int(s)] <= FIT * early) for s in steps])
    keep[1:] = ~fit[1:]
    return keep


def has_fit(run: Run) -> bool:
    """Whether the run's last finite loss is at most ``FIT`` (1/2) of its early level (see
    :func:`before_fit`): the net has fit its batch to a good part."""
    loss = np.asarray(run.loss, dtype=np.float64)
    if np.isfinite(loss).sum() < 4:
        return False
    early = early_loss(loss)
    return bool(early > 0 and loss[np.isfinite(loss)][-1] <= FIT * early)


def depth_profile(run: Run) -> Optional[Depth]:
    """Signal along the trainable layers, relative to the output-side one; None if < 2 layers."""
    s = run.get("layer/grad_norm")
    if s is None or not len(s.steps):
        return None
    layers = [
        layer for layer in run.ordered_layers()
        if layer["role"] in ("param", "recurrent") and layer.get("params") and layer.get("order", -1) >= 0
    ]
    vals = s.values[:, [layer["index"] for layer in layers]].astype(np.float64) if layers else np.zeros((0, 0))
    keep = [j for j in range(len(layers)) if np.isfinite(vals[:, j]).any()]
    if len(keep) < 2:
        return None
    layers = [layers[j] for j in keep]
    vals = vals[:, keep]
    logs = _log10(vals)
    ref_idx = len(layers) - 1
    rel = logs - logs[:, ref_idx : ref_idx + 1]
    rel[~np.isfinite(vals)] = np.nan
    # a step where the output-side layer itself saw no gradient says nothing
    rel[vals[:, ref_idx] <= _TINY] = np.nan
    rel[~before_fit(run, s.steps)] = np.nan
    gated = None
    if _has_zero_layer(run):
        # Behind a layer whose parameters are all zero (zero-init residual branch ends: Goyal et al. 2017,
        # Fixup, SkipInit; a zero-init head) the signal is exactly 0 by design until the first step moves
        # that layer: blocked, not vanished. Dead ReLUs also give exact zeros; the dead-units rule names them.
        gated = vals[0] == 0.0
        rel[vals == 0.0] = np.nan
    return Depth([layer["name"] for layer in layers], layers, s.steps, rel, gated)


def _has_zero_layer(run: Run) -> bool:
    """Whether some parameterised layer starts with all its parameters exactly zero (first recorded norms)."""
    return bool(zero_layers(run))


def zero_layers(run: Run) -> list[dict[str, Any]]:
    """The parameterised layers that start with all their parameters exactly zero (first recorded norms):
    zero-init residual branch ends (Goyal et al., 2017; Fixup; SkipInit), zero-init heads."""
    s = run.get("param/param_norm")
    if s is None or not len(s.steps) or s.values.ndim != 2:
        return []
    v = s.values.astype(np.float64)
    ok = np.isfinite(v)
    first = np.where(ok.any(axis=0), v[np.argmax(ok, axis=0), np.arange(v.shape[1])], np.nan)
    out = []
    for layer in run.ordered_layers():
        idx = layer.get("params") or []
        if idx and np.isfinite(first[idx]).all() and bool((first[idx] == 0.0).all()):
            out.append(layer)
    return out


def per_layer_factor(rel: np.ndarray) -> float:
    """Geometric mean change of the signal per layer, going from output to input."""
    n = len(rel)
    if n < 2 or not np.isfinite(rel[0]):
        return 1.0
    return float(10 ** (rel[0] / (n - 1)))


@dataclass
class TimeProfile:
    """Gradient reaching each time step of a recurrent layer's input."""

    layer: dict[str, Any]
    profile: np.ndarray  # median over layer steps of ||dL/dx_t||
    att: float  # log10(early steps / late steps)


def time_profiles(run: Run) -> list[TimeProfile]:
    """One profile per recurrent layer that recorded one (median over layer steps)."""
    out = []
    for layer in run.ordered_layers():
        s = run.get(f"time/{layer['name']}")
        if s is None or not len(s.steps):
            continue
        prof = nanmedian(s.values.astype(np.float64), axis=0)
        prof = prof[np.isfinite(prof)]
        if len(prof) < 4:
            continue
        k = max(1, len(prof) // 10)
        late = prof[-k:].mean()
        if late <= _TINY:
            continue
        att = float(_log10(np.array([prof[:k].mean()]))[0] - np.log10(late))
        out.append(TimeProfile(layer, prof, att))
    return out


def layer_stat(run: Run, stat: str) -> dict[str, float]:
    """Median over layer steps of ``layer/<stat>`` per layer name (finite values only)."""
    s = run.get(f"layer/{stat}")
    if s is None or not len(s.steps):
        return {}
    out = {}
    for layer in run.ordered_layers():
        col = s.values[:, layer["index"]].astype(np.float64)
        col = col[np.isfinite(col)]
        if len(col):
            out[layer["name"]] = float(np.median(col))
    return out


def total_grad_norm(run: Run) -> Optional[np.ndarray]:
    """Global gradient norm per step (true units), NaN where no parameter had a gradient."""
    s = run.get("param/grad_norm")
    if s is None:
        return None
    v = s.values.astype(np.float64)
    with np.errstate(all="ignore"):
        tot = np.sqrt(np.nansum(v**2, axis=1))
    tot[np.all(np.isnan(v), axis=1)] = np.nan
    return tot


def unused_params(run: Run) -> set[int]:
    """Indices of the parameters that never received a finite non-zero gradient: the loss does not use
    them (a pooler under a token loss, XLNet's ``mask_emb`` without a permutation mask), so the optimizer
    never moves them. A gradient that was NaN/Inf (``param/grad_nonfinite`` > 0) is a gradient: such a
    parameter is used, and the non-finite rule speaks of it.
    """
    g = run.get("param/grad_norm")
    if g is None or not len(g.steps):
        return set()
    v = g.values.astype(np.float64)
    got = (np.isfinite(v) & (v > 0)).any(axis=0)
    nf = run.get("param/grad_nonfinite")
    if nf is not None and len(nf.steps):
        got |= (np.nan_to_num(nf.values.astype(np.float64), nan=0.0) > 0).any(axis=0)
    else:  # without the flags a NaN/Inf norm may be a non-finite gradient: call it used
        got |= (np.isinf(v)).any(axis=0)
    return {int(i) for i in np.where(~got)[0]}


def layer_update_ratios(
    run: Run, before: Optional[int] = None, skip: Collection[int] = ()
) -> tuple[list[str], np.ndarray]:
    """Each layer's ||dW|| / ||W|| at each update step (those before step ``before``, if given).

    Returns:
        The layer names (layers with parameters not in ``skip``) and a ``[steps, layers]`` array,
        NaN where the layer was not measured, and where it got exactly no gradient: nothing asked it to
        move at that step, so its update says nothing about how it learns (a branch that stochastic
        depth dropped for the whole batch, as torchvision's Swin-V2 does at ``features.5.3`` on step 0
        of the corpus batch; a layer behind a zero-initialised one, blocked until the first updates).
    """
    u = run.get("param/update_ratio")
    pn = run.get("param/param_norm")
    if u is None or pn is None or not len(u.steps):
        return [], np.zeros((0, 0))
    row_of = {int(s): i for i, s in enumerate(pn.steps)}
    g = run.get("param/grad_norm")
    grad_row = {int(s): i for i, s in enumerate(g.steps)} if g is not None else {}
    layers = [x for x in run.ordered_layers() if any(i not in skip for i in x.get("params") or [])]
    steps = [r for r, step in enumerate(u.steps) if before is None or int(step) < before]
    out = np.full((len(steps), len(layers)), np.nan)
    for j, layer in enumerate(layers):
        idx = [i for i in layer["params"] if i not in skip]
        for k, r in enumerate(steps):
            step = int(u.steps[r])
            if g is not None and step in grad_row:
                gn = g.values[grad_row[step]][idx].astype(np.float64)
                if np.isfinite(gn).all() and bool((gn == 0.0).all()):
                    continue
            w = pn.values[row_of.get(step, -1)][idx].astype(np.float64)
            ratio = u.values[r][idx].astype(np.float64)
            ok = np.isfinite(ratio) & np.isfinite(w)
            if ok.any() and np.sum(w[ok] ** 2) > 0:
                out[k, j] = np.sqrt(np.sum((ratio[ok] * w[ok]) ** 2) / np.sum(w[ok] ** 2))
    return [x["name"] for x in layers], out


def layer_update_ratio(run: Run, before: Optional[int] = None, skip: Collection[int] = ()) -> dict[str, float]:
    """Median over update steps of each layer's ||dW|| / ||W|| (see :func:`layer_update_ratios`);
    layers never measured are left out."""
    names, r = layer_update_ratios(run, before, skip)
    return {n: float(nanmedian(r[:, j])) for j, n in enumerate(names) if np.isfinite(r[:, j]).any()}


def recent_median(rows: np.ndarray) -> np.ndarray:
    """Per column, the median of the finite values of ``rows`` (a few steps x layers), NaN where none is
    finite; ``np.median`` of each column's finite values, for every column at once (one call per layer
    was half of a ResNet-50's report).

    Example:
        >>> recent_median(np.array([[1.0, np.nan, 5.0], [3.0, np.inf, np.nan], [2.0, np.nan, 7.0]])).tolist()
        [2.0, nan, 6.0]
    """
    v = np.where(np.isfinite(rows), rows.astype(np.float64), np.nan)
    v = np.sort(v, axis=0)  # NaN sorts last: the k finite values of a column come first
    k = np.isfinite(v).sum(axis=0)
    cols = np.arange(v.shape[1])
    lo = v[np.maximum((k - 1) // 2, 0), cols]
    hi = v[np.maximum(k // 2, 0), cols]
    with np.errstate(all="ignore"):
        return np.where(k > 0, np.where(k % 2 == 1, lo, (lo + hi) / 2), np.nan)
