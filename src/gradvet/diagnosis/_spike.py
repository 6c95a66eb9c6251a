"""A loss spike before a finding's onset: the learning rate, not the architecture, is its cause.

A gradient that vanishes from the first step is the net's (its depth, activations,
init, missing norms). One that vanishes only *after* the loss jumped is what a step
too large did to a net that was training: a step over a steep cliff of the loss
throws the parameters far away (Pascanu et al., 2013, sec. 3; Goodfellow et al.,
2016, sec. 8.2.4), and large transformers that train well at one learning rate
spike and stall or diverge at a higher one (Zhang et al., 2022, the OPT logbook;
Chowdhery et al., 2022, PaLM, sec. 5.1; Wortsman et al., 2023, who reproduce such
instabilities in small transformers by raising the learning rate: attention-logit
growth and output-logit divergence). The remedies are the step's: a lower learning
rate or a warm-up, and clipping; inserting norms or skips into a net that has them
changes nothing. That last holds with or without a spike: the depth and trunk rules pass every finding's
remedies through :func:`drop_present` (no ``norm:*`` for a normalised net, no ``residual*`` along a
branched trunk, no ``optim:adam`` under Adam), and the dead rule names a spike before units died
(``gradvet.diagnosis._units``).

**Spike**: a finite loss ``loss[t] >= SPIKE * median(the up to SPIKE_WINDOW finite
losses before it)`` (at least 3 of them), that is also back at or above the run's
early level (:func:`gradvet.diagnosis._measures.early_loss`): the step undid what
the net had learnt. The second condition leaves out a fitted loss whose rounding
noise doubles (timm MobileNet-V3 under SGD: 1e-5 -> 5e-3). Chosen on the 476 saved
records of the training sweeps (AdamW and SGD, default, full and AMP profiles,
40-60 steps on a fixed batch): among the losses back above the early level, each
run's largest ratio to that median is 1.02-1.71 in 9 runs, nets still wobbling at
their starting loss (torchvision Swin-V2 2.03 -> 3.68 at step 4; Inception-v3
8.56 -> 11.35 over its first steps; RegNet-Y-800MF 0.63 -> 2.15 -> 3.69) and 3.27 or
more in 32, nets that had fallen and jumped back (timm Hiera 0.20 -> 4.01 at step 6,
3.8x; ResNeXt-50 under SGD; VGG under SGD to 1e27), and none in between: ``SPIKE``
= 2.5 sits near the middle of that gap (geometric 2.4). The window makes a long run's
spike read against where its loss is now rather than where it started; in those
sweeps (at most 60 steps) it changes no ratio above 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from gradvet.diagnosis._context import adaptive
from gradvet.diagnosis._measures import EARLY, early_loss, nanmedian
from gradvet.diagnosis._prescribe import remedy
from gradvet.findings import Cause, Remedy
from gradvet.record._run import Run

#: a loss this many times the median of the losses just before it (and back above the early level) spikes
SPIKE = 2.5
#: the median a loss is compared with is over at most this many finite losses before it
SPIKE_WINDOW = 20
#: the rule's own remedies (the architecture's, the init's) keep this share of their score after a spike,
#: so that all of them (at most 0.95) rank after the learning rate's
DEMOTE = 0.8


@dataclass(frozen=True)
class Spike:
    """The loss at ``position`` (of ``run.loss``; step ``step``) against the median before it."""

    position: int
    step: int
    loss: float
    median: float

    @property
    def ratio(self) -> float:
        return self.loss / self.median


def loss_spikes(loss: np.ndarray) -> list[tuple[int, float, float]]:
    """Each spike of ``loss`` as ``(position, loss, median before it)``; see the module docstring.

    Example:
        >>> loss_spikes(np.array([2.3, 1.5, 1.3, 0.8, 0.7, 0.2, 4.0, 1.1]))
        [(6, 4.0, 1.05)]
    """
    loss = np.asarray(loss, dtype=np.float64)
    early = early_loss(loss)
    ok = np.where(np.isfinite(loss))[0]
    vals = loss[ok]
    med = np.full(len(vals), np.nan)  # med[k]: the median of the up to SPIKE_WINDOW finite losses before k
    for k in range(EARLY, min(len(vals), SPIKE_WINDOW)):
        med[k] = np.median(vals[:k])
    if len(vals) > SPIKE_WINDOW:  # full windows at once: a 100k-step record in 0.1 s, not 1.2 s
        med[SPIKE_WINDOW:] = np.median(np.lib.stride_tricks.sliding_window_view(vals[:-1], SPIKE_WINDOW), axis=1)
    with np.errstate(invalid="ignore"):
        hit = np.where((med > 0) & (vals >= SPIKE * med) & (vals >= early))[0]
    return [(int(ok[k]), float(vals[k]), float(med[k])) for k in hit]


@dataclass(frozen=True)
class SpikeCause:
    """A finding's ``loss_spike`` cause, the remedies it puts first, and the sentence and data it adds."""

    spike: Spike
    onset: int  # the first step read at or past the spike whose reading crosses the rule's threshold
    cause: Cause
    remedies: list[Remedy]

    @property
    def evidence(self) -> str:
        return f"; it began at step {self.onset}, after the loss spiked at step {self.spike.step}"

    def data(self) -> dict[str, Any]:
        s = self.spike
        return {"step": s.step, "loss": s.loss, "median_before": s.median, "ratio": round(s.ratio, 3),
                "onset_step": self.onset}


def spike_cause(run: Run, steps: np.ndarray, low: np.ndarray, cut: float, *, rising: bool = False,
                what: str = "the signal vanished") -> Optional[SpikeCause]:
    """The ``loss_spike`` cause of a finding whose per-step reading ``low`` (at ``steps``; NaN where unread)
    crosses ``cut`` only after a loss spike: the first spike before which every reading was on the healthy
    side of ``cut`` and from whose step on the readings' median is across it. None when there is no such
    spike: a net that read sick at any step before the spike (at init, say) keeps its own causes.

    Crossing is falling to ``cut`` or below (a vanishing signal, log10), or with ``rising`` reaching ``cut`` or
    above (a share of dead units); ``what`` names the change in the cause's text ("the signal vanished")."""
    steps, low = np.asarray(steps), np.asarray(low, dtype=np.float64)
    if rising:  # one comparison for both: a reading that rises to cut is its negative falling to -cut
        low, cut = -low, -cut
    run_steps = np.asarray(run.steps)
    for t, x, m in loss_spikes(run.loss):
        spike = Spike(t, int(run_steps[t]), x, m)
        before, after = low[steps < spike.step], low[steps >= spike.step]
        if not (np.isfinite(before).any() and np.isfinite(after).any()):
            continue
        if bool(np.all(before[np.isfinite(before)] > cut)) and nanmedian(after) <= cut:
            onset = int(steps[(steps >= spike.step) & (low <= cut)][0])
            return SpikeCause(spike, onset, *_cause(run, spike, onset, what))
    return None


def _cause(run: Run, spike: Spike, onset: int, what: str) -> tuple[Cause, list[Remedy]]:
    lrs = sorted({float(p["lr"]) for p in run.params if p.get("lr") is not None})
    lr_txt = f" at learning rate {', '.join(f'{x:g}' for x in lrs)}" if lrs else ""
    text = (f"the loss spiked to {spike.loss:.3g} at step {spike.step}, {spike.ratio:.2g}x the median "
            f"{spike.median:.3g} of the losses before it, and {what} from step {onset} on")
    cause = Cause("loss_spike", f"{text}: a step too large{lr_txt} threw the net off what it had learnt "
                  "(a cliff of the loss, Pascanu et al., 2013); the readings before the spike were healthy",
                  0.95)
    rems = [remedy("lr:lower", 0.95, f"the loss spiked {spike.ratio:.2g}x at step {spike.step}, before "
                   f"{what}"), remedy("clip:norm", 0.9, "a clipped step cannot jump that far")]
    return cause, rems


def drop_present(run: Run, remedies: list[Remedy], *, normalised: bool, residual: bool) -> list[Remedy]:
    """``remedies`` (their order kept) less those the net has already: ``norm:*`` for a normalised net,
    ``residual*`` for one whose trunk has branches joining it, ``optim:adam`` under an Adam optimizer
    (every parameter's param group has an ``eps``: :func:`gradvet.diagnosis._context.adaptive`). Inserting
    norms or skips into a net that has them changes nothing.

    Example:
        >>> from gradvet.diagnosis._prescribe import remedy
        >>> run = Run(meta={"optimizer": "AdamW"})
        >>> run.params, run.layers = [{"name": "w", "optimizer": {"eps": 1e-8}}], [{"name": "fc", "params": [0]}]
        >>> rems = [remedy("norm:layer", 0.7), remedy("residual", 0.6), remedy("optim:adam", 0.3)]
        >>> [r.id for r in drop_present(run, rems, normalised=True, residual=False)]
        ['residual']
    """
    adam = adaptive(run)
    return [r for r in remedies if not (normalised and r.id.startswith("norm:"))
            and not (residual and r.id.startswith("residual")) and not (adam and r.id == "optim:adam")]


def after_spike(remedies: list[Remedy], lr_remedies: list[Remedy]) -> list[Remedy]:
    """``lr_remedies`` first, then the rule's own ``remedies`` (already less those the net has,
    :func:`drop_present`) at :data:`DEMOTE` of their score, less those ``lr_remedies`` names."""
    have = {x.id for x in lr_remedies}
    kept = [Remedy(r.id, r.explanation, r.snippet, DEMOTE * r.score) for r in remedies if r.id not in have]
    return list(lr_remedies) + kept
