"""Pure functions that pull chart-ready arrays out of a :class:`gradvet.Run`.

Nothing here draws; everything is testable against the raw series.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from gradvet.record._run import Run

Layer = dict[str, Any]


def signal_layers(run: Run) -> list[Layer]:
    """Layers that own parameters (or are recurrent), input side first.

    Activation modules carry the same gradient signal as the layer after them, and
    containers repeat their last child, so charts over depth use parameter layers.
    Falls back to every layer when none owns parameters.
    """
    layers = run.ordered_layers()
    chosen = [x for x in layers if x.get("role") in ("param", "recurrent") and x.get("params")]
    return chosen or layers


def activation_layers(run: Run) -> list[Layer]:
    """Layers that apply an activation (modules like ``nn.ReLU``, or a layer seen followed by one)."""
    return [x for x in run.ordered_layers() if x.get("activation") and x.get("role") != "other"]


def applicable(layer: Layer, stat: str) -> bool:
    """Whether ``stat`` ("sat_frac" or "dead_frac") means anything for this layer's activation.

    Sigmoid/tanh saturate but cannot die; ReLU can die; LeakyReLU/GELU do neither.
    Activations registered without a functional form are assumed to allow both.
    """
    from gradvet.stats._activations import FUNCTIONAL

    kinds = {k.name: k for k in FUNCTIONAL.values()}
    kind = kinds.get(layer.get("activation", ""))
    if kind is None:
        return True
    return kind.saturated is not None if stat == "sat_frac" else kind.can_die


def layer_matrix(run: Run, metric: str, layers: list[Layer]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(steps [n], values [n, len(layers)])`` of ``layer/<metric>`` for ``layers``, or None."""
    s = run.get(f"layer/{metric}")
    if s is None or len(s.steps) == 0 or not layers:
        return None
    width = s.values.shape[1] if s.values.ndim == 2 else 0
    cols = [x["index"] for x in layers]
    out = np.full((len(s.steps), len(cols)), np.nan, dtype=np.float64)
    for j, c in enumerate(cols):
        if c < width:
            out[:, j] = s.values[:, c]
    return s.steps, out


def _combine_norms(values: np.ndarray, idx: list[int]) -> np.ndarray:
    """sqrt(sum of squares) over the columns ``idx``: the norm of a layer's parameters together."""
    if not idx:
        return np.full(values.shape[0], np.nan)
    part = values[:, idx].astype(np.float64)
    out = np.sqrt(np.nansum(part**2, axis=1))
    out[np.all(np.isnan(part), axis=1)] = np.nan
    return out


def param_grad_by_layer(run: Run, layers: list[Layer]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(steps, [n, L])``: the L2 norm of each layer's parameter gradients (|grad W|, biases included)."""
    s = run.get("param/grad_norm")
    if s is None or len(s.steps) == 0 or not layers:
        return None
    return s.steps, np.stack([_combine_norms(s.values, x.get("params", [])) for x in layers], axis=1)


def update_ratio_by_layer(run: Run, layers: list[Layer]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(steps, [n, L])``: ||delta W|| / ||W|| per layer on the steps where updates were measured.

    Per-parameter ratios are combined with the parameter norms of the same step:
    ``sqrt(sum (r_i ||W_i||)^2) / sqrt(sum ||W_i||^2)``.
    """
    upd, pn = run.get("param/update_ratio"), run.get("param/param_norm")
    if upd is None or pn is None or len(upd.steps) == 0 or not layers:
        return None
    row_of = {int(s): i for i, s in enumerate(pn.steps)}
    rows = [row_of.get(int(s), -1) for s in upd.steps]
    w = np.where(np.array(rows)[:, None] >= 0, pn.values[rows], np.nan).astype(np.float64)
    r = upd.values.astype(np.float64)
    # a parameter that moved from exactly zero has ratio inf and norm 0: its step is unknown (NaN), not inf * 0
    known = ~(np.isinf(r) & (w == 0))
    delta = np.multiply(r, w, out=np.full(r.shape, np.nan), where=known)
    cols = []
    for x in layers:
        idx = x.get("params", [])
        cols.append(_combine_norms(delta, idx) / np.maximum(_combine_norms(w, idx), 1e-30))
    return upd.steps, np.stack(cols, axis=1)


def recurrent_profiles(run: Run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (steps, [n, T])`` of ``time/<name>`` for every recurrent layer recorded."""
    out = {}
    for layer in run.ordered_layers():
        s = run.get(f"time/{layer['name']}")
        if s is not None and len(s.steps):
            out[layer["name"]] = (s.steps, s.values.astype(np.float64))
    return out


def pick_rows(steps: np.ndarray, k: int = 3) -> list[int]:
    """Row indices of ``k`` steps spread over the run: first, middle(s), last (deduplicated)."""
    n = len(steps)
    if n == 0:
        return []
    picks = np.unique(np.round(np.linspace(0, n - 1, num=min(k, n))).astype(int))
    return [int(i) for i in picks]


def spans_decades(values: np.ndarray, decades: float = 1.3) -> bool:
    """True when the positive finite values span more than ``decades`` powers of ten."""
    v = values[np.isfinite(values) & (values > 0)]
    return bool(v.size) and float(np.log10(v.max() / v.min())) > decades


def downsample(x: np.ndarray, y: np.ndarray, limit: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th point so that at most about ``limit`` remain (the last point kept)."""
    if len(x) <= limit:
        return x, y
    k = int(np.ceil(len(x) / limit))
    idx = np.unique(np.append(np.arange(0, len(x), k), len(x) - 1))
    return x[idx], y[idx]


def layer_label(layer: Layer) -> str:
    """Short display name: the module name (``(model)`` for the root), control characters removed and
    ``$`` escaped (matplotlib would read ``$...$`` as mathtext)."""
    from gradvet._render import clean

    return clean(layer.get("name") or "(model)").replace("$", r"\$")


def _counts_at(run: Run, metric: str, steps: np.ndarray) -> Optional[np.ndarray]:
    """Rows of ``metric`` at ``steps`` (NaN where that step was not recorded), or None."""
    s = run.get(metric)
    if s is None or len(s.steps) == 0 or s.values.ndim != 2:
        return None
    row_of = {int(t): i for i, t in enumerate(s.steps)}
    out = np.full((len(steps), s.values.shape[1]), np.nan)
    for i, t in enumerate(steps):
        j = row_of.get(int(t))
        if j is not None:
            out[i] = s.values[j]
    return out


def nonfinite_cells(
    run: Run, steps: np.ndarray, values: np.ndarray, counts_metric: str, columns: list[list[int]]
) -> np.ndarray:
    """``[n, L]`` mask of the cells whose measured value was NaN/Inf (not: not measured).

    A cell is non-finite when its value is infinite, or when ``counts_metric`` (a count of
    non-finite entries, e.g. ``layer/grad_nonfinite``) is positive in any of its ``columns``
    at that step. Without the counts, a NaN from the run's final non-finite stretch on counts.
    """
    v = np.asarray(values, dtype=np.float64)
    mask = np.isinf(v)
    counts = _counts_at(run, counts_metric, steps)
    if counts is not None:
        width = counts.shape[1]
        for j, cols in enumerate(columns):
            cols = [c for c in cols if c < width]
            if cols:
                mask[:, j] |= (np.nan_to_num(counts[:, cols], nan=0.0) > 0).any(axis=1)
        return mask
    from gradvet.report import nonfinite_from

    start = nonfinite_from(run)
    if start is not None:
        mask |= np.isnan(v) & (np.asarray(steps) >= start)[:, None]
    return mask
