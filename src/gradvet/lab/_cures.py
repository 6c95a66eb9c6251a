"""Experiment 2: the cures for vanishing gradients, side by side on a deep sigmoid MLP.

Every family of the textbook list (:mod:`gradvet.lab._cure_list`: activations, inits,
normalisation and skips, adaptive optimizers, weight decay and dropout, layer-wise
pretraining, a shallower net), each trained with the same data order and number of
steps on digits and recorded with ``gradvet.Monitor``; each gets a one-line reading
computed from its numbers against the baseline's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from torch import nn

from gradvet.data import digits
from gradvet.html import lines_chart, signal_heatmap
from gradvet.html._data import layer_matrix, spans_decades
from gradvet.lab._context import LabContext, maybe, slug
from gradvet.lab._cure_list import BASELINE, CURES, FAMILIES, build
from gradvet.lab._reading import reading, table
from gradvet.lab._train import TrainSpec, accuracy, sample_batches, train
from gradvet.record._run import Run

NAME = "cures"


def n_runs(ctx: LabContext) -> int:
    return len(CURES)


def linear_signal(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, [n, Linear layers])`` of the gradient signal of each Linear layer."""
    layers = [x for x in run.ordered_layers() if x["type"] == "Linear"]
    got = layer_matrix(run, "grad_rms", layers)
    if got is None:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(layers)))
    return got


def run(ctx: LabContext) -> dict[str, Any]:
    data, ce = digits(), nn.functional.cross_entropy
    # lr 0.02: at 0.05 (momentum 0.9) the 10-layer ReLU + He net is at the edge of stability and, for some
    # seeds, blows up and dies within 300 steps (seed 0 on torch 2.14), which is not the point made here
    spec = TrainSpec(steps=ctx.config.cure_steps, lr=0.02, layer_every=10)
    out: dict[str, Any] = {}
    for cure in CURES:
        model = build(cure, ctx.config.cure_depth, data.x_train, data.y_train, ctx.seed)
        path = ctx.record(NAME, slug(cure.label))
        own = replace(spec, optimizer=cure.optimizer, lr=cure.lr or spec.lr, weight_decay=cure.weight_decay)
        result = train(model, sample_batches(data.x_train, data.y_train), ce, own, path, ctx.seed)
        _, sig = linear_signal(ctx.load(ctx.rel(path)))
        out[cure.label] = {
            "family": cure.family,
            "record": ctx.rel(path),
            "optimizer": own.optimizer, "lr": own.lr, "weight_decay": own.weight_decay,
            "linear_layers": int(sig.shape[1]),
            "final_loss": maybe(result.final_loss()),
            "test_accuracy": accuracy(model, data.x_test, data.y_test),
            "first_signal_init": maybe(sig[0, 0]),
            "first_signal_end": maybe(sig[-1, 0]),
            "first_over_last_init": maybe(sig[0, 0] / sig[0, -1]),
            "findings": result.report.kinds(),
        }
        ctx.advance(1)
    for cure in CURES:
        out[cure.label]["reading"] = reading(cure, out[cure.label], out[BASELINE])
    return {"depth": ctx.config.cure_depth, "steps": spec.steps, "lr": spec.lr, "momentum": spec.momentum,
            "cures": out}


def charts(res: dict[str, Any], ctx: LabContext) -> list[Any]:
    runs = {label: ctx.load(r["record"]) for label, r in res["cures"].items()}
    signals = {label: linear_signal(run) for label, run in runs.items()}
    out = []
    for family in FAMILIES:
        labels = [BASELINE] + [k for k, r in res["cures"].items() if r["family"] == family]
        out += _family_charts(family, labels, runs, signals, res)
    first = {label: (s, m[:, 0]) for label, (s, m) in signals.items()}
    out += [
        lines_chart("lab-cures-first-layer", "Gradient signal reaching the first layer over training", first,
                    xlabel="optimizer step", ylabel="RMS of dL/d(first layer output) (log)", logy=True,
                    caption="The first layer learns only as fast as this signal allows: with plain SGD a layer "
                    "whose signal sits many decades below the others keeps its random initial weights."),
        _titled(signal_heatmap(runs[BASELINE], name="lab-cures-heatmap-baseline"),
                "Gradient signal per layer over training: sigmoid baseline"),
        _titled(signal_heatmap(runs["+ all (ReLU, He, BN, skips)"], name="lab-cures-heatmap-all"),
                "Gradient signal per layer over training: + all (ReLU, He, BN, skips)"),
    ]
    return out


def _family_charts(family: str, labels: list[str], runs: dict[str, Run],
                   signals: dict[str, tuple[np.ndarray, np.ndarray]], res: dict[str, Any]) -> list[Any]:
    """Loss curves and the gradient-flow profile at the start of training, baseline included."""
    key = slug(family)
    losses = {k: (runs[k].steps, runs[k].loss) for k in labels}
    flow = {k: (np.arange(1, signals[k][1].shape[1] + 1), signals[k][1][0]) for k in labels}
    logy = spans_decades(np.concatenate([v[1] for v in losses.values()]))
    return [
        lines_chart(f"lab-cures-loss-{key}", f"Training loss: {family}", losses, xlabel="optimizer step",
                    ylabel="training loss" + (" (log)" if logy else ""), logy=logy,
                    caption=f"Same data order and {res['steps']} steps for every variant (SGD lr {res['lr']}, "
                    f"momentum {res['momentum']} unless the variant changes the optimizer). The baseline stays at "
                    "chance (2.30); a cure works when its curve leaves that line."),
        lines_chart(f"lab-cures-flow-{key}", f"Gradient flow at the start of training: {family}", flow,
                    xlabel="Linear layer (1 = input side)", ylabel="RMS of dL/d(layer output) (log)", logy=True,
                    markers=True, caption="The gradient signal reaching each Linear layer at the first recorded "
                    "step (after pretraining, for the pretrained net). A flat line reaches the first layer with a "
                    "usable gradient; the baseline falls by orders of magnitude towards the input."),
    ]


def _titled(chart: Any, title: str) -> Any:
    return replace(chart, title=title) if chart is not None else None


def summary(res: dict[str, Any]) -> str:
    cures = res["cures"]
    parts = [f"{label}: loss {_fmt(r['final_loss'])}, test accuracy {100 * r['test_accuracy']:.0f}%"
             for label, r in cures.items()]
    return f"Depth {res['depth']}, {res['steps']} steps each. " + "; ".join(parts) + "."


def details(res: dict[str, Any]) -> str:
    """The cures table: first-layer signal, loss, accuracy and the one-line reading of each."""
    return table(res["cures"])


def _fmt(x: Any) -> str:
    return "diverged" if x is None else f"{x:.3f}"
