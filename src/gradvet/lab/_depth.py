"""Experiment 1: depth x activation x init (Glorot & Bengio, 2010; He et al., 2015).

For sigmoid, tanh and ReLU MLPs of several depths, with PyTorch's default init, Xavier
and He init: the gradient signal reaching each layer at initialisation (``gradvet.check``)
and the training loss after a fixed number of SGD steps on digits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

import gradvet
from gradvet.data import digits
from gradvet.html import heatmap_chart, lines_chart
from gradvet.html._svg import PALETTE
from gradvet.lab._context import LabContext, maybe
from gradvet.lab._models import INITS, MLP
from gradvet.lab._train import TrainSpec, accuracy, sample_batches, train

ACTS = ("sigmoid", "tanh", "relu")
NAME = "depth"


def key(act: str, init: str, depth: int) -> str:
    return f"{act}/{init}/{depth}"


def n_runs(ctx: LabContext) -> int:
    return len(ACTS) * len(INITS) * len(ctx.config.depths)


def linear_signals(report: Any) -> list[float]:
    """Gradient signal (RMS of dL/d output) of each Linear layer, input side first."""
    return [float(x.signal_rms) if x.signal_rms is not None else float("nan")
            for x in report.layers if x.type == "Linear"]


def run(ctx: LabContext) -> dict[str, Any]:
    """Check and train every cell of the grid; return its key numbers."""
    data, ce = digits(), nn.functional.cross_entropy
    probe = (data.x_train[:256], data.y_train[:256])
    # lr 0.03: at 0.05 (momentum 0.9) the 10-layer ReLU + He net sits at the edge of stability and diverges
    # on some torch/numpy versions (loss 3.66 with torch 2.14.1), which hid the lesson; at 0.03 it learns
    spec = TrainSpec(steps=ctx.config.depth_steps, lr=0.03, layer_every=max(1, ctx.config.depth_steps // 5))
    cells: dict[str, Any] = {}
    for depth in ctx.config.depths:
        for act in ACTS:
            for init in INITS:
                torch.manual_seed(ctx.seed)
                model = MLP(depth, act, init)
                signals = linear_signals(gradvet.check(model, probe, ce))
                path = ctx.record(NAME, f"{act}-{init}-d{depth}")
                result = train(model, sample_batches(data.x_train, data.y_train), ce, spec, path, ctx.seed)
                cells[key(act, init, depth)] = {
                    "record": ctx.rel(path),
                    "signal_init": [maybe(v) for v in signals],
                    "first_signal": maybe(signals[0]),
                    "first_over_last": maybe(signals[0] / signals[-1]) if signals[-1] else None,
                    "final_loss": maybe(result.final_loss()),
                    "test_accuracy": accuracy(model, data.x_test, data.y_test),
                    "findings": result.report.kinds(),
                }
                ctx.advance(1)
    return {"depths": list(ctx.config.depths), "acts": list(ACTS), "inits": list(INITS),
            "steps": spec.steps, "lr": spec.lr, "momentum": spec.momentum, "cells": cells}


def _grid(res: dict[str, Any], field: str, missing: float = np.nan) -> tuple[np.ndarray, list[str]]:
    rows, labels = [], []
    for act in res["acts"]:
        for init in res["inits"]:
            vals = [res["cells"][key(act, init, d)][field] for d in res["depths"]]
            rows.append([missing if v is None else v for v in vals])
            labels.append(f"{act}, {init} init")
    return np.array(rows, dtype=np.float64), labels


def charts(res: dict[str, Any]) -> list[Any]:
    """The experiment's charts."""
    depths = [str(d) for d in res["depths"]]
    sig, labels = _grid(res, "first_signal")
    loss, _ = _grid(res, "final_loss", missing=np.inf)  # None: the run diverged
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sig = np.log10(sig)
    deepest = max(res["depths"])
    flows, colors, styles = {}, [], []
    for i, act in enumerate(res["acts"]):
        for init, style in zip(res["inits"], ("-", "--", ":")):
            s = np.array([np.nan if v is None else v for v in res["cells"][key(act, init, deepest)]["signal_init"]])
            flows[f"{act}, {init}"] = (np.arange(1, len(s) + 1), s)
            colors.append(PALETTE[i])
            styles.append(style)
    return [
        heatmap_chart(
            "lab-depth-signal", "Gradient signal reaching the first layer at initialisation", log_sig,
            row_labels=labels, col_labels=depths, xlabel="depth (Linear layers)", ylabel="activation, init",
            cbar_label="log10 RMS of dL/d(first layer output)", annotate=True, fmt="{:.1f}",
            caption="Each cell: the power of ten of the gradient signal that reaches the first layer of a fresh "
            "network (gradvet.check on 256 digits). Sigmoid loses half a decade to a decade per layer whatever the "
            "init; tanh and ReLU hold up with Xavier or He init, but PyTorch's default init (std 1/sqrt(3 fan_in)) "
            "makes them vanish too.",
        ),
        heatmap_chart(
            "lab-depth-loss", f"Training loss after {res['steps']} SGD steps", loss, row_labels=labels,
            col_labels=depths, xlabel="depth (Linear layers)", ylabel="activation, init",
            cbar_label="cross-entropy (chance: ln 10 = 2.30)", annotate=True, fmt="{:.2f}", cmap="magma_r",
            vrange=(0.0, 2.5),
            caption="Mean training loss over the last 10 steps (SGD, lr "
            f"{res['lr']}, momentum {res['momentum']}, batch 128). 2.30 is chance: the network learned nothing. "
            "Rows whose first-layer signal (previous chart) collapses are the rows stuck at chance; ∞ marks a "
            "run whose loss became non-finite (exploding, not vanishing).",
        ),
        lines_chart(
            "lab-depth-flow", f"Gradient flow at initialisation, depth {deepest}", flows,
            xlabel="Linear layer (1 = input side)", ylabel="RMS of dL/d(layer output) (log)", logy=True,
            colors=colors, linestyles=styles, markers=True,
            caption="The gradient signal reaching each Linear layer of the deepest networks before any training. "
            "Straight lines on this log axis are the per-layer factor multiplying over depth: flat is healthy, a "
            "steep slope is vanishing gradients.",
        ),
    ]


def summary(res: dict[str, Any]) -> str:
    """One paragraph with the key numbers (HTML)."""
    d = 10 if 10 in res["depths"] else max(res["depths"])
    sig = res["cells"][key("sigmoid", "default", d)]
    relu = res["cells"][key("relu", "he", d)]
    ratio = (relu["first_signal"] or np.nan) / (sig["first_signal"] or np.nan)
    return (f"At depth {d}, the first layer of the sigmoid net (default init) receives a gradient signal of "
            f"{sig['first_signal']:.1e}; with ReLU and He init it receives {relu['first_signal']:.1e}, "
            f"{ratio:.0e} times more. After {res['steps']} steps their training losses are "
            f"{_fmt(sig['final_loss'])} and {_fmt(relu['final_loss'])}.")


def _fmt(x: Any) -> str:
    return "diverged" if x is None else f"{x:.2f}"
