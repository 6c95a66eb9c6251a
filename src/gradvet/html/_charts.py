"""The charts of a run report; each takes a :class:`gradvet.Run` and returns a
:class:`Chart` (or None when the run holds no data for it).

Every function here is a public building block: the lab report reuses them.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex

from gradvet.html._data import (
    activation_layers,
    applicable,
    layer_label,
    layer_matrix,
    nonfinite_cells,
    param_grad_by_layer,
    pick_rows,
    recurrent_profiles,
    signal_layers,
    spans_decades,
    update_ratio_by_layer,
)
from gradvet.html._plots import heatmap_chart, lines_chart
from gradvet.html._svg import PALETTE, Chart
from gradvet.record._run import Run
from gradvet.report import nonfinite_from


def _step_colors(k: int) -> list[str]:
    """Light to dark blue: earlier training steps lighter, the last step darkest."""
    cmap = colormaps["Blues"]
    return [to_hex(cmap(v)) for v in np.linspace(0.45, 0.95, k)] if k > 1 else [to_hex(cmap(0.9))]


def _nonfinite_marker(run: Run) -> Optional[tuple[float, str]]:
    """``(step, label)`` of the step from which the run stayed NaN/Inf, or None."""
    start = nonfinite_from(run)
    return None if start is None else (float(start), f"NaN/Inf from step {start}")


def _nonfinite_note(run: Run) -> str:
    start = nonfinite_from(run)
    return "" if start is None else f" From step {start} on, the run's values are NaN/Inf: those steps are not drawn."


def _finite_rows(run: Run, steps: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Indices of the rows holding a finite value, before the run went NaN/Inf where it did
    (statistics of NaN outputs, like 0% saturated, describe nothing)."""
    ok = np.isfinite(m).any(axis=1)
    start = nonfinite_from(run)
    before = ok & (np.asarray(steps) < start) if start is not None else ok
    return np.where(before if before.any() else ok)[0]


def _step_span(run: Run) -> Optional[tuple[float, float]]:
    return (float(run.steps[0]), float(run.steps[-1])) if len(run.steps) else None


def loss_chart(run: Run, name: str = "loss") -> Optional[Chart]:
    """Training loss per optimizer step (log scale when it spans decades), the step the run went NaN/Inf marked."""
    steps, loss = run.steps, run.loss.astype(np.float64)
    if len(steps) == 0:
        return None
    logy = spans_decades(loss)
    bad = int((~np.isfinite(loss)).sum())
    note = f" {bad} step(s) had a non-finite loss and are not drawn." if bad else ""
    return lines_chart(
        name, "Training loss", {"loss": (steps, loss)}, xlabel="optimizer step", ylabel="loss" + (" (log)" if logy else ""),
        logy=logy, colors=[PALETTE[0]], vline=_nonfinite_marker(run), xspan=_step_span(run),
        caption="The loss passed to monitor.step at each optimizer step. A flat line from the start means the "
        "network is not learning; a jump to the top, or a gap, means it blew up." + note,
    )


def _span_note(m: np.ndarray) -> str:
    """``"this one spans 2.7 decades. "``: the spread of the drawn lines, so the caption never contradicts
    the chart next to it."""
    v = m[np.isfinite(m) & (m > 0)]
    if v.size < 2:
        return ""
    return f"this one spans {float(np.log10(v.max() / v.min())):.1f} decades. "


def gradient_flow_chart(run: Run, name: str = "gradient-flow") -> Optional[Chart]:
    """Per-layer gradient signal (RMS of dL/d output) across depth at the first, middle and last step."""
    layers = signal_layers(run)
    got = layer_matrix(run, "grad_rms", layers)
    if got is None:
        return None
    steps, m = got
    ok = _finite_rows(run, steps, m)  # a NaN step would be a legend entry with no line
    rows = [int(ok[r]) for r in pick_rows(steps[ok])]
    x = np.arange(len(layers))
    lines = {f"step {int(steps[r])}": (x, m[r]) for r in rows}
    return lines_chart(
        name, "Gradient flow: the gradient signal reaching each layer", lines,
        xlabel="layer (input side → output side)", ylabel="RMS of dL/d(layer output) (log)", logy=True,
        xticklabels=[layer_label(x) for x in layers], colors=_step_colors(len(lines)), markers=True,
        caption="Each line is one training step: the per-element size of the gradient arriving at each layer's "
        "output. Layers of different widths and kinds (embeddings, norms, attention) sit at different levels, "
        f"so a healthy network can span a few decades; {_span_note(m[rows])}What signals a problem is a trend "
        "along the depth: a line that falls towards the input by 2 decades or more below the output side is "
        "vanishing gradients (an error at 4), one that rises by 1.5 decades or more is exploding gradients."
        + _nonfinite_note(run),
    )


def _log10(m: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, np.log10(np.where(m > 0, m, 1.0)), np.nan)


def signal_heatmap(run: Run, name: str = "signal-heatmap") -> Optional[Chart]:
    """Layer x step heatmap of log10 of the gradient signal (RMS of dL/d output)."""
    layers = signal_layers(run)
    got = layer_matrix(run, "grad_rms", layers)
    if got is None:
        return None
    steps, m = got
    bad = nonfinite_cells(run, steps, m, "layer/grad_nonfinite", [[x["index"]] for x in layers])
    return heatmap_chart(
        name, "Gradient signal per layer over training", _log10(m).T, row_labels=[layer_label(x) for x in layers],
        x_steps=steps, nonfinite=bad.T, vline=_nonfinite_marker(run),
        xlabel="optimizer step", ylabel="layer (input at top)",
        cbar_label="log10 RMS of dL/d(layer output)",
        caption="Rows are layers (input side at the top), columns are measured steps, colour is the gradient "
        "signal in powers of ten. Dark rows near the top are layers the gradient barely reaches; a colour change "
        "over time shows the flow improving or degrading as training goes on. Grey: not measured or zero; "
        "red: NaN/Inf.",
    )


def grad_w_heatmap(run: Run, name: str = "gradw-heatmap") -> Optional[Chart]:
    """Layer x step heatmap of log10 |grad W| (each layer's parameter gradient norm)."""
    layers = signal_layers(run)
    got = param_grad_by_layer(run, layers)
    if got is None:
        return None
    steps, m = got
    bad = nonfinite_cells(run, steps, m, "param/grad_nonfinite", [list(x.get("params", [])) for x in layers])
    return heatmap_chart(
        name, "Parameter gradient norm |grad W| per layer over training", _log10(m).T,
        row_labels=[layer_label(x) for x in layers], x_steps=steps, nonfinite=bad.T, vline=_nonfinite_marker(run),
        xlabel="optimizer step", ylabel="layer (input at top)", cbar_label="log10 ‖∂L/∂W‖ (weights and biases)",
        caption="The L2 norm of the gradient of each layer's own parameters, every step. This is what the "
        "optimizer sees: a layer whose row stays many decades below the others is barely trained. Grey: not "
        "measured or zero; red: NaN/Inf.",
    )


def update_ratio_chart(run: Run, name: str = "update-ratio") -> Optional[Chart]:
    """||delta W|| / ||W|| per layer over training (log)."""
    layers = signal_layers(run)
    got = update_ratio_by_layer(run, layers)
    if got is None:
        return None
    steps, m = got
    names = [layer_label(x) for x in layers]
    lines = {n: (steps, m[:, j]) for j, n in enumerate(names)}
    many = len(lines) > 8
    return lines_chart(
        name, "Update size relative to weight size", lines, xlabel="optimizer step",
        ylabel="‖ΔW‖ / ‖W‖ per update (log)", logy=True, hline=(1e-3, "1e-3 rule of thumb"),
        vline=_nonfinite_marker(run), xspan=_step_span(run),
        colorbar=("layer position (0 = input side)", 0, len(lines) - 1) if many else None,
        colors=None if many else [PALETTE[i % len(PALETTE)] for i in range(len(lines))],
        caption="How far each optimizer step moves each layer's weights, relative to their size. Around 1e-3 "
        "is typical of healthy SGD training; layers far below it are stalled, ratios near 1 rewrite the layer "
        "every step." + (" Line colour goes from the input side (dark) to the output side (yellow)." if many else "")
        + _nonfinite_note(run),
    )


def activation_chart(run: Run, name: str = "activations") -> Optional[Chart]:
    """Saturated and dead fractions per activation layer, at the first and last measured step.

    Saturation is drawn only for activations that saturate (sigmoid, tanh...), death only
    for those that can die (ReLU); None when no layer has either.
    """
    layers = activation_layers(run)
    lines: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    colors: list[str] = []
    x = np.arange(len(layers))
    for stat, word, palette in (("sat_frac", "saturated", ("#f4a582", "#b2182b")),
                                ("dead_frac", "dead", ("#92c5de", "#2166ac"))):
        got = layer_matrix(run, stat, layers)
        mask = np.array([applicable(layer, stat) for layer in layers], dtype=bool)
        if got is None or not mask.any():
            continue
        steps, m = got
        ok = _finite_rows(run, steps, np.where(mask, m, np.nan))
        if not len(ok):
            continue
        for color, r in zip(palette, sorted({int(ok[0]), int(ok[-1])})):
            lines[f"{word}, step {int(steps[r])}"] = (x, np.where(mask, 100 * m[r], np.nan))
            colors.append(color)
    if not lines:
        return None
    return lines_chart(
        name, "Saturated and dead units per activation layer", lines,
        xlabel="activation layer (input side → output side)", ylabel="% of units",
        xticklabels=[layer_label(x) for x in layers], markers=True, colors=colors, ymin_range=(0.0, 10.0),
        caption="Saturated (sigmoid/tanh family): the share of outputs where the activation's derivative is "
        "below 10% of its maximum, so little gradient passes. Dead (ReLU): the share of units that output "
        "zero for every example of the batch, so no gradient passes at all. Lighter colour: first measured "
        "step; darker: last." + _nonfinite_note(run),
    )


def time_profile_chart(run: Run, name: str = "time-profile") -> Optional[Chart]:
    """Gradient reaching each input time step of every recurrent layer (first, middle, last step)."""
    profiles = recurrent_profiles(run)
    if not profiles:
        return None
    lines = {}
    colors = []
    for layer, (steps, m) in profiles.items():
        ok = _finite_rows(run, steps, m)
        rows = [int(ok[r]) for r in pick_rows(steps[ok])]
        for c, r in zip(_step_colors(len(rows)), rows):
            t = np.arange(m.shape[1])
            lines[f"{layer}, step {int(steps[r])}"] = (t, m[r])
            colors.append(c)
    return lines_chart(
        name, "Gradient reaching each time step (recurrent layers)", lines, xlabel="input time step t",
        ylabel="‖dL/dx_t‖ (log)", logy=True, colors=colors,
        caption="For each recurrent layer, the norm of the loss gradient with respect to the input at each time "
        "step. With the loss on the last step, a curve that falls steeply towards t = 0 means early inputs "
        "cannot influence learning (vanishing gradients through time)." + _nonfinite_note(run),
    )


#: The charts of a run report, in page order.
RUN_CHARTS: tuple[Callable[[Run], Optional[Chart]], ...] = (
    loss_chart,
    gradient_flow_chart,
    signal_heatmap,
    grad_w_heatmap,
    update_ratio_chart,
    activation_chart,
    time_profile_chart,
)
