"""Terminal rendering of a Report with rich: gradient-flow bars, then findings."""

from __future__ import annotations

import io
import math
import re
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from rich.console import Console, Group
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

_SEV_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}
_UNBOUNDED = 100_000  # columns offered when measuring a table's natural width
#: above this many rows the table groups repeated blocks (``h.0 .. h.11``) and drops parameter-free modules
COMPACT_ABOVE = 40
#: a repeated position is grouped when this many blocks share it
GROUP_MIN = 3


# terminal escape sequences (CSI, OSC up to BEL/ST, and the two-byte ones, 7- and 8-bit), then any other
# control character: a module name must not clear the screen, retitle the window or hide a hyperlink
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?|\x1b[@-_]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # newline and tab are kept


def clean(s: Any) -> str:
    r"""``s`` as a string with terminal escape sequences and control characters removed.

    Example:
        >>> clean("blk\x1b]0;pwned\x07.0\x1b[2J")
        'blk.0'
    """
    return _CONTROL.sub("", _ESCAPES.sub("", str(s)))


def plain(s: Any, style: str = "") -> Text:
    """A user-supplied string (module name, class name, path) as literal text: never read as
    rich markup (``[/]`` would raise, ``[bold red]x`` would style), control characters removed.

    Example:
        >>> plain("[bold red]x").plain
        '[bold red]x'
    """
    return Text(clean(s), style=style)


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


@dataclass
class _Row:
    """One table row: a layer, or a group of layers at the same position of repeated blocks."""

    name: str
    layers: list[Any]

    @property
    def first(self) -> Any:
        return self.layers[0]

    def median(self, attr: str) -> Optional[float]:
        vals = [v for v in (getattr(x, attr) for x in self.layers) if v is not None and math.isfinite(v)]
        return statistics.median(vals) if vals else None

    def span(self, attr: str) -> str:
        vals = [v for v in (getattr(x, attr) for x in self.layers) if v is not None and math.isfinite(v)]
        return f"{min(vals):.2e}..{max(vals):.2e}" if len(self.layers) > 1 and vals else ""


def _position(name: str) -> tuple[str, tuple[int, ...]]:
    """``"transformer.h.3.attn.c_attn"`` -> ``("transformer.h.*.attn.c_attn", (3,))``."""
    parts = name.split(".")
    idx = tuple(int(p) for p in parts if p.isdigit())
    return ".".join("*" if p.isdigit() else p for p in parts), idx


def _group_name(key: str, members: Sequence[Any]) -> str:
    """``transformer.h.{0..11}.attn.c_attn``: each index position as the range it spans."""
    idx = [_position(x.name)[1] for x in members]
    parts, k = [], 0
    for p in key.split("."):
        if p == "*":
            vals = sorted({i[k] for i in idx})
            parts.append(f"{{{vals[0]}..{vals[-1]}}}" if len(vals) > 1 else str(vals[0]))
            k += 1
        else:
            parts.append(p)
    return ".".join(parts)


def table_rows(report: Any, full: bool = False) -> list[_Row]:
    """The rows of the layer table, input side first.

    In full, or up to :data:`COMPACT_ABOVE` layers: one row per layer. Larger models get what a
    person can read: the first and last layers and every layer a finding names on rows of their
    own, the layers at one position of repeated blocks (``h.0 .. h.11``, >= 3 of them) on one row
    (median values, the span of ||dL/d output||), parameter-free modules (dropout, containers) left out.
    """
    layers = [x for x in report.layers if x.role != "other" or x.signal_norm is not None]
    if full or len(layers) <= COMPACT_ABOVE:
        return [_Row(x.name or "(root)", [x]) for x in layers]
    named = {n for f in report.findings for n in f.layers}
    keep = named | {layers[0].name, layers[-1].name}
    layers = [x for x in layers if x.role != "other" or x.name in keep]
    groups: dict[tuple[str, str], list[Any]] = {}
    for x in layers:
        key, idx = _position(x.name)
        if idx and x.name not in keep:
            groups.setdefault((key, x.type), []).append(x)
    rows: list[_Row] = []
    placed: set[tuple[str, str]] = set()
    for x in layers:
        key, idx = _position(x.name)
        members = groups.get((key, x.type), [])
        if x.name in keep or not idx or len(members) < GROUP_MIN:
            rows.append(_Row(x.name or "(root)", [x]))
        elif (key, x.type) not in placed:
            placed.add((key, x.type))
            rows.append(_Row(_group_name(key, members), members))
    return rows


def layer_table(report: Any, full: bool = False) -> Table:
    """Per-layer table: the gradient signal ||dL/d output|| as a log-scale bar, input side first
    (large models compact, :func:`table_rows`)."""
    rows = table_rows(report, full)
    n_layers = sum(len(r.layers) for r in rows)
    grouped = any(len(r.layers) > 1 for r in rows)
    vals: list[float] = [v for r in rows for v in [r.median("signal_norm")] if v is not None and _finite_pos(v)]
    lo = math.log10(min(vals)) - 0.5 if vals else 0.0
    hi = math.log10(max(vals)) if vals else 1.0
    has_upd = any(x.update_ratio is not None for r in rows for x in r.layers)
    title = "gradient flow, input side first (bar: ||dL/d output||, log scale)"
    caption = None
    if grouped or len(rows) < len([x for x in report.layers if x.role != "other" or x.signal_norm is not None]):
        caption = (f"{n_layers} layers on {len(rows)} rows: repeated blocks grouped (median; span: min..max of "
                   "|dL/dout|), parameter-free modules left out; every layer: gradvet show --all, "
                   "report.table(full=True)")
    table = Table(title=title, caption=caption)
    cols = [("layer", "left"), ("type", "left"), ("act", "left"), ("|dL/dout|", "right"), ("", "left")]
    cols += [("span", "right")] if grouped else []
    cols += [("rms", "right"), ("|grad W|", "right")]
    cols += [("upd/W", "right")] if has_upd else []
    cols += [("sat", "right"), ("dead", "right")]
    for col, just in cols:
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        x = r.first
        act = bool(x.activation)
        sig = r.median("signal_norm")
        row: list[Any] = [plain(r.name), plain(x.type), plain(x.activation or ""), _fmt(sig), _bar(sig, lo, hi)]
        row += [r.span("signal_norm")] if grouped else []
        tied = x.tied_to and r.median("grad_norm") is None
        gw = plain(f"tied: {x.tied_to}") if tied else _fmt(r.median("grad_norm"))
        row += [_fmt(r.median("signal_rms")), gw]
        row += [_fmt(r.median("update_ratio"))] if has_upd else []
        row += [_fmt(r.median("sat_frac"), True) if act else "", _fmt(r.median("dead_frac"), True) if act else ""]
        table.add_row(*row)
    return table


def finding_panel(f: Any) -> Panel:
    body = Text()
    body.append("layers: ", style="bold")
    body.append(clean(", ".join(f.layers)) if f.layers else "(model)")
    body.append("\n" + clean(f.evidence) + "\n")
    if f.causes:
        body.append("likely causes:\n", style="bold")
        for c in f.causes:
            body.append(f"  • {clean(c.reason)}\n")
    if f.remedies:
        body.append("prescription:\n", style="bold")
        for r in f.remedies:
            body.append(f"  ➜ [{clean(r.id)}] {clean(r.explanation)}\n")
    return Panel(body, title=plain(f"{f.severity.upper()}: {f.kind}"), border_style=_SEV_STYLE.get(f.severity, "white"))


def render_report(report: Any, full: bool = False) -> Any:
    parts: list[Any] = []
    bad = getattr(report, "nonfinite_from", None)
    if bad is not None:
        parts.append(Text(f"non-finite (NaN/Inf) from step {bad} to the end: the table shows each layer's "
                          "last finite values, the loss its last finite one", style="bold red"))
    parts.append(layer_table(report, full))
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
