"""Rules that need a training run: exploding over training, and stalled layers.

- **exploding over training** (Pascanu et al., 2013): the global gradient norm
  rises >= 10x above its early level while the loss rises (or turns
  non-finite), the signature of a learning rate too large for the curvature.
  A growing gradient norm with a falling loss is ordinary early training and is
  not reported. The early level is read on the first steps that training has not
  already moved the loss from (``early_window``: off the first loss by 2x ends
  the window): SGD can memorise a batch in one step, and a converged net's
  gradients are ~0, so their ratios to each other are noise; growth is measured
  against the untrained net's gradient (torchvision ConvNeXt-T: 43.5 at step 0,
  then 5e-5 .. 0.3 at losses 1e-7 .. 1.5e-3, is no explosion).
  A loss whose finite values rise >= 100x above its early level is reported
  whatever the gradient norm does: in a normalised net the weights
  grow and their gradients shrink while the updates overshoot.
- **stalled layers**: a layer whose relative update ||dW||/||W|| stays below
  1/1000 of the median layer's (median over measured updates). Relative to the
  other layers, so a converged net whose updates are all tiny is not flagged, and
  judged on the updates before the loss fell to 1/1000 of its early level (after
  that every update is rounding noise); a layer on a branch behind a layer scale
  (a gain starting at 1e-6) is allowed that much less; an update step on which
  the median layer moves by more than its own norm is a blow-up, not a reading
  (HF LeViT under SGD: 7e7 of its norm at step 0, a NaN loss at step 1);
  parameters that receive gradients but are in no optimizer param group are
  stalled by construction. A stalled layer whose gradients sit below its adaptive
  optimizer's ``eps`` (per-entry RMS < eps) is blamed on that: Adam's step is
  ``lr * m / (sqrt(v) + eps)`` (Kingma & Ba, 2015, Algorithm 1), about ``lr * g / eps``
  there, so weight decay is all that moves it (transformers' MobileBERT at its own
  init under AdamW: layer-0 query/key gradients ~1e-10 per entry, 1e-5 of their norm
  per step; with eps 1e-12 they move 1.6e-2). Parameters that never received a finite non-zero
  gradient are *unused* (the loss does not depend on them: SqueezeBERT's pooler
  under a token loss, XLNet's ``mask_emb``): their update is 0 because nothing
  asks them to move, which says nothing about the optimizer; they are left out
  of the rule and named in an ``info``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from gradvet.diagnosis._context import adaptive, has_optimizer, norm_layers
from gradvet.diagnosis._engine import register_rule
from gradvet.diagnosis._measures import (
    early_loss,
    early_window,
    layer_update_ratios,
    nanmedian,
    total_grad_norm,
    unused_params,
)
from gradvet.diagnosis._nonfinite import bad_param_steps
from gradvet.diagnosis._prescribe import remedy
from gradvet.diagnosis._trunk import smallest_gate
from gradvet.findings import Cause, Finding
from gradvet.record._run import Run

GROWTH, STALL = 1.0, -3.0  # log10 thresholds
CONVERGED = 1e-3  # the loss at this fraction of its early level: converged, updates are rounding noise
MIN_UPDATES = 3  # measured updates before convergence needed to call a layer stalled
LOSS_DIVERGED = 100.0  # the loss this many times its starting level: diverged
MAX_STEP = 1.0  # a median layer moving more than its own norm in one update: a blown-up step, no stall reading


def _layer_growth(run: Run, k: int, peak: int) -> list[str]:
    """Layers whose own gradient norm at the peak step is >= 10x its starting level."""
    s = run.get("param/grad_norm")
    if s is None:
        return []
    grown = []
    v = s.values.astype(np.float64)
    for layer in run.ordered_layers():
        idx = layer.get("params") or []
        if not idx:
            continue
        with np.errstate(all="ignore"):
            g = np.sqrt(np.nansum(v[:, idx] ** 2, axis=1))
            early = nanmedian(np.where(np.isfinite(g[:k]), g[:k], np.nan))
        if early > 0 and np.isfinite(g[peak]) and g[peak] / early >= 10:
            grown.append(layer["name"])
    return grown


@register_rule("exploding_training")
def exploding_training_rule(run: Run) -> list[Finding]:
    G = total_grad_norm(run)
    loss = run.loss.astype(np.float64)
    if G is None or len(G) < 4 or len(loss) != len(G):
        return []
    G = np.where(np.isfinite(G), G, np.nan)
    bad = bad_param_steps(run)
    if len(bad) == len(G):
        # a step where some gradient is NaN/Inf has a partial norm: the growth is read up to the step before
        G[bad] = np.nan
    # the reference: the first steps, but only those the loss has not already left (early_window)
    k = max(1, min(3, len(G) // 10, early_window(loss, 3)))
    finite_loss = np.isfinite(loss)
    if finite_loss.any() and not finite_loss.all():
        first_bad = int(np.argmin(finite_loss)) if finite_loss[0] else 0
        if first_bad <= 2 * k:  # diverged within the reference window: the first step is the reference
            k = 1
    with np.errstate(all="ignore"):
        early_g, early_l = nanmedian(G[:k]), nanmedian(loss[:k])
    if not np.isfinite(early_g) or early_g <= 0 or not np.isfinite(G[k:]).any():
        return []
    peak = int(k + np.nanargmax(G[k:]))
    growth = float(np.log10(G[peak] / early_g))
    went_nonfinite = bool(np.isfinite(early_l) and (~np.isfinite(loss[k:])).any())
    with np.errstate(all="ignore"):
        late = loss[max(k, len(loss) - max(3, len(loss) // 5)):]
        late_l = np.nanmax(late[np.isfinite(late)]) if np.isfinite(late).any() else np.inf
    rising = went_nonfinite or (np.isfinite(early_l) and late_l > 1.5 * early_l)
    # A loss that rises by orders of magnitude diverges whatever the gradient norm does: in a normalised
    # net the weights grow and their gradients shrink (scale invariance) while the updates overshoot.
    # (finite values only: a NaN born from one bad batch is not a divergence, the nonfinite rule names it)
    with np.errstate(all="ignore"):
        after = loss[k:]
        peak_l = np.max(after[np.isfinite(after)]) if np.isfinite(after).any() else np.nan
    diverged = bool(np.isfinite(early_l) and early_l > 0 and peak_l >= LOSS_DIVERGED * early_l)
    if not ((growth >= GROWTH and rising) or diverged):
        return []
    lrs = sorted({float(p["lr"]) for p in run.params if p.get("lr") is not None})
    lr_txt = f" (learning rate {', '.join(f'{x:g}' for x in lrs)})" if lrs else ""
    end = "non-finite" if went_nonfinite else f"{late_l:.3g}"
    if diverged and growth < GROWTH:
        end = f"{peak_l:.3g}" + (", then non-finite" if went_nonfinite else "")
    elif diverged and not rising:  # back down by the end (timm HardCoreNAS-A, SGD: 2.78 -> 809 -> 0)
        end = f"{late_l:.3g} after peaking at {peak_l:.3g}"
    if growth >= GROWTH:
        evidence = (f"the global gradient norm rose {10 ** growth:.3g}x above its starting level by step "
                    f"{int(run.steps[peak])} while the loss went from {early_l:.3g} to {end}")
    else:
        g_txt = (f"peaked at {10 ** growth:.3g}x its starting level at step {int(run.steps[peak])}" if growth > 0
                 else f"stayed below its starting level, {early_g:.3g}")
        evidence = f"the loss diverged: from {early_l:.3g} to {end} (the global gradient norm {g_txt})"
    causes = [Cause("learning_rate", f"steps too large for the loss curvature{lr_txt}: each update overshoots "
                    "and the next gradient is larger", 0.9),
              Cause("no_clipping", "nothing bounds the update when a gradient spikes", 0.5)]
    rems = [remedy("lr:lower", 0.9), remedy("clip:norm", 0.8), remedy("optim:adam", 0.3)]
    if not norm_layers(run):
        rems.insert(2, remedy("norm:batch", 0.5, "Ioffe & Szegedy (2015) train with far higher learning rates "
                                                 "once each layer's input is normalised"))
    layers = _layer_growth(run, k, peak) or [x["name"] for x in run.ordered_layers() if x.get("params")][:1]
    return [Finding("exploding_gradients", "error" if went_nonfinite or diverged or growth >= 2 else "warning", layers,
                    evidence, causes, rems, {"log10_growth": growth, "went_nonfinite": went_nonfinite})]


@register_rule("stalled")
def stalled_rule(run: Run) -> list[Finding]:
    if not has_optimizer(run):
        return []
    unused = unused_params(run)
    findings = _unused(run, unused)
    done = converged_at(run)
    u = run.get("param/update_ratio")
    if done is not None and (u is None or int((np.asarray(u.steps) < done).sum()) < MIN_UPDATES):
        return findings + _orphans(run)  # the loss fell to nothing at once: no update says anything about a layer
    names, r = layer_update_ratios(run, before=done, skip=unused)
    r = r[~_blown_up(r)] if r.size else r
    measured = [j for j in range(len(names)) if np.isfinite(r[:, j]).any()]
    if len(measured) >= 2:
        ratios = {names[j]: float(nanmedian(r[:, j])) for j in measured}
        rel = _relative_to_median_layer(r[:, measured])
        med = float(np.median([v for v in ratios.values() if v > 0] or [0.0]))
        # embedding tables move only the rows a batch uses: a small relative update is normal there
        sparse = {x["name"] for x in run.layers if "Embedding" in x["type"]}
        # a branch behind a layer scale (ConvNeXt, CaiT: a gain starting at 1e-6) gets its gradient through
        # that gain, so its updates start that much smaller by design, until the gain grows
        gate = smallest_gate(run)
        gated = {x["name"] for x in run.layers if (x.get("graph") or {}).get("branch")} if gate else set()
        allowance = {n: float(np.log10(gate[1])) if gate and n in gated else 0.0 for n in ratios}
        stalled = {
            n: ratios[n] for n, v in zip(ratios, rel)
            if ratios[n] <= 0 or (n not in sparse and v <= STALL + allowance[n])
        }
        if stalled and med > 0:
            findings.append(_stalled(run, stalled, med, done))
    return findings + _orphans(run)


def _blown_up(r: np.ndarray) -> np.ndarray:
    """Update steps (rows of ``r``) on which the median layer moved by more than its own norm.

    Such a step is a divergence, not a reading of which layer learns: HF LeViT under SGD (lr 0.05) has a
    step-0 gradient norm of 1.5e13, its median layer moves 7e7 of its norm and the loss is NaN at step 1;
    a layer moving "only" 67x its norm is not stalled. The exploding and non-finite rules report the run;
    the stalled rule leaves these steps out (a healthy step moves a layer by 1e-4 .. 1e-1 of its norm)."""
    with np.errstate(all="ignore"):
        med = nanmedian(np.where(r > 0, r, np.nan), axis=1)
        return np.asarray(med > MAX_STEP)


def _relative_to_median_layer(r: np.ndarray) -> np.ndarray:
    """Per layer (columns of ``r``, NaN where not measured), log10 of its median update ratio over the
    steps it was measured on, over the median layer's on those same steps.

    The same steps, so that a layer measured on fewer steps (its gradient was exactly zero on the
    others) is compared like with like: under Adam every update shrinks as the loss falls (torchvision
    Swin-V2: the median layer 2.5e-2 at step 0, 2e-3 at step 50), and a layer read only late would
    otherwise look stalled against everyone's early updates. Where every layer is measured on every
    step this is the plain comparison of medians."""
    out = np.full(r.shape[1], np.nan)
    ok = np.isfinite(r)
    for pattern in {tuple(col) for col in ok.T}:
        rows = np.asarray(pattern, dtype=bool)
        if not rows.any():
            continue
        cols = [j for j in range(r.shape[1]) if tuple(ok[:, j]) == pattern]
        meds = nanmedian(r[rows], axis=0)
        ref = nanmedian(np.where(meds > 0, meds, np.nan))
        with np.errstate(all="ignore"):
            out[cols] = np.log10(np.maximum(meds[cols], 1e-300) / ref)
    return out


def converged_at(run: Run) -> Optional[int]:
    """The first step whose loss is <= 1/1000 of its early level (:func:`early_loss`), or None.

    From there every gradient is at the level of rounding: layers' update ratios differ by orders of
    magnitude without meaning anything (timm's ConvNeXt memorising a batch: loss 2.4 -> 1e-4 in 4 SGD
    steps, median update 5.5e-8, its first LayerNorms 1.8e-11; torchvision's ConvNeXt-S: 2.4 -> 1.1e-6
    in one SGD step, its layer-scaled LayerNorms' step-0 update 0 in float32)."""
    loss = np.asarray(run.loss, dtype=np.float64)
    ok = np.isfinite(loss)
    if ok.sum() < 3:
        return None
    early = early_loss(loss)
    if not early > 0:
        return None
    hit = np.where(ok & (loss <= CONVERGED * early))[0]
    return int(run.steps[hit[0]]) if len(hit) else None


def _unused(run: Run, unused: set[int]) -> list[Finding]:
    """An ``info`` naming the layers none of whose parameters ever received a gradient."""
    layers = [x["name"] for x in run.ordered_layers()
              if x.get("params") and all(i in unused for i in x["params"])]
    if not unused or not layers:
        return []
    names = [str(run.params[i].get("name", i)) for i in sorted(unused)]
    return [Finding(
        "stalled_layers", "info", layers,
        f"{len(names)} parameter(s) never received a gradient ({', '.join(names[:4])}"
        f"{' ...' if len(names) > 4 else ''}): the loss does not use them, so they are unused rather than "
        "stalled, and left out of the update comparison",
        (Cause("unused", "the forward pass does not reach the loss through these parameters (a pooler or head "
               "the loss does not read, an embedding for an input not given)", 0.9),),
        (), {"unused": names},
    )]


def _orphans(run: Run) -> list[Finding]:
    findings = []
    orphans = _not_in_optimizer(run)
    if orphans:
        findings.append(Finding(
            "stalled_layers", "warning", orphans,
            f"{len(orphans)} layer(s) receive gradients but no optimizer param group holds their parameters, "
            "so they never change",
            (Cause("not_in_optimizer", "the optimizer was built from a subset of model.parameters()", 0.9),),
            (remedy("optim:param_groups", 0.9),),
        ))
    return findings


def below_eps(run: Run, layers: list[str], before: Optional[int] = None) -> dict[str, tuple[float, float]]:
    """Layer -> (largest per-entry gradient RMS of its parameters, smallest eps) for the ``layers`` whose every
    parameter's gradient sits below the ``eps`` of the optimizer that owns it (medians over the steps before
    ``before``; a parameter without a recorded ``eps``, under SGD say, leaves its layer out).

    Example:
        >>> from gradvet.record._run import Run
        >>> run = Run()
        >>> run.params = [{"name": "q.weight", "layer": "q", "numel": 100, "optimizer": {"eps": 1e-8}}]
        >>> run.layers = [{"name": "q", "index": 0, "params": [0]}]
        >>> run.add("param/grad_norm", np.array([0, 1]), np.array([[1e-9], [3e-9]]))
        >>> rms, eps = below_eps(run, ["q"])["q"]  # median 2e-9 over sqrt(100) entries
        >>> round(rms / 1e-10, 6), eps
        (2.0, 1e-08)
    """
    s = run.get("param/grad_norm")
    if s is None or not len(s.steps):
        return {}
    rows = s.values.astype(np.float64)
    if before is not None and (np.asarray(s.steps) < before).any():
        rows = rows[np.asarray(s.steps) < before]
    with np.errstate(all="ignore"):
        med = nanmedian(np.where(np.isfinite(rows), rows, np.nan), axis=0)
    out: dict[str, tuple[float, float]] = {}
    for layer in run.layers:
        idx = layer.get("params") or []
        if layer["name"] not in layers or not idx:
            continue
        found = []
        for i in idx:
            p = run.params[i]
            eps, numel = (p.get("optimizer") or {}).get("eps"), p.get("numel")
            if not eps or not numel or i >= len(med) or not np.isfinite(med[i]):
                break
            rms = float(med[i]) / float(np.sqrt(numel))
            if rms >= eps:
                break
            found.append((rms, float(eps)))
        else:
            out[layer["name"]] = (max(r for r, _ in found), min(e for _, e in found))
    return out


def _stalled(run: Run, stalled: dict[str, float], med: float, before: Optional[int] = None) -> Finding:
    lr_of = {}
    for layer in run.layers:
        lrs = [run.params[i].get("lr") for i in layer.get("params") or [] if run.params[i].get("lr") is not None]
        if lrs:
            lr_of[layer["name"]] = min(lrs)
    all_lrs = [v for v in lr_of.values() if v is not None]
    med_lr = float(np.median(all_lrs)) if all_lrs else None
    causes = []
    tiny = below_eps(run, list(stalled), before)
    if tiny:
        rms, eps = max(v[0] for v in tiny.values()), min(v[1] for v in tiny.values())
        shown = ", ".join(repr(n) for n in list(tiny)[:4]) + (" ..." if len(tiny) > 4 else "")
        causes.append(Cause("below_eps", f"the gradients of {shown} (RMS up to {rms:.1g} per entry) sit below the "
                            f"optimizer's eps ({eps:.0e}): its step is lr * m / (sqrt(v) + eps), about lr * g / eps "
                            "here, so weight decay is all that moves them", 0.95))
    low = [n for n in stalled if med_lr and lr_of.get(n) is not None and lr_of[n] <= 1e-3 * med_lr]
    if low:
        causes.append(Cause("param_group_lr", f"{', '.join(repr(n) for n in low)} sit in a param group with "
                            f"learning rate {min(lr_of[n] for n in low):.1g}, vs {med_lr:.1g} for the others", 0.95))
    causes.append(Cause("starved", "the gradient reaching these layers is far smaller than elsewhere "
                        "(see vanishing gradients)", 0.6 if not (low or tiny) else 0.3))
    names = [x["name"] for x in run.ordered_layers() if x["name"] in stalled]
    ev = "; ".join(f"{n!r} moves {stalled[n]:.1e} of its norm per update" for n in names)
    ev += f" (median layer: {med:.1e})"
    rems = [remedy("optim:param_groups", 0.9 if low else 0.4)]
    if tiny:
        rems.insert(0, remedy("optim:eps", 0.9))
    if not adaptive(run, names):  # an adaptive optimizer is what the layers already have
        rems.append(remedy("optim:adam", 0.6))
    return Finding("stalled_layers", "warning", names, ev, causes, rems, {"update_ratio": stalled, "median": med})


def _not_in_optimizer(run: Run) -> list[str]:
    s = run.get("param/grad_norm")
    if s is None or not len(s.steps):
        return []
    has_grad = np.asarray(np.isfinite(s.values.astype(np.float64)).any(axis=0))
    orphan_layers = []
    for layer in run.ordered_layers():
        idx = layer.get("params") or []
        if idx and all(run.params[i].get("lr") is None and has_grad[i] for i in idx):
            orphan_layers.append(layer["name"])
    return orphan_layers
