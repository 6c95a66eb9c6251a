"""Exploding gradients driven by growing weights: the case for weight decay.

Rule (needs a training run with an optimizer): the norm of all weight matrices and kernels
(parameters of 2+ dimensions) grows >= 2x from its early level (median of the first 3-10
steps) to its late level (median of the last fifth of the run), and the global gradient norm
peaks >= 3x its early level at a step where the weights have already grown >= 1.5x, and is
still >= 2x its early level at the end (a run whose gradient came back down converged). In a
plain net the gradient reaching a layer is a product of the weights above it, so weights
that keep growing carry the gradient up with them. When the loss rises as well, the
exploding-over-training rule (``_training``) reports it with the learning rate first, and
this rule stays silent.

Weight decay shrinks each weight by ``lr * wd * W`` per step (an L2 penalty: Krogh & Hertz,
1992; decoupled from the adaptive scaling in AdamW: Loshchilov & Hutter, 2019). Measured
(docs/treatment.md, ``python scripts/weight_decay.py``): a 6-layer ReLU MLP on digits with 30%
noisy labels, Adam lr 0.01, 1,000 steps: without weight decay the weights grow 3.0x and the
gradient norm peaks at 12x its early level (the rule fires); with AdamW weight_decay=1.0 they
grow 1.0x, the gradient norm peaks lower (2.5 against 3.6) and the rule is silent.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from gradvet.diagnosis._context import has_optimizer
from gradvet.diagnosis._engine import register_rule
from gradvet.diagnosis._measures import nanmedian, total_grad_norm
from gradvet.diagnosis._prescribe import remedy
from gradvet.diagnosis._training import exploding_training_rule
from gradvet.findings import Cause, Finding
from gradvet.record._run import Run

WEIGHT_GROWTH = 2.0  # late / early norm of the weights
WEIGHT_GROWN_AT_PEAK = 1.5  # the weights had grown this much by the gradient's peak
GRAD_PEAK = 3.0  # peak / early global gradient norm
GRAD_LATE = 2.0  # late / early global gradient norm: still high at the end, not a peak the run came down from
MIN_POINTS = 10  # measured steps of the weights' norm (the default profile measures it every 10th step)


def _weight_norms(run: Run) -> Optional[tuple[np.ndarray, np.ndarray, list[int]]]:
    """``(steps, total weight norm per step, indices of the weight parameters)``, or None."""
    s = run.get("param/param_norm")
    idx = [i for i, p in enumerate(run.params) if len(p.get("shape") or []) >= 2]
    if s is None or s.values.ndim != 2 or not idx:
        return None
    v = s.values.astype(np.float64)[:, idx]
    measured = np.isfinite(v).any(axis=1)  # rows of steps that did not measure the norms are all NaN
    if measured.sum() < MIN_POINTS:
        return None
    with np.errstate(all="ignore"):
        tot = np.sqrt(np.sum(v[measured] ** 2, axis=1))  # NaN once a weight is non-finite: the nonfinite rule's case
    return np.asarray(s.steps)[measured], tot, idx


def early_window(n: int) -> int:
    """Steps that make the early level: a tenth of the run, 3 to 10 steps."""
    return max(3, min(10, n // 10))


def growth(x: np.ndarray, k: int) -> tuple[float, float]:
    """``(early, late)``: medians of the first ``k`` and of the last fifth of ``x`` (finite values)."""
    x = np.where(np.isfinite(x), x, np.nan)
    with np.errstate(all="ignore"):
        return nanmedian(x[:k]), nanmedian(x[len(x) - max(k, len(x) // 5):])


@register_rule("weight_growth")
def weight_growth_rule(run: Run) -> list[Finding]:
    if not has_optimizer(run):
        return []
    got = _weight_norms(run)
    G = total_grad_norm(run)
    if got is None or G is None or len(G) != len(run.steps):
        return []
    wsteps, W, idx = got
    w0, w1 = growth(W, early_window(len(W)))
    g0, g1 = growth(G, early_window(len(G)))
    if not (w0 > 0 and w1 >= WEIGHT_GROWTH * w0 and g0 > 0):
        return []
    if not g1 >= GRAD_LATE * g0:  # the gradient came back down: a converging run (Llama memorising a batch
        return []                 # under SGD: weights 2.4x, gradient peak 5.2x, late level 0.25x)
    # the gradient's peak, among the steps where the weights had grown already
    w_at = np.interp(np.asarray(run.steps, dtype=np.float64), wsteps.astype(np.float64), W)
    grown = np.isfinite(G) & (w_at >= WEIGHT_GROWN_AT_PEAK * w0)
    if not grown.any() or np.nanmax(np.where(grown, G, np.nan)) < GRAD_PEAK * g0:
        return []
    if exploding_training_rule(run):  # the loss rose too: that rule names the learning rate first
        return []
    peak = int(np.nanargmax(np.where(grown, G, np.nan)))
    return [_finding(run, idx, wsteps, (w0, w1), (g0, float(G[peak])), int(run.steps[peak]))]


def _grown_layers(run: Run, idx: list[int]) -> list[str]:
    """Layers whose own weights grew >= 2x, input side first."""
    s = run.get("param/param_norm")
    v = s.values.astype(np.float64) if s is not None else np.zeros((0, 0))
    v = v[np.isfinite(v).any(axis=1)]
    k = early_window(len(v))
    names = []
    for layer in run.ordered_layers():
        mine = [i for i in layer.get("params") or [] if i in idx]
        if mine:
            with np.errstate(all="ignore"):
                a, b = growth(np.sqrt(np.sum(v[:, mine] ** 2, axis=1)), k)
            if a > 0 and b >= WEIGHT_GROWTH * a:
                names.append(layer["name"])
    return names


def _finding(run: Run, idx: list[int], wsteps: np.ndarray, w: tuple[float, float], g: tuple[float, float],
             peak_step: int) -> Finding:
    evidence = (f"the weights grew {w[1] / w[0]:.2g}x over training (norm {w[0]:.3g} -> {w[1]:.3g} by step "
                f"{int(wsteps[-1])}) and the global gradient norm with them: it peaked at {g[1] / g[0]:.2g}x its "
                f"starting level ({g[0]:.3g} -> {g[1]:.3g}) at step {peak_step}")
    causes = [Cause("weight_growth", "nothing holds the weights back: each layer's gradient is multiplied by the "
                    "weights above it, so as they grow the gradient grows too", 0.8),
              Cause("learning_rate", "large steps let the weights grow fast", 0.3)]
    rems = [remedy("optim:weight_decay", 0.85, "the weights keep growing"), remedy("clip:norm", 0.6),
            remedy("lr:lower", 0.4)]
    layers = _grown_layers(run, idx) or [x["name"] for x in run.ordered_layers() if x.get("params")][:1]
    return Finding("exploding_gradients", "warning", layers, evidence, causes, rems,
                   {"weight_growth": w[1] / w[0], "grad_peak_growth": g[1] / g[0], "peak_step": peak_step})
