"""The one-line reading of each cure, computed from its numbers against the baseline's, and the cures table."""

from __future__ import annotations

import math
from html import escape
from typing import Any, Optional

from gradvet.lab._cure_list import Cure

#: A final training loss below this (chance on digits is ln 10 = 2.30) counts as learning; between it
#: and NEAR_CHANCE the net is learning slowly.
LEARNED, NEAR_CHANCE = 1.0, 2.1


def decades(r: dict[str, Any], base: dict[str, Any]) -> Optional[float]:
    """log10 of the cure's first-layer signal at the start of training over the baseline's."""
    a, b = r.get("first_signal_init"), base.get("first_signal_init")
    if not a or not b or a <= 0 or b <= 0:
        return None
    return math.log10(a / b)


def reading(cure: Cure, r: dict[str, Any], base: dict[str, Any]) -> str:
    """What the cure did, in one line: its mechanism, then the measured gradient and learning.

    Example:
        >>> base = {"first_signal_init": 1e-11, "final_loss": 2.3, "test_accuracy": 0.1}
        >>> r = {"first_signal_init": 1e-4, "final_loss": 0.05, "test_accuracy": 0.96}
        >>> reading(Cure("x", "f", "it helps"), r, base)
        'it helps: +7.0 decades of gradient at the first layer; learns (loss 0.050, 96% on test).'
    """
    if r is base:
        return (f"{cure.why}: the first layer gets {_sci(r.get('first_signal_init'))} of gradient signal and "
                f"{_outcome(r)}.")
    dec = decades(r, base)
    flow = "first-layer signal not measured" if dec is None else f"{dec:+.1f} decades of gradient at the first layer"
    learned = r["final_loss"] is not None and r["final_loss"] < LEARNED
    note = ""
    if dec is not None and learned and abs(dec) < 1:
        note = ": it learns without more gradient reaching the first layer"
    elif dec is not None and not learned and dec >= 2:
        note = ": more gradient, not enough to train in these steps"
    elif dec is not None and not learned and abs(dec) < 1:
        note = ": the gradient still vanishes"
    return f"{cure.why}: {flow}; {_outcome(r)}{note}."


def _outcome(r: dict[str, Any]) -> str:
    loss = r["final_loss"]
    if loss is None:
        return "diverged"
    acc = f"{100 * r['test_accuracy']:.0f}% on test"
    if loss < LEARNED:
        return f"learns (loss {loss:.3f}, {acc})"
    return f"learns slowly (loss {loss:.2f}, {acc})" if loss < NEAR_CHANCE else f"stays near chance (loss {loss:.2f}, {acc})"


def _sci(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1e}"


def table(cures: dict[str, dict[str, Any]]) -> str:
    """HTML table: cure, first-layer signal at the start, first / last layer, loss, test accuracy, findings, reading."""
    head = ("<tr><th>cure</th><th>first-layer signal</th><th>first / last layer</th><th>loss</th>"
            "<th>test accuracy</th><th>gradvet's findings</th><th>reading</th></tr>")
    rows = []
    for label, r in cures.items():
        loss = "diverged" if r["final_loss"] is None else f"{r['final_loss']:.3f}"
        rows.append(
            f"<tr><td>{escape(label)}</td><td>{_sci(r['first_signal_init'])}</td>"
            f"<td>{_sci(r['first_over_last_init'])}</td><td>{loss}</td><td>{100 * r['test_accuracy']:.0f}%</td>"
            f"<td>{escape(', '.join(sorted(set(r['findings']))) or '-')}</td><td>{escape(r['reading'])}</td></tr>"
        )
    return f'<div class="scroll"><table class="cures">{head}{"".join(rows)}</table></div>'
