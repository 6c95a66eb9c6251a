"""Experiment 3: exploding gradients and the clipping that contains them.

Two ways to blow up a healthy 10-layer ReLU MLP (He init) trained with plain SGD: weights
initialised 2x too large (activations and gradients grow about 2x per layer), and a
learning rate 20x too large. Each runs with no clipping, global-norm clipping (Pascanu et
al., 2013), value clipping and adaptive gradient clipping (AGC, Brock et al., 2021).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from gradvet.data import digits
from gradvet.html import bar_chart, lines_chart
from gradvet.html._data import spans_decades
from gradvet.lab._context import LabContext, maybe, slug
from gradvet.lab._models import MLP
from gradvet.lab._train import TrainSpec, accuracy, sample_batches, train
from gradvet.record._run import Run
from gradvet.remedies import adaptive_clip, clip_by_global_norm, clip_by_value

NAME = "exploding"
DEPTH = 10
#: case -> (MLP keyword arguments, learning rate).
CASES: dict[str, tuple[dict[str, Any], float]] = {
    "over-scaled init (2x He)": ({"scale": 2.0}, 0.1),
    "learning rate too large (1.0)": ({}, 1.0),
}
CLIPS = ("no clipping", "norm clip (1.0)", "value clip (0.01)", "AGC (0.01)")


def n_runs(ctx: LabContext) -> int:
    return len(CASES) * len(CLIPS)


def total_grad_norm(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Global L2 norm of all parameter gradients per step (before clipping)."""
    s = run.series("param/grad_norm")
    return s.steps, np.sqrt(np.nansum(s.values.astype(np.float64) ** 2, axis=1))


def run(ctx: LabContext) -> dict[str, Any]:
    data, ce = digits(), nn.functional.cross_entropy
    # Factories, not objects: each run gets a fresh transform (their state counts clips).
    clips = dict(zip(CLIPS, (None, lambda: clip_by_global_norm(1.0), lambda: clip_by_value(0.01),
                             lambda: adaptive_clip(0.01))))
    out: dict[str, Any] = {}
    for case, (kwargs, lr) in CASES.items():
        out[case] = {}
        for clip_name, clip in clips.items():
            torch.manual_seed(ctx.seed)
            model = MLP(DEPTH, "relu", "he", **kwargs)
            spec = TrainSpec(steps=ctx.config.explode_steps, lr=lr, momentum=0.0, layer_every=10, clip=clip() if clip else None)
            path = ctx.record(NAME, f"{slug(case)}--{slug(clip_name)}")
            result = train(model, sample_batches(data.x_train, data.y_train), ce, spec, path, ctx.seed)
            _, norms = total_grad_norm(ctx.load(ctx.rel(path)))
            finite = norms[np.isfinite(norms)]
            out[case][clip_name] = {
                "record": ctx.rel(path),
                "lr": lr,
                "diverged_at": result.diverged_at,
                "final_loss": maybe(result.final_loss()),
                "test_accuracy": accuracy(model, data.x_test, data.y_test) if result.diverged_at is None else None,
                "max_grad_norm": maybe(finite.max()) if finite.size else None,
                "findings": result.report.kinds(),
            }
            ctx.advance(1)
    return {"depth": DEPTH, "steps": ctx.config.explode_steps, "cases": out}


def charts(res: dict[str, Any], ctx: LabContext) -> list[Any]:
    out = []
    for i, (case, runs) in enumerate(res["cases"].items()):
        loaded = {clip: ctx.load(r["record"]) for clip, r in runs.items()}
        losses = {clip: (run.steps, run.loss) for clip, run in loaded.items()}
        logy = spans_decades(np.concatenate([v[1] for v in losses.values()]))
        out.append(lines_chart(
            f"lab-exploding-loss-{i}", f"Training loss: {case}", losses, xlabel="optimizer step",
            ylabel="training loss" + (" (log)" if logy else ""), logy=logy,
            caption="Without clipping the loss turns non-finite within a few steps and the run stops (the line "
            "ends). Clipped runs keep going; whether they also learn depends on the cause."))
        out.append(lines_chart(
            f"lab-exploding-norm-{i}", f"Gradient norm before clipping: {case}",
            {clip: total_grad_norm(run) for clip, run in loaded.items()}, xlabel="optimizer step",
            ylabel="‖∇L‖ over all parameters (log)", logy=True,
            caption="The global gradient norm that gradvet measured before the clip was applied. Clipping "
            "bounds each step, not the gradient: a too-large init still produces huge gradients, clipped."))
    groups = {case: {clip: (np.inf if r["final_loss"] is None else r["final_loss"]) for clip, r in runs.items()}
              for case, runs in res["cases"].items()}
    out.append(bar_chart(
        "lab-exploding-final", "Final training loss by clipping method", groups, ylabel="training loss (log)",
        logy=True, hline=(2.303, "chance (2.30)"),
        caption="Mean training loss over the last 10 steps; hatched bars diverged (non-finite loss). Clipping "
        "turns a divergence into a finite run; with a too-large learning rate that is the whole cure, with an "
        "over-scaled init the loss stays high because the weights themselves are wrong (re-initialise instead)."))
    return out


def summary(res: dict[str, Any]) -> str:
    parts = []
    for case, runs in res["cases"].items():
        items = [f"{clip}: " + (f"diverged at step {r['diverged_at']}" if r["diverged_at"] is not None
                                else f"loss {r['final_loss']:.3f}") for clip, r in runs.items()]
        parts.append(f"<b>{case}</b>: " + "; ".join(items))
    return "<br>".join(parts)
