"""Matplotlib figures as inline SVG, wrapped in ``<figure data-chart=... data-points=...>``.

Inline SVG keeps a report self-contained (no CDN, no request) and sharp at any zoom.
Text stays text (``svg.fonttype = "none"``) so the browser draws it in the page font.
Each chart gets its own hash salt so that the clip-path ids of several SVGs on one page
never collide, and the same run renders to the same bytes.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
from cycler import cycler  # noqa: E402

#: One palette for every chart: colour-blind friendly (Okabe & Ito, 2008).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
#: Heatmap cells that were not measured (or are zero on a log scale).
MISSING = "#d9d9d9"
#: Values that were NaN/Inf: heatmap cells and the marker of the step a run went non-finite.
NONFINITE = "#e41a1c"

_STYLE: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "axes.prop_cycle": cycler(color=PALETTE),
    "legend.frameon": False,
    "legend.fontsize": 9,
    "svg.fonttype": "none",
    "lines.linewidth": 1.6,
}


@dataclass(frozen=True)
class Chart:
    """One rendered chart.

    Attributes:
        name: stable identifier (the ``data-chart`` attribute).
        title: heading shown above the chart.
        svg: the ``<svg>`` element.
        points: number of data points drawn (``data-points``).
        caption: how to read the chart.
    """

    name: str
    title: str
    svg: str
    points: int
    caption: str

    def html(self, heading: bool = True) -> str:
        """The chart as a ``<figure>`` element (with its title as ``<h3>`` when ``heading``)."""
        title = f"<h3>{html.escape(self.title)}</h3>" if heading else ""
        return (
            f'<figure class="chart" data-chart="{html.escape(self.name)}" data-points="{self.points}">'
            f"{title}{self.svg}"
            f"<figcaption>{html.escape(self.caption)}</figcaption></figure>"
        )


@contextmanager
def figure(name: str, width: float = 8.6, height: float = 3.5, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """A styled ``(fig, axes)`` whose SVG ids are salted with ``name``; closed on exit."""
    style: dict[str, Any] = {**_STYLE, "svg.hashsalt": f"gradvet-{name}"}
    with plt.rc_context(style):  # type: ignore[arg-type]
        fig, axes = plt.subplots(figsize=(width, height), **subplots)
        try:
            yield fig, axes
        finally:
            plt.close(fig)


_HEADER = re.compile(r"^.*?(<svg\b)", re.S)
# Inside an HTML page the SVG needs no namespace declarations (the HTML parser puts
# <svg> in the SVG namespace) and no RDF metadata: dropping them leaves the page free
# of any http:// string, so a test can assert that it references nothing outside.
_NAMESPACES = re.compile(r'\sxmlns(:\w+)?="[^"]*"')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
# Matplotlib names groups "figure_1", "axes_1", ... in every SVG; nothing refers to
# them (references use salted hashes), and repeated on one page they are duplicate ids.
_GROUP_IDS = re.compile(r'\sid="[A-Za-z][\w.]*_\d+"')


def to_svg(fig: Any) -> str:
    """The figure as an inline ``<svg>`` (natural size; the page CSS shrinks it to fit)."""
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": plt.rcParams["svg.hashsalt"]}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = _HEADER.sub(r"\1", buf.getvalue(), count=1)
    text = _GROUP_IDS.sub("", _METADATA.sub("", _NAMESPACES.sub("", text)))
    text = text.replace("xlink:href=", "href=")  # SVG 2 spelling; no xlink namespace needed
    return text.replace("<svg ", '<svg role="img" ', 1)
