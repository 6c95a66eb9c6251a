"""Generic chart building blocks on plain arrays: lines, heatmaps, bars.

The run charts (:mod:`gradvet.html._charts`) and the lab's comparison charts are
made from these, so every chart on every page looks alike.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator

from gradvet.html._data import downsample
from gradvet.html._svg import MISSING, NONFINITE, Chart, figure, to_svg

#: One line of a line chart: ``(x, y)`` plus optional keyword style.
Line = tuple[np.ndarray, np.ndarray]


def _finite(y: np.ndarray, logy: bool) -> np.ndarray:
    ok = np.isfinite(y)
    return ok & (y > 0) if logy else ok


def _ticks(ax: Any, labels: Sequence[str], axis: str = "x", limit: int = 32) -> None:
    """Label positions 0..n-1 with ``labels``, thinned to at most ``limit`` and rotated if long."""
    n = len(labels)
    if axis == "x" and n <= 6:
        labels = [textwrap.fill(s, 16) for s in labels]  # few long labels: wrap rather than rotate
    step = max(1, int(np.ceil(n / limit)))
    pos = list(range(0, n, step))
    if pos and pos[-1] != n - 1:
        pos.append(n - 1)
    shown = [labels[i] for i in pos]
    if axis == "x":
        rotate = n > 6 and max((len(s) for s in shown), default=0) > 3
        ax.set_xticks(pos)
        ax.set_xticklabels(shown, rotation=50 if rotate else 0, ha="right" if rotate else "center",
                           fontsize=8 if n > 12 else 9)
    else:
        ax.set_yticks(pos)
        ax.set_yticklabels(shown, fontsize=8 if n > 12 else 9)


def lines_chart(
    name: str,
    title: str,
    lines: dict[str, Line],
    *,
    xlabel: str,
    ylabel: str,
    caption: str,
    logy: bool = False,
    logx: bool = False,
    xticklabels: Optional[Sequence[str]] = None,
    colors: Optional[Sequence[str]] = None,
    linestyles: Optional[Sequence[str]] = None,
    markers: bool = False,
    hline: Optional[tuple[float, str]] = None,
    colorbar: Optional[tuple[str, float, float]] = None,
    ymin_range: Optional[tuple[float, float]] = None,
    vline: Optional[tuple[float, str]] = None,
    xspan: Optional[tuple[float, float]] = None,
) -> Chart:
    """Several labelled lines on one axis.

    Args:
        name: ``data-chart`` id.
        title: heading.
        lines: label -> ``(x, y)``; non-finite (and, on a log axis, non-positive) points are dropped.
        xlabel, ylabel: axis labels with units.
        caption: how to read the chart.
        logy, logx: log axes.
        xticklabels: names of x positions 0..n-1 (layer names).
        colors: one colour per line (default: the palette).
        linestyles: one matplotlib line style per line ("-", "--", ":"...).
        markers: draw points as well as lines.
        hline: ``(y, label)`` reference line.
        colorbar: ``(label, vmin, vmax)``: colour lines along viridis and show a colour bar
            instead of a legend (many lines, e.g. one per layer).
        ymin_range: ``(bottom, minimum top)``: a linear y axis from ``bottom`` to at least
            ``minimum top`` (so that 0.02% does not fill a percentage chart).
        vline: ``(x, label)``: a labelled vertical marker (the step a run went NaN/Inf).
        xspan: ``(first, last)``: the x axis range (the recorded steps, drawn or not).

    A line with no point to draw gets no legend entry.
    """
    points = 0
    drawn = 0
    with figure(name) as (fig, ax):
        cmap = colormaps["viridis"]
        n = len(lines)
        for i, (label, (x, y)) in enumerate(lines.items()):
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
            ok = _finite(y, logy)
            if logx:
                ok &= x > 0
            xs, ys = downsample(x[ok], y[ok])
            color = colors[i] if colors else (cmap(0.9 * i / max(n - 1, 1)) if colorbar else None)
            kw: dict[str, object] = {"marker": "o", "markersize": 3.5} if markers or len(xs) == 1 else {}
            if linestyles:
                kw["linestyle"] = linestyles[i]
            ax.plot(xs, ys, label=label if len(xs) else "_nolegend_", color=color, **kw)
            points += len(xs)
            drawn += bool(len(xs))
        ref = None
        if hline is not None:
            ref = ax.axhline(hline[0], color="#777777", linestyle="--", linewidth=1.0, label=hline[1])
        if ymin_range is not None:
            top = ax.get_ylim()[1]
            ax.set_ylim(ymin_range[0], max(ymin_range[1], top))
        if logy and points:
            ax.set_yscale("log")
        if logx:
            ax.set_xscale("log")
        if xticklabels is not None:
            _ticks(ax, list(xticklabels))
        elif not logx:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, layers, time steps
        if xspan is not None and xspan[1] > xspan[0]:
            ax.set_xlim(*xspan)
        if vline is not None:
            _vline(ax, name, *vline)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if colorbar is not None:
            _line_colorbar(fig, ax, *colorbar)
            if ref is not None:
                ax.legend(handles=[ref], loc="best")
        elif drawn > 1 or hline is not None:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
        if not points:
            ax.text(0.5, 0.5, "no finite values recorded", transform=ax.transAxes, ha="center", color="#777777")
        return Chart(name, title, to_svg(fig), points, caption)


def _vline(ax: Any, name: str, x: float, label: str, line: str = NONFINITE) -> None:
    """A dashed vertical marker at ``x`` labelled above the axes (SVG id ``<name>-nonfinite-from``)."""
    ax.axvline(x, color=line, linestyle="--", linewidth=1.4, gid=f"{name}-nonfinite-from")
    left, right = ax.get_xlim()
    ha = "right" if (x - left) > 0.6 * (right - left) else "left"
    ax.text(x, 1.01, f" {label} ", transform=ax.get_xaxis_transform(), ha=ha, va="bottom", color=NONFINITE,
            fontsize=9, gid=f"{name}-nonfinite-label")


def _line_colorbar(fig: Any, ax: Any, label: str, vmin: float, vmax: float) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    sm = ScalarMappable(norm=Normalize(vmin, vmax / 0.9 if vmax > vmin else vmin + 1), cmap="viridis")
    bar = fig.colorbar(sm, ax=ax, pad=0.02)
    bar.set_label(label)


def heatmap_chart(
    name: str,
    title: str,
    matrix: np.ndarray,
    *,
    row_labels: Sequence[str],
    xlabel: str,
    ylabel: str,
    cbar_label: str,
    caption: str,
    col_labels: Optional[Sequence[str]] = None,
    x_extent: Optional[tuple[float, float]] = None,
    x_steps: Optional[Union[Sequence[float], np.ndarray]] = None,
    nonfinite: Optional[np.ndarray] = None,
    vline: Optional[tuple[float, str]] = None,
    annotate: bool = False,
    cmap: str = "viridis",
    fmt: str = "{:.0f}",
    vrange: Optional[tuple[float, float]] = None,
) -> Chart:
    """A rows x columns heatmap (rows top to bottom in the given order).

    NaN cells are grey ("not measured"); cells flagged in ``nonfinite`` are drawn in the
    NaN/Inf colour; a legend lists whichever of the two the chart shows.

    Args:
        matrix: ``[rows, cols]`` values (already log-transformed where that is meant).
        row_labels: one per row.
        col_labels: one per column (categorical x), or None with ``x_steps``/``x_extent`` (numeric x).
        x_steps: the x value (training step) of each column; the axis spans the first to the last,
            each cell reaching half way to its neighbours, and ticks are integers.
        x_extent: ``(first, last)`` x value of evenly spaced columns (as ``x_steps``).
        nonfinite: ``[rows, cols]`` mask of the cells whose value was NaN/Inf.
        vline: ``(x, label)``: a labelled vertical marker (the step a run went NaN/Inf).
        annotate: write each cell's value in it (small grids).
        fmt: format of annotations.
        vrange: colour scale limits (default: the finite values' range).
    """
    m = np.asarray(matrix, dtype=np.float64)
    finite = np.isfinite(m)
    rows, cols = m.shape
    bad = np.zeros(m.shape, dtype=bool) if nonfinite is None else np.asarray(nonfinite, dtype=bool) & ~finite
    if x_steps is None and x_extent is not None and col_labels is None:
        x_steps = np.linspace(x_extent[0], x_extent[1], cols)
    if col_labels is not None or x_steps is None:  # categories: whole cells centred on 0..cols-1
        xe = np.arange(cols + 1, dtype=np.float64) - 0.5
    else:  # training steps: the axis spans exactly the recorded steps
        xe = _edges(x_steps)
    ye = np.arange(rows + 1, dtype=np.float64) - 0.5
    height = min(7.5, max(2.4, 0.9 + 0.22 * rows))
    with figure(name, height=height) as (fig, ax):
        cm = colormaps[cmap].with_extremes(bad=MISSING)
        lo, hi = vrange if vrange else ((float(m[finite].min()), float(m[finite].max())) if finite.any() else (0, 1))
        img = ax.pcolormesh(xe, ye, np.ma.masked_invalid(m), cmap=cm, vmin=lo, vmax=hi if hi > lo else lo + 1,
                            rasterized=True)
        _cells(ax, name, bad, xe, ye)
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[-1], ye[0])
        ax.grid(False)
        _ticks(ax, list(row_labels), axis="y", limit=28)
        if col_labels is not None:
            _ticks(ax, list(col_labels))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # training steps
        if annotate:
            _annotate(ax, m, img, fmt)
        if vline is not None:
            _vline(ax, name, *vline, line="#000000")  # on the NaN/Inf cells, a red line would not show
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        bar = fig.colorbar(img, ax=ax, pad=0.02)
        bar.set_label(cbar_label)
        _cell_legend(ax, bool(bad.any()), bool((~finite & ~bad).any()), height)
        return Chart(name, title, to_svg(fig), int(finite.sum()), caption)


def _edges(steps: Union[Sequence[float], np.ndarray]) -> np.ndarray:
    """Cell edges around column positions ``x``: half way between neighbours, the outer cells
    cut at the first and last position (so the axis spans exactly the recorded steps)."""
    x = np.asarray(steps, dtype=np.float64)
    if len(x) == 1:
        return np.array([x[0] - 0.5, x[0] + 0.5])
    return np.concatenate([[x[0]], (x[1:] + x[:-1]) / 2, [x[-1]]])


def _cells(ax: Any, name: str, mask: np.ndarray, xe: np.ndarray, ye: np.ndarray) -> None:
    """Draw the ``mask`` cells as vector rectangles in the NaN/Inf colour (SVG id ``<name>-nonfinite``),
    one rectangle per run of consecutive cells in a row."""
    from matplotlib.collections import PolyCollection

    verts = []
    for r in range(mask.shape[0]):
        row = np.concatenate([[False], mask[r], [False]]).astype(np.int8)
        starts, ends = np.where(np.diff(row) == 1)[0], np.where(np.diff(row) == -1)[0]
        for a, b in zip(starts, ends):
            x0, x1, y0, y1 = xe[a], xe[b], ye[r], ye[r + 1]
            verts.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    if verts:
        ax.add_collection(PolyCollection(verts, facecolors=NONFINITE, edgecolors="none", gid=f"{name}-nonfinite"))


def _cell_legend(ax: Any, nonfinite: bool, missing: bool, height: float) -> None:
    """Legend of the special cell colours, below the axes; only those the chart shows."""
    from matplotlib.patches import Patch

    handles = []
    if nonfinite:
        handles.append(Patch(facecolor=NONFINITE, label="NaN/Inf"))
    if missing:
        handles.append(Patch(facecolor=MISSING, label="not measured or zero"))
    if handles:
        # below the x label: about half an inch under the axes, whatever the figure height
        ax.legend(handles=handles, loc="upper right", bbox_to_anchor=(1.0, -0.55 / (0.8 * height)), ncol=2,
                  handlelength=1.2)


def _annotate(ax: Any, m: np.ndarray, img: Any, fmt: str) -> None:
    """Write each cell's value, in white on dark cells and black on light ones."""
    for (r, c), v in np.ndenumerate(m):
        if np.isinf(v):  # a run that diverged
            ax.text(c, r, "∞", ha="center", va="center", fontsize=10, color="black")
        elif np.isfinite(v):
            red, green, blue, _ = img.cmap(img.norm(v))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=8.5, color="white" if dark else "black")


def bar_chart(
    name: str,
    title: str,
    groups: dict[str, dict[str, float]],
    *,
    ylabel: str,
    caption: str,
    logy: bool = False,
    hline: Optional[tuple[float, str]] = None,
    xlabel: str = "",
) -> Chart:
    """Grouped bars: ``groups[group][series] = value``.

    An infinite value (a run that diverged) is drawn as a hatched bar to the top of the
    axis labelled "diverged"; NaN (not run) is left out.
    """
    labels = list(groups)
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    width = 0.8 / max(len(series), 1)
    points, diverged = 0, False
    with figure(name) as (fig, ax):
        finite = [v for g in groups.values() for v in g.values() if np.isfinite(v) and (v > 0 or not logy)]
        top = max(finite) * (3 if logy else 1.1) if finite else 1.0
        for j, s in enumerate(series):
            xs = np.arange(len(labels)) + (j - (len(series) - 1) / 2) * width
            vals = np.array([groups[g].get(s, np.nan) for g in labels], dtype=np.float64)
            ok = np.isfinite(vals) & ((vals > 0) if logy else True)
            ax.bar(xs[ok], vals[ok], width * 0.92, color=_palette(j), label=s)
            points += int(ok.sum())
            for x in xs[np.isinf(vals)]:
                ax.bar(x, top, width * 0.92, color="white", edgecolor=_palette(j), hatch="//")
                ax.text(x, top, "diverged", rotation=90, ha="center", va="top", fontsize=9, fontweight="bold",
                        color="#444444")
                diverged = True
        if hline is not None:
            ax.axhline(hline[0], color="#777777", linestyle="--", linewidth=1.0, label=hline[1])
        if logy:
            ax.set_yscale("log")
        _ticks(ax, labels)
        ax.set_ylabel(ylabel)
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.grid(axis="x", visible=False)
        handles, names = ax.get_legend_handles_labels()
        if diverged:  # the legend shows the hatched bar as it is drawn, not a solid patch
            from matplotlib.patches import Patch

            handles.append(Patch(facecolor="white", edgecolor="#444444", hatch="//"))
            names.append("diverged (non-finite loss)")
        ax.legend(handles, names, loc="center left", bbox_to_anchor=(1.01, 0.5))
        return Chart(name, title, to_svg(fig), points, caption)


def _palette(i: int) -> str:
    from gradvet.html._svg import PALETTE

    return PALETTE[i % len(PALETTE)]
