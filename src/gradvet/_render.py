"""Terminal rendering of a Report with rich: gradient-flow bars, then findings."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import Any, Optional

from rich.console import Console, Group
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

_SEV_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}
_UNBOUNDED = 100_000  # columns offered when measuring a table's natural width


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


def _finite_pos(x: Optional[float]) -> bool:
    return x is not None and x > 0 and math.isfinite(x)


def layer_table(report: Any) -> Table:
    """Per-layer table: the gradient signal ||dL/d output|| as a log-scale bar, input side first."""
    layers = [x for x in report.layers if x.role != "other" or x.signal_norm is not None]
    vals = [x.signal_norm for x in layers if _finite_pos(x.signal_norm)]
    lo = math.log10(min(vals)) - 0.5 if vals else 0.0
    hi = math.log10(max(vals)) if vals else 1.0
    has_upd = any(x.update_ratio is not None for x in layers)
    table = Table(title="gradient flow, input side first (bar: ||dL/d output||, log scale)")
    cols = [("layer", "left"), ("type", "left"), ("act", "left"), ("|dL/dout|", "right"), ("", "left"),
            ("rms", "right"), ("|grad W|", "right")]
    cols += [("upd/W", "right")] if has_upd else []
    cols += [("sat", "right"), ("dead", "right")]
    for col, just in cols:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for x in layers:
        act = bool(x.activation)
        row = [x.name or "(root)", x.type, x.activation or "", _fmt(x.signal_norm), _bar(x.signal_norm, lo, hi),
               _fmt(x.signal_rms), _fmt(x.grad_norm)]
        row += [_fmt(x.update_ratio)] if has_upd else []
        row += [_fmt(x.sat_frac, True) if act else "", _fmt(x.dead_frac, True) if act else ""]
        table.add_row(*row)
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


def _tables(console: Console, obj: Any) -> Iterator[Table]:
    """The tables inside ``obj``: itself, a Group's children, what a gradvet object renders to."""
    if isinstance(obj, Table):
        yield obj
    elif isinstance(obj, Group):
        for part in obj.renderables:
            yield from _tables(console, part)
    elif not isinstance(obj, (str, Text, Panel)) and hasattr(obj, "__rich_console__"):
        for part in obj.__rich_console__(console, console.options):
            yield from _tables(console, part)


def natural_width(console: Console, obj: Any) -> int:
    """Columns the tables in ``obj`` need to show every cell whole (0 when it has none).

    Text and panels are left out: they wrap at any width without losing a character.
    """
    options = console.options.update_width(_UNBOUNDED)
    return max((Measurement.get(console, options, t).maximum for t in _tables(console, obj)), default=0)


def print_uncut(console: Console, obj: Any) -> None:
    """Print ``obj``; to a file or a pipe, at the width its tables need, so no cell is cut.

    On a terminal rich fits the window. Elsewhere it assumes 80 columns and cuts cells
    to fit (``1.22…``, ``8.37e-…``): a log file or ``gradvet show run.gradvet | cat``
    would lose the numbers. A file has no columns to fit, so there the console is widened
    for this one print (and restored).

    Example:
        >>> import io
        >>> from rich.console import Console
        >>> table = Table("layer", "value")
        >>> table.add_row("transformer.h.11.mlp.c_proj", "8.37e-05")
        >>> console = Console(file=io.StringIO(), width=20)
        >>> print_uncut(console, table)
        >>> "8.37e-05" in console.file.getvalue() and console.width == 20
        True
    """
    need = 0 if console.is_terminal else natural_width(console, obj)
    old = console.width
    if need <= old:
        console.print(obj)
        return
    console.width = need
    try:
        console.print(obj)
    finally:
        console.width = old


def to_text(renderable: Any, width: int = 120) -> str:
    """Plain text of any rich renderable (for ``str()``, logs and tests); tables wider than
    ``width`` are printed whole, never cut."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    print_uncut(console, renderable)
    return console.export_text()


def report_to_text(report: Any, width: int = 120) -> str:
    return to_text(report, width)
