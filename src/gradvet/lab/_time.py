"""Experiment 4: gradients through time on the adding problem (Hochreiter & Schmidhuber, 1997).

A plain RNN, an LSTM and a GRU, each with PyTorch's default init and (LSTM, GRU) with the
memory gate's bias set to 1 (Gers et al., 2000; Jozefowicz et al., 2015), at several
sequence lengths. gradvet records the gradient reaching each input time step
(``time/rnn``); a model has learned the task when its test MSE is below half the MSE of
predicting the mean (1/6).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from gradvet.data import ADDING_BASELINE_MSE, adding_problem
from gradvet.html import bar_chart, lines_chart
from gradvet.lab._context import LabContext, maybe, slug
from gradvet.lab._models import SeqRegressor
from gradvet.lab._train import TrainSpec, evaluate, sample_batches, train
from gradvet.record._run import Run

NAME = "time"
LEARNED = 0.5  # learned: test MSE below this fraction of the predict-the-mean MSE
GATE_BIAS = 1.0
#: label -> (cell, gate bias or None).
MODELS: dict[str, tuple[str, Optional[float]]] = {
    "RNN": ("RNN", None),
    "LSTM": ("LSTM", None),
    f"LSTM, forget bias {GATE_BIAS:g}": ("LSTM", GATE_BIAS),
    "GRU": ("GRU", None),
    f"GRU, update bias {GATE_BIAS:g}": ("GRU", GATE_BIAS),
}


def n_runs(ctx: LabContext) -> int:
    return len(MODELS) * len(ctx.config.lengths)


def profile(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, [n, T])``: ||dL/dx_t|| of the recurrent layer per recorded step."""
    s = run.series("time/rnn")
    return s.steps, s.values.astype(np.float64)


def run(ctx: LabContext) -> dict[str, Any]:
    mse = nn.functional.mse_loss
    spec = TrainSpec(steps=ctx.config.time_steps, lr=0.01, adam=True, batch=64,
                     layer_every=max(1, ctx.config.time_steps // 16), clip=_clip)
    out: dict[str, Any] = {}
    for length in ctx.config.lengths:
        x_tr, y_tr = adding_problem(ctx.config.time_train, length, seed=ctx.seed)
        x_te, y_te = adding_problem(2000, length, seed=ctx.seed + 10_000)
        baseline = float(mse(torch.full_like(y_te, 1.0), y_te))
        out[str(length)] = {"baseline_mse": baseline, "models": {}}
        for label, (cell, bias) in MODELS.items():
            torch.manual_seed(ctx.seed)
            model = SeqRegressor(cell, gate_bias=bias)
            path = ctx.record(NAME, f"{slug(label)}-t{length}")
            result = train(model, sample_batches(x_tr, y_tr), mse, spec, path, ctx.seed)
            _, prof = profile(ctx.load(ctx.rel(path)))
            test = evaluate(model, x_te, y_te, mse)
            out[str(length)]["models"][label] = {
                "record": ctx.rel(path),
                "test_mse": maybe(test),
                "mse_over_baseline": maybe(test / baseline),
                "learned": bool(test < LEARNED * baseline),
                "first_over_last_step_init": maybe(prof[0, 0] / prof[0, -1]),
                "findings": result.report.kinds(),
            }
            ctx.advance(1)
    return {"lengths": list(ctx.config.lengths), "steps": spec.steps, "theory_baseline_mse": ADDING_BASELINE_MSE,
            "learned_below": LEARNED, "runs": out}


def _clip(params: list[nn.Parameter]) -> None:
    # Standard practice for RNNs (Pascanu et al., 2013); the Monitor measured the raw gradients.
    nn.utils.clip_grad_norm_(params, 1.0)


def charts(res: dict[str, Any], ctx: LabContext) -> list[Any]:
    longest = str(max(res["lengths"]))
    models = res["runs"][longest]["models"]
    runs = {label: ctx.load(r["record"]) for label, r in models.items()}
    init, end = {}, {}
    for label, run in runs.items():
        _, prof = profile(run)
        t = np.arange(prof.shape[1])
        init[label], end[label] = (t, prof[0]), (t, prof[-1])
    groups = {label: {f"T = {T}": (res["runs"][T]["models"][label]["mse_over_baseline"] or np.inf)
                      for T in map(str, res["lengths"])} for label in models}
    return [
        lines_chart("lab-time-profile-init", f"Gradient reaching each time step at initialisation, T = {longest}",
                    init, xlabel="input time step t (the loss reads the state after t = T-1)",
                    ylabel="‖dL/dx_t‖ (log)", logy=True,
                    caption="How much each input can change the loss, before training. The plain RNN's curve falls "
                    "exponentially towards the early steps, where the first marked value usually sits; the gated "
                    "cells keep it flatter, most of all with the memory-gate bias opened."),
        lines_chart("lab-time-profile-end", f"Gradient reaching each time step after training, T = {longest}", end,
                    xlabel="input time step t", ylabel="‖dL/dx_t‖ (log)", logy=True,
                    caption="The same after training. Models that solved the task have learned to pass the gradient "
                    "back to any marked position."),
        lines_chart("lab-time-loss", f"Training loss (MSE), T = {longest}",
                    {label: (run.steps, run.loss) for label, run in runs.items()}, xlabel="optimizer step",
                    ylabel="MSE (log)", logy=True, hline=(res["runs"][longest]["baseline_mse"], "predict the mean"),
                    caption="Below the dashed line a model does better than always answering 1.0 (the mean "
                    "target); the plain RNN stays on it."),
        bar_chart("lab-time-result", "Test MSE relative to predicting the mean", groups,
                  ylabel="test MSE / baseline MSE (log)", logy=True, hline=(res["learned_below"], "learned"),
                  caption=f"Each bar: test MSE on 2,000 fresh sequences divided by the MSE of predicting the mean "
                  f"(1/6 in theory). Below {res['learned_below']} the task counts as learned."),
    ]


def summary(res: dict[str, Any]) -> str:
    rows = []
    for T in map(str, res["lengths"]):
        items = [f"{label} {r['mse_over_baseline']:.2g}" + (" ✓" if r["learned"] else "")
                 for label, r in res["runs"][T]["models"].items()]
        rows.append(f"<b>T = {T}</b> (test MSE / baseline; ✓ learned): " + ", ".join(items))
    return "<br>".join(rows)
