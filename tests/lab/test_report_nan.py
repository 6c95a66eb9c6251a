"""A run that goes NaN shows its failure in the HTML report (issue 14, faults 4 and 7): the step it went
NaN/Inf is marked in every time chart at that step, NaN/Inf heatmap cells have their own colour and legend
entry, legends name only drawn lines, step axes span the recorded steps with integer ticks, and
``gradvet report`` warns nothing."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradvet
from gradvet.html import grad_w_heatmap, lines_chart, loss_chart, signal_heatmap, update_ratio_chart
from gradvet.html._svg import MISSING, NONFINITE
from gradvet.report import nonfinite_from

NAN_AT = 6
STEPS = 10
TEXT = re.compile(r'<text style="([^"]*)" x="([-\d.]+)" y="([-\d.]+)"[^>]*>([^<]*)</text>')


def record(path: Path, nan_at: int | None = NAN_AT, steps: int = STEPS, zero_bias: bool = False) -> Path:
    """A small MLP trained by SGD; at step ``nan_at`` one weight becomes NaN, so everything after is NaN."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    if zero_bias:
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gradvet.Monitor(model, optimizer=opt, record=path, profile="full") as monitor:
        for step in range(steps):
            if step == nan_at:
                with torch.no_grad():
                    model[2].weight[0, 0] = float("nan")
            opt.zero_grad()
            loss = model(torch.randn(16, 4)).pow(2).mean()
            loss.backward()
            monitor.step(loss)
            opt.step()
    return path


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory: pytest.TempPathFactory) -> gradvet.Run:
    run = gradvet.load(record(tmp_path_factory.mktemp("nan") / "nan.gradvet"))
    assert nonfinite_from(run) == NAN_AT
    return run


@pytest.fixture(scope="module")
def ok_run(tmp_path_factory: pytest.TempPathFactory) -> gradvet.Run:
    return gradvet.load(record(tmp_path_factory.mktemp("ok") / "ok.gradvet", nan_at=None))


def x_ticks(svg: str) -> dict[float, float]:
    """Numeric x tick labels (centred text under the axes) -> their x position in the SVG."""
    out = {}
    for style, x, _, label in TEXT.findall(svg):
        label = label.replace("−", "-")
        if "text-anchor: middle" in style and re.fullmatch(r"-?\d+(\.\d+)?", label):
            out[float(label)] = float(x)
    return out


def step_to_px(svg: str) -> tuple[float, float]:
    """``(a, b)`` with ``x_px = a * step + b``, from the x tick labels."""
    ticks = x_ticks(svg)
    assert len(ticks) >= 2, ticks
    a, b = np.polyfit(list(ticks), list(ticks.values()), 1)
    return float(a), float(b)


def group(svg: str, gid: str) -> str:
    m = re.search(rf'<g id="{gid}">(.*?)</g>', svg, re.S)
    assert m, f"no <g id={gid!r}> in the chart"
    return m.group(1)


def path_xs(block: str) -> list[list[float]]:
    """The x coordinates of each path of an SVG fragment (``M x y L x y ...``)."""
    return [[float(v) for v in re.findall(r"([-\d.]+) [-\d.]+", d)] for d in re.findall(r'<path d="([^"]*)"', block)]


def legend_labels(svg: str) -> set[str]:
    """Left-anchored, non-numeric texts: the legend entries (and the NaN/Inf marker's label, dropped)."""
    return {label.strip() for style, _, _, label in TEXT.findall(svg)
            if "text-anchor: start" in style and not re.fullmatch(r"[-−\d.e+]+", label.strip())
            and not label.strip().startswith("NaN/Inf from")}


def assert_ticks_are_steps(svg: str, first: int, last: int) -> None:
    ticks = x_ticks(svg)
    assert ticks and all(t == int(t) and first <= t <= last for t in ticks), ticks


@pytest.mark.parametrize("chart", [loss_chart, signal_heatmap, grad_w_heatmap, update_ratio_chart])
def test_every_time_chart_marks_the_step_the_run_went_nonfinite(nan_run: gradvet.Run, chart) -> None:
    c = chart(nan_run)
    assert c is not None
    a, b = step_to_px(c.svg)
    xs = path_xs(group(c.svg, f"{c.name}-nonfinite-from"))
    assert xs and all(x == pytest.approx(a * NAN_AT + b, abs=0.5) for x in xs[0])
    assert f"NaN/Inf from step {NAN_AT}" in group(c.svg, f"{c.name}-nonfinite-label")
    assert_ticks_are_steps(c.svg, 0, STEPS - 1)


@pytest.mark.parametrize("chart", [loss_chart, signal_heatmap, grad_w_heatmap, update_ratio_chart])
def test_a_finite_run_has_no_marker(ok_run: gradvet.Run, chart) -> None:
    c = chart(ok_run)
    assert "nonfinite" not in c.svg and "NaN/Inf" not in c.svg


def test_loss_axis_spans_every_recorded_step(nan_run: gradvet.Run) -> None:
    svg = loss_chart(nan_run).svg
    assert max(x_ticks(svg)) == STEPS - 1  # the axis goes on past the last finite loss


@pytest.mark.parametrize("chart", [signal_heatmap, grad_w_heatmap])
def test_heatmap_nonfinite_cells_have_their_own_colour_and_legend(nan_run: gradvet.Run, chart) -> None:
    c = chart(nan_run)
    a, b = step_to_px(c.svg)
    cells = group(c.svg, f"{c.name}-nonfinite")
    assert f"fill: {NONFINITE}" in cells and NONFINITE != MISSING
    rects = path_xs(cells)
    assert len(rects) == 3  # one run of red cells per Linear layer
    for xs in rects:  # each row red from half way between steps 5 and 6 to the last step
        assert min(xs) == pytest.approx(a * (NAN_AT - 0.5) + b, abs=0.5)
        assert max(xs) == pytest.approx(a * (STEPS - 1) + b, abs=0.5)
    assert "NaN/Inf" in legend_labels(c.svg) and "not measured or zero" not in legend_labels(c.svg)


def test_heatmap_legend_lists_only_the_cells_shown(ok_run: gradvet.Run) -> None:
    from gradvet.html import heatmap_chart

    assert legend_labels(signal_heatmap(ok_run).svg) == set()
    m = np.array([[1.0, np.nan, np.nan], [2.0, 3.0, np.nan]])
    bad = np.array([[False, False, True], [False, False, True]])
    svg = heatmap_chart("h", "t", m, row_labels=["a", "b"], x_steps=[0, 1, 2], nonfinite=bad, xlabel="x",
                        ylabel="y", cbar_label="c", caption="c").svg
    assert legend_labels(svg) == {"NaN/Inf", "not measured or zero"}
    assert len(path_xs(group(svg, "h-nonfinite"))) == 2


def test_heatmap_axis_spans_the_recorded_steps_with_integer_ticks(tmp_path: Path) -> None:
    """Two measured layer steps (0 and 10) of an 11-step run: the axis is [0, 10], not [-5, 15]."""
    from gradvet.html import heatmap_chart

    svg = heatmap_chart("h", "t", np.array([[1.0, 2.0], [3.0, 4.0]]), row_labels=["a", "b"], x_extent=(0, 10),
                        xlabel="x", ylabel="y", cbar_label="c", caption="c").svg
    assert_ticks_are_steps(svg, 0, 10)
    assert {0.0, 10.0} <= set(x_ticks(svg))
    svg = heatmap_chart("h", "t", np.ones((2, 4)), row_labels=["a", "b"], x_steps=[0, 1, 2, 3],
                        xlabel="x", ylabel="y", cbar_label="c", caption="c").svg
    assert set(x_ticks(svg)) == {0.0, 1.0, 2.0, 3.0}  # not 0.5, 1.5, 2.5


def test_legend_names_only_drawn_lines() -> None:
    x = np.arange(4.0)
    svg = lines_chart("l", "t", {"a": (x, x + 1), "b": (x, np.full(4, np.nan)), "c": (x, x + 2)},
                      xlabel="x", ylabel="y", caption="c").svg
    assert legend_labels(svg) == {"a", "c"}
    drawn = re.findall(r'<path d="M[^"]*"[^>]*clip-path[^>]*stroke-width: 1.6', svg)
    assert len(drawn) == 2


def test_depth_charts_leave_out_the_nonfinite_steps(nan_run: gradvet.Run) -> None:
    from gradvet.html import activation_chart, gradient_flow_chart

    flow = gradient_flow_chart(nan_run)
    steps = {int(s.split()[1]) for s in legend_labels(flow.svg)}
    assert steps and max(steps) < NAN_AT and f"From step {NAN_AT} on" in flow.caption
    act = activation_chart(nan_run)
    assert all(int(s.rsplit(" ", 1)[1]) < NAN_AT for s in legend_labels(act.svg))


def test_report_warns_nothing(tmp_path: Path) -> None:
    """Biases initialised at zero give update ratios of inf next to a weight norm of 0 (issue 14, fault 7)."""
    path = record(tmp_path / "z.gradvet", zero_bias=True)
    assert np.isinf(gradvet.load(path).get("param/update_ratio").values).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from gradvet.html import render_report

        run = gradvet.load(path)
        render_report(run)
    code = "import warnings, sys; warnings.simplefilter('error'); from gradvet.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", code, "report", str(path), "-o", str(tmp_path / "z.html")],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr


class TanhGELU(nn.Module):
    """A GELU written out, as Hugging Face's ``NewGELUActivation`` is: no torch activation module or function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608 * (x + 0.044715 * x.pow(3))))


def test_no_activation_note_names_the_modules_it_did_not_recognise(tmp_path: Path) -> None:
    from html import unescape

    from gradvet.html import render_report

    model = nn.Sequential(nn.Linear(4, 8), TanhGELU(), nn.Linear(8, 8), TanhGELU(), nn.Linear(8, 1))
    with gradvet.Monitor(model, record=tmp_path / "g.gradvet", profile="full") as monitor:
        for _ in range(2):
            model.zero_grad()
            loss = model(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            monitor.step(loss)
    html = unescape(render_report(gradvet.load(tmp_path / "g.gradvet")))
    section = html[html.index('id="activations"'):html.index('id="time"')]
    assert "no activation layers" not in section
    assert "does not recognise as activations: TanhGELU (×2)." in section
