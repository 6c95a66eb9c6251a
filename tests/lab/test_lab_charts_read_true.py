"""Lab charts say what they show (issue 14, fault 7): a diverged bar has a hatched legend entry of its own
and a readable label; the dead-ReLU caption gives the range its chart draws instead of "dead units stay
dead" next to a line moving between 47% and 100%."""

from __future__ import annotations

import re

import numpy as np

from gradvet.html import bar_chart
from gradvet.lab._dead import _spread


def test_a_diverged_bar_has_its_own_hatched_legend_entry() -> None:
    groups = {"none": {"sgd": 0.5, "adam": float("inf")}, "norm 1": {"sgd": 0.4, "adam": 0.3}}
    svg = bar_chart("b", "loss", groups, ylabel="loss", caption="c").html()
    assert "diverged (non-finite loss)" in svg
    # the legend handle is drawn with the hatch pattern, not as a solid patch: matplotlib's SVG defines a
    # pattern for each hatched artist, so there are two (the bar and the legend's patch)
    assert len(re.findall(r"<pattern ", svg)) >= 2
    plain = bar_chart("b2", "loss", {"none": {"sgd": 0.5}}, ylabel="loss", caption="c").html()
    assert "diverged" not in plain and "<pattern " not in plain


def test_the_dead_caption_gives_the_range_of_the_worst_layer() -> None:
    steps = np.arange(5)
    lines = {"ReLU: 0": (steps, np.array([60.0, 47.0, 100.0, 80.0, 52.0])),
             "ReLU: 2": (steps, np.array([5.0, 3.0, 4.0, 2.0, 1.0]))}
    assert _spread(lines) == " The worst (ReLU: 0) moves between 47% and 100% after the first step."
    flat = {"ReLU: 0": (steps, np.array([90.0, 100.0, 100.0, 100.0, 100.0]))}
    assert _spread(flat) == " The worst (ReLU: 0) stays at 100% after the first step."
    assert _spread({}) == ""
