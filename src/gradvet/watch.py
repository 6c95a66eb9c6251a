"""``gradvet watch``: a live terminal view of a run in progress, tailing its record.

Another process trains with ``gradvet.Monitor(record=path)``; the record is SQLite in
WAL mode, so this process can read it while it is written. Each frame is a pure
function of the :class:`gradvet.Run` read back (:func:`render_frame`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gradvet._render import clean, plain, print_uncut
from gradvet.html._data import layer_label, signal_layers
from gradvet.record._run import Run

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray, width: int = 60) -> str:
    """The last values as a one-line block chart (log scale when they span decades; '×' for non-finite)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return ""
    if v.size > width:  # mean of equal chunks keeps the shape of a long run
        v = np.array([c.mean() for c in np.array_split(v, width)])
    ok = np.isfinite(v)
    if ok.any() and (v[ok] > 0).all() and v[ok].max() / v[ok].min() > 30:
        v = np.where(ok, np.log10(np.where(ok, v, 1.0)), np.nan)
    lo, hi = (np.nanmin(v), np.nanmax(v)) if ok.any() else (0.0, 1.0)
    out = []
    for x in v:
        if not math.isfinite(x):
            out.append("×")
        else:
            out.append(_SPARKS[int(round((x - lo) / (hi - lo) * (len(_SPARKS) - 1))) if hi > lo else 0])
    return "".join(out)


def _signal_table(run: Run) -> Optional[Table]:
    layers = signal_layers(run)
    s = run.get("layer/grad_rms")
    if s is None or not len(s.steps) or not layers:
        return None
    row = s.values[-1]
    vals = [float(row[x["index"]]) if x["index"] < len(row) else math.nan for x in layers]
    pos = [v for v in vals if v > 0 and math.isfinite(v)]
    hi = math.log10(max(pos)) if pos else 1.0
    lo = min(math.log10(min(pos)) - 0.3, hi - 3.0) if pos else 0.0  # at least 3 decades: flat looks flat
    table = Table(title=f"gradient signal at step {int(s.steps[-1])}, input side first (bars: log scale)",
                  title_justify="left", expand=False)
    table.add_column("layer")
    table.add_column("RMS dL/d out", justify="right")
    table.add_column("", min_width=30)
    for layer, v in zip(layers, vals):
        if v > 0 and math.isfinite(v):
            frac = (math.log10(v) - lo) / max(hi - lo, 1e-9)
            style = "green" if frac > 0.6 else ("yellow" if frac > 0.3 else "red")
            bar = Text("█" * max(1, round(30 * frac)), style=style)
        else:
            bar = Text("non-finite" if not math.isfinite(v) else "0", style="bold red")
        table.add_row(plain(layer_label(layer)), f"{v:.2e}", bar)
    return table


def _findings(run: Run) -> Any:
    try:
        report = run.report()
    except Exception as e:  # a half-written record must not stop the view
        log.debug("watch: diagnosis failed: %s", e)
        return Text(f"(diagnosis unavailable: {type(e).__name__})", style="dim")
    if not report.findings:
        return Text("no findings so far", style="green")
    lines = Text()
    for f in report.findings:
        style = {"error": "bold red", "warning": "yellow"}.get(f.severity, "cyan")
        lines.append(f"{f.severity.upper()} {f.kind}: ", style=style)
        lines.append(clean(f.evidence) + "\n")
    return lines


def render_frame(run: Run, path: PathLike = "") -> Group:
    """One frame of the live view for ``run`` (pure: no I/O)."""
    meta = run.meta
    loss = run.loss
    status = meta.get("status", "running")
    head = Text()
    head.append(clean(f"{path}  "), style="bold")
    head.append(clean(f"model {meta.get('model', '?')}  steps {len(run.steps)}  status {status}"))
    parts: list[Any] = [head]
    if len(loss):
        last = float(loss[-1])
        parts.append(Text(f"loss {sparkline(loss)}  latest {last:.4g}"))
    table = _signal_table(run)
    parts.append(table if table is not None else Text("no per-layer step recorded yet", style="dim"))
    parts.append(Panel(_findings(run), title="findings", title_align="left"))
    return Group(*parts)


def _read(path: Path) -> Optional[Run]:
    from gradvet.record import load

    try:
        return load(path)
    except FileNotFoundError:
        return None


def _frame(path: Path) -> tuple[Any, bool]:
    """The renderable for the record at ``path`` and whether the run has ended."""
    try:
        run = _read(path)
    except ValueError as e:
        # The writer creates the file an instant before its tables: keep polling (and show
        # why) rather than end a live view the run is about to fill.
        return plain(f"waiting for {path} to become a gradvet record ({e}) ...", style="dim"), False
    if run is None:
        return plain(f"waiting for {path} ...", style="dim"), False
    done = str(run.meta.get("status", "")).startswith(("finished", "crashed", "record write failed"))
    return render_frame(run, path), done


def watch(record_path: PathLike, interval: float = 2.0, once: bool = False, console: Optional[Console] = None) -> None:
    """Show a live view of the record at ``record_path`` until the run ends (or Ctrl-C).

    Args:
        record_path: the ``.gradvet`` record another process is writing.
        interval: seconds between refreshes.
        once: render a single frame and return (the record must exist).
        console: where to draw (default: a new ``rich.console.Console``).

    Raises:
        ValueError: ``interval`` is not positive.
        FileNotFoundError: ``once`` and there is no record at ``record_path``.

    Example:
        >>> from gradvet.watch import watch
        >>> watch("runs/exp1.gradvet", once=True)  # doctest: +SKIP
    """
    if not interval > 0:
        raise ValueError(f"watch: interval must be > 0 seconds, got {interval!r}")
    console = console or Console()
    path = Path(record_path)
    if once:
        run = _read(path)
        if run is None:
            raise FileNotFoundError(f"no gradvet record at {str(path)!r}; pass the path given to Monitor(record=...)")
        print_uncut(console, render_frame(run, path))
        return
    frame, done = _frame(path)
    if not console.is_terminal:  # a log or a pipe: no live redraw, the final frame, uncut
        try:
            while not done:
                time.sleep(interval)
                frame, done = _frame(path)
        except KeyboardInterrupt:
            pass
        print_uncut(console, frame)
        return
    with Live(frame, console=console, refresh_per_second=4, transient=False) as live:
        try:
            while not done:
                time.sleep(interval)
                frame, done = _frame(path)
                live.update(frame)
        except KeyboardInterrupt:
            pass
