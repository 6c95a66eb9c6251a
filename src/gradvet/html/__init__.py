"""Self-contained HTML reports: inline SVG charts (matplotlib), inline CSS, no scripts, no network.

``write_report(record, out)`` renders one record. The chart functions are building
blocks: each takes a :class:`gradvet.Run` (or plain arrays, for the generic ones) and
returns a :class:`Chart` whose ``.html()`` is a ``<figure data-chart=... data-points=...>``.

Example:
    >>> import gradvet
    >>> from gradvet.html import write_report, gradient_flow_chart
    >>> write_report("runs/exp1.gradvet", "runs/exp1.html")  # doctest: +SKIP
    >>> chart = gradient_flow_chart(gradvet.load("runs/exp1.gradvet"))  # doctest: +SKIP
"""

from gradvet.html._charts import (
    RUN_CHARTS,
    activation_chart,
    grad_w_heatmap,
    gradient_flow_chart,
    loss_chart,
    signal_heatmap,
    time_profile_chart,
    update_ratio_chart,
)
from gradvet.html._findings import findings_html, layer_table_html
from gradvet.html._page import missing, page, section
from gradvet.html._plots import bar_chart, heatmap_chart, lines_chart
from gradvet.html._report import render_report, write_report
from gradvet.html._svg import Chart

__all__ = [
    "RUN_CHARTS",
    "Chart",
    "activation_chart",
    "bar_chart",
    "findings_html",
    "grad_w_heatmap",
    "gradient_flow_chart",
    "heatmap_chart",
    "layer_table_html",
    "lines_chart",
    "loss_chart",
    "missing",
    "page",
    "render_report",
    "section",
    "signal_heatmap",
    "time_profile_chart",
    "update_ratio_chart",
    "write_report",
]
