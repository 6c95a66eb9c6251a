"""The run report: a self-contained HTML page for one record."""

from __future__ import annotations

import datetime as _dt
import os
from html import escape
from pathlib import Path
from typing import Any, Union

import numpy as np

from gradvet.html._charts import (
    activation_chart,
    grad_w_heatmap,
    gradient_flow_chart,
    loss_chart,
    signal_heatmap,
    time_profile_chart,
    update_ratio_chart,
)
from gradvet.html._data import activation_layers, applicable
from gradvet.html._findings import findings_html, layer_table_html
from gradvet.html._page import missing, page, section
from gradvet.record._run import Run

PathLike = Union[str, "os.PathLike[str]"]

# (anchor, title, chart function, note shown when the run lacks the data)
_SECTIONS = (
    ("loss", "Loss", loss_chart, "No loss was recorded (pass the loss to monitor.step(loss))."),
    ("flow", "Gradient flow", gradient_flow_chart,
     "No per-layer gradients were recorded (they are measured on layer steps: profile='business' or 'full')."),
    ("signal", "Gradient signal over training", signal_heatmap, "No per-layer gradients were recorded."),
    ("gradw", "Parameter gradients over training", grad_w_heatmap, "No parameter gradient norms were recorded."),
    ("updates", "Update / weight ratios", update_ratio_chart,
     "No update ratios were recorded (pass optimizer= to the Monitor)."),
    ("activations", "Saturated and dead units", activation_chart,
     "gradvet found no activation it measures: a torch.nn activation module (nn.ReLU, nn.GELU...) or a "
     "torch.nn.functional activation applied to a Linear/Conv output."),
    ("time", "Gradient through time", time_profile_chart, "This model has no recurrent (RNN/LSTM/GRU) layers."),
)


def _unrecognised(run: Run) -> str:
    """The parameter-free modules gradvet saw but does not read as activations (a custom GELU module
    computes its own formula), counted by type."""
    counts: dict[str, int] = {}
    for layer in run.ordered_layers():
        if layer.get("role") == "other" and layer.get("name") and not layer.get("params"):
            counts[layer.get("type", "?")] = counts.get(layer.get("type", "?"), 0) + 1
    if not counts:
        return ""
    seen = ", ".join(f"{t} (×{n})" if n > 1 else t for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return (f" Modules without parameters that it saw but does not recognise as activations: {seen}. An "
            "activation among them is not measured here.")


def _smooth_only(run: Run) -> str:
    """Why the saturation chart is empty when the model has activations that neither saturate nor die
    (GPT-2's GELUs): counted by kind; empty when it has no activation at all."""
    acts = activation_layers(run)
    if not acts or any(applicable(x, "sat_frac") or applicable(x, "dead_frac") for x in acts):
        return ""  # none, or some that could be drawn: the chart is missing for another reason
    counts: dict[str, int] = {}
    for layer in acts:
        counts[layer["activation"]] = counts.get(layer["activation"], 0) + 1
    seen = ", ".join(f"{k.upper()} (×{n})" if n > 1 else k.upper() for k, n in sorted(counts.items()))
    return (f"This model's activations, {seen}, neither saturate nor die: smooth or leaky activations "
            "(GELU, SiLU, Mish, LeakyReLU, ELU) pass a gradient for every input, so there is no saturated or "
            "dead unit to draw. Their gradient signal is in the charts above.")


def _meta_html(run: Run, report: Any) -> str:
    m = run.meta
    started = m.get("started_at")
    when = _dt.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") if started else "–"
    loss = f"{report.loss:.4g}" if report.loss is not None else "–"
    items = [("model", m.get("model", "–")), ("optimizer", m.get("optimizer") or "–"),
             ("steps", len(run.steps)), ("final loss", loss), ("status", m.get("status", "–")),
             ("started", when), ("gradvet", m.get("gradvet_version", "–")), ("torch", m.get("torch_version", "–"))]
    cells = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in items)
    return f'<dl class="meta">{cells}</dl>'


def render_report(run: Run, title: str = "gradvet report") -> str:
    """The HTML page for ``run`` (a :class:`gradvet.Run`).

    Args:
        run: a run, e.g. ``gradvet.load(path)`` or ``monitor.run``.
        title: page title.

    Returns:
        The complete, self-contained HTML document.
    """
    report = run.report()
    n_bad = sum(f.severity in ("warning", "error") for f in report.findings)
    verdict = ('<span class="verdict ok">healthy</span>' if report.healthy
               else f'<span class="verdict bad">{n_bad} problem(s) found</span>')
    toc = " ".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _, _ in _SECTIONS)
    parts = [
        f'<header class="top"><h1>{escape(title)}</h1>{verdict}{_meta_html(run, report)}'
        f'<nav class="toc"><a href="#findings">Findings</a> {toc} <a href="#layers">Layers</a></nav></header>',
        section("findings", "Findings", findings_html(list(report.findings)),
                "What gradvet diagnosed from this record, most severe first, with the measured evidence, the "
                "likely causes and what to change."),
    ]
    for anchor, heading, fn, note in _SECTIONS:
        chart = fn(run)
        if chart is None:
            if anchor == "activations":
                note = _smooth_only(run) or note + _unrecognised(run)
            parts.append(section(anchor, heading, missing(note)))
        else:
            parts.append(section(anchor, chart.title, chart.html(heading=False)))
    parts.append(section("layers", "Per-layer summary (last measured step)",
                         f'<div class="scroll">{layer_table_html(report.layers)}</div>'))
    parts.append('<footer>Made by gradvet from a run record; this file needs no network access.</footer>')
    return page(title, "\n".join(parts))


def write_report(record_path: PathLike, out_path: PathLike, title: str = "") -> Path:
    """Write a self-contained HTML report for a gradvet record.

    Args:
        record_path: a ``.gradvet`` record (``Monitor(record=...)``).
        out_path: the HTML file to write (parent folders are created).
        title: page title (default: "gradvet report: <record name>").

    Returns:
        The path written.

    Raises:
        FileNotFoundError: no record at ``record_path``.
        ValueError: the file is not a gradvet record, or ``out_path`` is that record.

    Example:
        >>> from gradvet.html import write_report
        >>> write_report("runs/exp1.gradvet", "runs/exp1.html")  # doctest: +SKIP
        PosixPath('runs/exp1.html')
    """
    from gradvet.record import load

    run = load(record_path)
    out = Path(out_path)
    if out.exists() and os.path.samefile(out, record_path):
        raise ValueError(f"the report would overwrite its own record {str(out)!r}; give another output file")
    out.parent.mkdir(parents=True, exist_ok=True)
    with np.errstate(all="ignore"):  # NaN/Inf steps are drawn, not warned about on the user's stderr
        html = render_report(run, title or f"gradvet report: {Path(record_path).name}")
    out.write_text(html, encoding="utf-8")
    return out
