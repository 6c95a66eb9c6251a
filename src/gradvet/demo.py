"""``gradvet demo``: diagnose a 10-layer sigmoid MLP on real digits, treat it, prove the cure.

``gradvet.treat`` diagnoses the sick net from one batch and applies the remedies it
ranks (for this net: ReLU, then He init), re-checking after each. Then the sick net
and the treated twin train for the same number of SGD steps under
``gradvet.Monitor(profile="full")``; the demo prints, side by side, the gradient signal
reaching each layer and each layer's |grad W|, then the loss of both and what gradvet
diagnosed for each. It reproduces the observation of Glorot & Bengio (2010) that deep
sigmoid nets barely train with plain SGD, and the cure of Glorot et al. (2011) and
He et al. (2015): ReLU with He init.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from torch import nn

import gradvet
from gradvet.data import digits
from gradvet.lab._models import MLP

DEPTH, WIDTH, LR, MOMENTUM, BATCH = 10, 64, 0.05, 0.9, 128


@dataclass
class DemoRun:
    """One trained model of the demo and its report."""

    label: str
    report: Any
    loss: float
    accuracy: float


def _train(label: str, model: nn.Module, steps: int, seed: int) -> DemoRun:
    data = digits()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss = torch.tensor(float("nan"))
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        for _ in range(steps):
            x, y = data.batch(BATCH, gen)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            monitor.step(loss)
            opt.step()
    with torch.no_grad():
        acc = (model(data.x_test).argmax(1) == data.y_test).float().mean()
    return DemoRun(label, monitor.report(), float(loss.detach()), float(acc))


def _check_steps(steps: Any) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"run_demo: steps must be an int >= 1, got {steps!r}")


def treat_model(seed: int = 0) -> tuple[nn.Module, Any]:
    """The sick sigmoid MLP and ``gradvet.treat``'s result for it (diagnosed on one batch)."""
    torch.manual_seed(seed)
    model = MLP(DEPTH, "sigmoid", "default", width=WIDTH)
    data = digits()
    batch = data.batch(256, torch.Generator().manual_seed(seed + 1))
    return model, gradvet.treat(model, batch, nn.functional.cross_entropy)


def run_models(steps: int = 60, seed: int = 0, treated: Any = None) -> tuple[DemoRun, DemoRun]:
    """Train the sigmoid MLP and its treated twin; same data order, same seed."""
    _check_steps(steps)
    model, result = treated if treated is not None else treat_model(seed)
    sick = _train("sigmoid, default init", model, steps, seed)
    label = "treated: " + " + ".join(r.id for r in result.applied) if result.applied else "treated (no change)"
    cured = _train(label, result.model, steps, seed)
    return sick, cured


def _linear_layers(report: Any) -> list[Any]:
    return [x for x in report.layers if x.type == "Linear"]


def _bar(x: Optional[float], lo: float, hi: float, width: int = 16) -> Text:
    if x is None or not x > 0 or not math.isfinite(x):
        return Text("·", style="dim")
    frac = min(1.0, max(0.0, (math.log10(x) - lo) / max(hi - lo, 1e-9)))
    style = "green" if frac > 0.6 else ("yellow" if frac > 0.3 else "red")
    return Text("█" * max(1, round(frac * width)), style=style)


def _sci(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1e}"


def layer_table(sick: DemoRun, cured: DemoRun, width: int = 120) -> Table:
    """Per-layer table: gradient signal (bar on one log scale for both) and |grad W|.

    ``width`` is the console width: the bars shrink to fit an 80-column terminal.
    """
    bar_width = max(5, min(16, (width - 64) // 2))
    a, b = _linear_layers(sick.report), _linear_layers(cured.report)
    vals = [x.signal_rms for x in a + b if x.signal_rms and x.signal_rms > 0 and math.isfinite(x.signal_rms)]
    lo, hi = (math.log10(min(vals)) - 0.3, math.log10(max(vals))) if vals else (0.0, 1.0)
    table = Table(title=f"Gradient reaching each layer after training, input side first (signal: RMS of "
                        f"dL/d output; bars: log scale {10**lo:.0e}..{10**hi:.0e})")
    table.add_column("layer", no_wrap=True)
    for short in ("sigmoid", "treated"):
        table.add_column(f"{short}\nsignal", justify="right", no_wrap=True)
        table.add_column("", justify="left", no_wrap=True, min_width=bar_width)
        table.add_column("\n|grad W|", justify="right", no_wrap=True)
    for x, y in zip(a, b):
        table.add_row(x.name, _sci(x.signal_rms), _bar(x.signal_rms, lo, hi, bar_width), _sci(x.grad_norm),
                      _sci(y.signal_rms), _bar(y.signal_rms, lo, hi, bar_width), _sci(y.grad_norm))
    return table


def first_last_ratio(run: DemoRun) -> float:
    """Gradient signal reaching the first Linear layer over that reaching the last."""
    layers = _linear_layers(run.report)
    first, last = layers[0].signal_rms, layers[-1].signal_rms
    return float(first / last) if first is not None and last else float("nan")


def summary_table(sick: DemoRun, cured: DemoRun) -> Table:
    table = Table(title=f"After training ({sick.report.steps} SGD steps, lr {LR}, momentum {MOMENTUM}, batch {BATCH})")
    table.add_column("")
    table.add_column(sick.label, justify="right")
    table.add_column(cured.label, justify="right")
    table.add_row("first / last layer gradient signal", f"{first_last_ratio(sick):.1e}", f"{first_last_ratio(cured):.1e}")
    table.add_row("training loss (last batch)", f"{sick.loss:.3f}", f"{cured.loss:.3f}")
    table.add_row("test accuracy", f"{100 * sick.accuracy:.1f}%", f"{100 * cured.accuracy:.1f}%")
    table.add_row("gradvet verdict", "healthy" if sick.report.healthy else ", ".join(sick.report.kinds()),
                  "healthy" if cured.report.healthy else ", ".join(cured.report.kinds()))
    return table


def findings_group(run: DemoRun) -> Group:
    """The findings of one model, as rich panels (or a one-line "no findings")."""
    from gradvet._render import finding_panel

    if not run.report.findings:
        return Group(Text(f"{run.label}: no findings.", style="green"))
    return Group(*[finding_panel(f) for f in run.report.findings])


def run_demo(console: Optional[Console] = None, steps: int = 60, seed: int = 0) -> tuple[DemoRun, DemoRun]:
    """Train both models and print the comparison and each one's findings.

    Args:
        console: where to print (default: a new ``rich.console.Console``).
        steps: SGD steps per model.
        seed: seed of the initial weights and the batch order.

    Returns:
        ``(sigmoid run, ReLU + He run)`` with their reports.

    Raises:
        ValueError: ``steps`` is not a positive int.

    Example:
        >>> from gradvet.demo import run_demo
        >>> sick, cured = run_demo(steps=60)  # doctest: +SKIP
    """
    console = console or Console()
    console.print(Panel(
        f"A {DEPTH}-layer sigmoid MLP (width {WIDTH}, PyTorch's default init) is to learn scikit-learn's "
        "handwritten digits with plain SGD. gradvet.treat diagnoses it on one batch and applies the remedies "
        "it ranks, re-checking after each; then both nets train, watched by gradvet.Monitor(profile='full').",
        title="gradvet demo"))
    _check_steps(steps)
    with console.status("diagnosing and treating..."):
        treated = treat_model(seed)
    console.rule("gradvet.treat")
    console.print(treated[1])
    with console.status("training both models..."):
        sick, cured = run_models(steps, seed, treated)
    console.print(layer_table(sick, cured, console.width))
    console.print(summary_table(sick, cured))
    for run in (sick, cured):
        console.rule(f"gradvet's findings: {run.label}")
        console.print(findings_group(run))
    return sick, cured
