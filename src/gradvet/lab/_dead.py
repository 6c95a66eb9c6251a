"""Experiment 5: dead ReLUs from strongly negative biases, and LeakyReLU as the cure.

A ReLU unit whose pre-activation is negative for every input outputs 0 and passes no
gradient, so it never recovers (Lu et al., 2019, "Dying ReLU and initialization").
Biases initialised far below zero kill most units at once; LeakyReLU (Maas et al., 2013)
keeps a small slope on the negative side, so the same network still learns.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from gradvet.data import digits
from gradvet.html import lines_chart
from gradvet.html._data import layer_matrix
from gradvet.lab._context import LabContext, maybe, slug
from gradvet.lab._models import MLP
from gradvet.lab._train import TrainSpec, accuracy, sample_batches, train
from gradvet.record._run import Run

NAME = "dead"
DEPTH = 3
HEALTHY = "ReLU, bias 0"


def variants(ctx: LabContext) -> dict[str, dict[str, Any]]:
    """label -> MLP keyword arguments (He init throughout)."""
    out: dict[str, dict[str, Any]] = {HEALTHY: {"act": "relu"}}
    for b in ctx.config.dead_biases:
        out[f"ReLU, bias {b:g}"] = {"act": "relu", "bias": b}
        out[f"LeakyReLU(0.1), bias {b:g}"] = {"act": "leaky_relu", "bias": b}
    return out


def n_runs(ctx: LabContext) -> int:
    return len(variants(ctx))


def dead_fractions(run: Run) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(steps, [n, activation layers], names)`` of the dead-unit fraction."""
    layers = [x for x in run.ordered_layers() if x["role"] == "activation"]
    got = layer_matrix(run, "dead_frac", layers)
    names = [x["name"] for x in layers]
    if got is None:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(layers))), names
    return got[0], got[1], names


def run(ctx: LabContext) -> dict[str, Any]:
    data, ce = digits(), nn.functional.cross_entropy
    spec = TrainSpec(steps=ctx.config.dead_steps, lr=0.05, layer_every=10)
    out: dict[str, Any] = {}
    for label, kwargs in variants(ctx).items():
        torch.manual_seed(ctx.seed)
        model = MLP(DEPTH, init="he", **kwargs)
        path = ctx.record(NAME, slug(label))
        result = train(model, sample_batches(data.x_train, data.y_train), ce, spec, path, ctx.seed)
        _, dead, names = dead_fractions(ctx.load(ctx.rel(path)))
        out[label] = {
            "record": ctx.rel(path),
            "final_loss": maybe(result.final_loss()),
            "test_accuracy": accuracy(model, data.x_test, data.y_test),
            "dead_init": dict(zip(names, map(maybe, dead[0]))),
            "dead_end": dict(zip(names, map(maybe, dead[-1]))),
            "findings": result.report.kinds(),
        }
        ctx.advance(1)
    return {"depth": DEPTH, "steps": spec.steps, "runs": out}


def _spread(lines: dict[str, tuple[Any, Any]]) -> str:
    """`` Here the worst layer moves between 47% and 100% after the first step.``: the range the chart
    shows, so the caption says what the reader sees."""
    best: Optional[tuple[float, float, str]] = None
    for label, (_, pct) in lines.items():
        v = np.asarray(pct, dtype=np.float64)[1:]
        v = v[np.isfinite(v)]
        if v.size and (best is None or float(v.mean()) > (best[0] + best[1]) / 2):
            best = (float(v.min()), float(v.max()), label)
    if best is None:
        return ""
    lo, hi, label = best
    if hi - lo < 1.0:
        return f" The worst ({label}) stays at {hi:.0f}% after the first step."
    return f" The worst ({label}) moves between {lo:.0f}% and {hi:.0f}% after the first step."


def charts(res: dict[str, Any], ctx: LabContext) -> list[Any]:
    runs = {label: ctx.load(r["record"]) for label, r in res["runs"].items()}
    dead_lines = {}
    for label, run in runs.items():
        if label.startswith("ReLU"):
            steps, dead, names = dead_fractions(run)
            for j, name in enumerate(names):
                dead_lines[f"{label}: {name}"] = (steps, 100 * dead[:, j])
    return [
        lines_chart("lab-dead-loss", "Training loss", {label: (r.steps, r.loss) for label, r in runs.items()},
                    xlabel="optimizer step", ylabel="training loss",
                    caption="With biases far below zero most ReLU units start dead and the network barely "
                    "learns; the same network with LeakyReLU learns almost like the healthy one."),
        lines_chart("lab-dead-fraction", "Dead ReLU units over training", dead_lines, xlabel="optimizer step",
                    ylabel="% of units dead on the whole batch",
                    caption="Share of each ReLU layer's units that output zero for every example of the batch "
                    f"(no gradient reaches their weights on that batch).{_spread(dead_lines)} A unit off on one "
                    "batch may fire on the next, so the share moves from batch to batch; a unit off on every "
                    "batch gets no gradient ever, and plain SGD cannot revive it. LeakyReLU units cannot die, "
                    "so they are not drawn."),
    ]


def summary(res: dict[str, Any]) -> str:
    parts = []
    for label, r in res["runs"].items():
        dead = [v for v in r["dead_init"].values() if v is not None]
        first = f", {100 * max(dead):.0f}% dead at init (worst layer)" if dead and label.startswith("ReLU") else ""
        parts.append(f"{label}: loss {r['final_loss']:.3f}, test accuracy {100 * r['test_accuracy']:.0f}%{first}")
    return "; ".join(parts) + "."
