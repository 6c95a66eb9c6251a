"""Terminal rendering of a Report with rich: gradient-flow bars, then findings."""

from __future__ import annotations

import math
from typing import Any, Optional

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

_SEV_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}


def _fmt(x: Optional[float], pct: bool = False) -> str:
    if x is None:
        return "-"
    if pct:
        return f"{100 * x:.0f}%"
    return f"{x:.2e}"


def _bar(x: Optional[float], lo: float, hi: float, width: int = 24) -> Text:
    """A log-scale bar: the gradient signal spans decades."""
    if x is None or x <= 0 or not math.isfinite(x):
        return Text("·" if x == 0 else "?", style="dim")
    frac = 1.0 if hi <= lo else (math.log10(x) - lo) / (hi - lo)
    n = max(1, round(frac * width))
    style = "green" if frac > 0.5 else ("yellow" if frac > 0.2 else "red")
    return Text("█" * n, style=style)


def layer_table(report: Any) -> Table:
    vals = [l.signal_rms for l in report.layers if l.signal_rms and l.signal_rms > 0 and math.isfinite(l.signal_rms)]
    lo = math.log10(min(vals)) - 0.5 if vals else 0.0
    hi = math.log10(max(vals)) if vals else 1.0
    table = Table(title="gradient flow, input side first (bar: per-element dL/d output, log scale)")
    for col, just in (("layer", "left"), ("type", "left"), ("act", "left"), ("|dL/dout| rms", "right"),
                      ("", "left"), ("|grad W|", "right"), ("upd/W", "right"), ("sat", "right"), ("dead", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for l in report.layers:
        table.add_row(
            l.name or "(root)", l.type, l.activation or "", _fmt(l.signal_rms), _bar(l.signal_rms, lo, hi),
            _fmt(l.grad_norm), _fmt(l.update_ratio), _fmt(l.sat_frac, True), _fmt(l.dead_frac, True),
        )
    return table


def finding_panel(f: Any) -> Panel:
    body = Text()
    body.append("layers: ", style="bold")
    body.append(", ".join(f.layers) if f.layers else "(model)")
    body.append("\n" + f.evidence + "\n")
    if f.causes:
        body.append("likely causes:\n", style="bold")
        for c in f.causes:
            body.append(f"  • {c.reason}\n")
    if f.remedies:
        body.append("prescription:\n", style="bold")
        for r in f.remedies:
            body.append(f"  ➜ [{r.id}] {r.explanation}\n")
    return Panel(body, title=f"{f.severity.upper()}: {f.kind}", border_style=_SEV_STYLE.get(f.severity, "white"))


def render_report(report: Any) -> Any:
    parts: list[Any] = [layer_table(report)]
    if report.findings:
        parts.extend(finding_panel(f) for f in report.findings)
    else:
        parts.append(Text("no findings: gradients look healthy", style="bold green"))
    yield Group(*parts)


def report_to_text(report: Any, width: int = 120) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"), color_system=None)  # noqa: SIM115
    console.print(report)
    return console.export_text()
