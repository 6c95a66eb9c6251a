"""Terminal rendering of a TreatResult: what was tried, what changed, before vs after."""

from __future__ import annotations

import math
from typing import Any, Optional

from rich.console import Group
from rich.table import Table
from rich.text import Text

from gradvet._render import plain, to_text

_OUTCOME_STYLE = {"kept": "green", "reverted": "yellow", "no change": "dim", "not applicable": "dim", "failed": "red"}


def _sci(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2e}"


def _verdict(report: Any) -> Text:
    if report.healthy:
        return Text("healthy", style="green")
    return Text(", ".join(f"{f.kind} ({f.severity})" for f in report.findings if f.severity != "info"), style="red")


def attempts_table(result: Any) -> Table:
    """One row per remedy tried, with its outcome and what it changed."""
    table = Table(title="remedies tried, in order")
    for col in ("remedy", "outcome", "measured", "changes"):
        table.add_column(col)
    changes = {res.id: res.changes for res in result.applied}
    for a in result.attempts:
        edits = changes.get(a.remedy, []) if a.outcome == "kept" else []
        shown = "; ".join(f"{c.module or '(root)'}: {c.old} -> {c.new}" for c in edits[:4])
        if len(edits) > 4:
            shown += f"; ... ({len(edits)} changes)"
        table.add_row(plain(a.remedy), plain(a.outcome, _OUTCOME_STYLE.get(a.outcome, "")), plain(a.reason), plain(shown))
    return table


def before_after_table(result: Any) -> Table:
    """Per-layer gradient signal (RMS of dL/d output) before and after, matched by position."""
    before = [x for x in result.before.layers if x.role == "param"]
    after = [x for x in result.after.layers if x.role == "param"]
    table = Table(title="gradient signal reaching each layer, RMS of dL/d output (input side first)")
    for col, just in (("#", "right"), ("layer before", "left"), ("before", "right"), ("layer after", "left"),
                      ("after", "right"), ("change", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for i in range(max(len(before), len(after))):
        b = before[i] if i < len(before) else None
        a = after[i] if i < len(after) else None
        bv, av = (b.signal_rms if b else None), (a.signal_rms if a else None)
        change = ""
        if bv and av and bv > 0 and av > 0 and math.isfinite(bv) and math.isfinite(av):
            change = f"{math.log10(av / bv):+.1f} dec"
        table.add_row(str(i), plain(b.name if b else ""), _sci(bv), plain(a.name if a else ""), _sci(av), change)
    return table


def _first_vs_last(profile: list[float]) -> Optional[float]:
    """Gradient reaching the first time step over the last one (None without a usable profile)."""
    if len(profile) < 2 or not (profile[-1] > 0) or not all(math.isfinite(v) for v in (profile[0], profile[-1])):
        return None
    return profile[0] / profile[-1]


def time_table(result: Any) -> Optional[Table]:
    """Per recurrent layer: gradient reaching the first time step over the last, before and after."""
    before = {x.name: x.time_profile for x in result.before.layers if x.time_profile}
    after = {x.name: x.time_profile for x in result.after.layers if x.time_profile}
    if not before and not after:
        return None
    table = Table(title="gradient reaching the first time step / the last, per recurrent layer")
    for col, just in (("layer", "left"), ("steps", "right"), ("before", "right"), ("after", "right"),
                      ("change", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for name in list(before) + [n for n in after if n not in before]:
        b, a = _first_vs_last(before.get(name) or []), _first_vs_last(after.get(name) or [])
        change = f"{math.log10(a / b):+.1f} dec" if a and b else ""
        steps = len(after.get(name) or before.get(name) or [])
        table.add_row(plain(name or "(root)"), str(steps), _sci(b), _sci(a), change)
    return table


def render_treat(result: Any) -> Group:
    """The whole treatment as a rich renderable."""
    parts: list[Any] = [
        Text.assemble(("before: ", "bold"), _verdict(result.before)),
        Text.assemble(("after:  ", "bold"), _verdict(result.after)),
        attempts_table(result) if result.attempts else Text("nothing to treat", style="green"),
        before_after_table(result),
    ]
    times = time_table(result)
    if times is not None:
        parts.append(times)
    if result.prescriptions:
        parts.append(Text("still to do in the training loop (not applied by gradvet):", style="bold"))
        for rem in result.prescriptions:
            parts.append(Text(f"  {rem.id}: {rem.explanation}"))
            parts.append(Text("    " + rem.snippet.replace("\n", "\n    "), style="cyan"))
    return Group(*parts)


def treat_to_text(result: Any, width: int = 120) -> str:
    """Plain-text rendering (for logs and tests)."""
    return to_text(render_treat(result), width)
