"""Findings (with evidence, causes and prescriptions) and the per-layer table as HTML."""

from __future__ import annotations

import math
from html import escape
from typing import Any, Optional


def findings_html(findings: list[Any]) -> str:
    """One card per finding, most severe first; "no findings" when the list is empty."""
    if not findings:
        return '<p class="no-findings">No findings: gradvet saw nothing wrong with the gradients of this run.</p>'
    return "\n".join(_finding(f) for f in findings)


def _finding(f: Any) -> str:
    layers = ", ".join(f"<code>{escape(x)}</code>" for x in f.layers) or "(whole model)"
    parts = [
        f'<article class="finding {escape(f.severity)}" data-kind="{escape(f.kind)}">',
        f'<h3><span class="badge">{escape(f.severity)}</span> {escape(f.kind.replace("_", " "))}</h3>',
        f'<p class="layers">Layers: {layers}</p>',
        f'<p class="evidence">{escape(f.evidence)}</p>',
    ]
    if f.causes:
        parts.append("<h4>Likely causes</h4><ol>")
        parts += [f"<li>{escape(c.reason)}</li>" for c in f.causes]
        parts.append("</ol>")
    if f.remedies:
        parts.append("<h4>Prescription</h4><ol>")
        for r in f.remedies:
            snippet = f"<pre><code>{escape(r.snippet)}</code></pre>" if r.snippet else ""
            parts.append(f"<li><code>{escape(r.id)}</code> {escape(r.explanation)}{snippet}</li>")
        parts.append("</ol>")
    parts.append("</article>")
    return "\n".join(parts)


def _num(x: Optional[float], pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.0f}%" if pct else f"{x:.2e}"


def _applies(layer: Any, stat: str) -> bool:
    from gradvet.html._data import applicable

    return bool(layer.activation) and applicable({"activation": layer.activation}, stat)


def layer_table_html(layers: list[Any]) -> str:
    """The per-layer summary (last measured values), input side first."""
    head = ("layer", "type", "activation", "gradient signal (RMS)", "|grad W|", "update / weight", "saturated", "dead")
    rows = []
    for x in layers:
        if not x.name or x.role == "other":  # containers and the root repeat their last child
            continue
        cells = (
            f"<code>{escape(x.name or '(model)')}</code>", escape(x.type), escape(x.activation or ""),
            _num(x.signal_rms),
            f"tied to <code>{escape(x.tied_to)}</code>" if getattr(x, "tied_to", "") and x.grad_norm is None
            else _num(x.grad_norm),
            _num(x.update_ratio),
            _num(x.sat_frac, True) if _applies(x, "sat_frac") else "",
            _num(x.dead_frac, True) if _applies(x, "dead_frac") else "",
        )
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in head)
    return f'<table class="layers"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
