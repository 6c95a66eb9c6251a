"""``gradvet demo``: treat the sick net, train both, both tables print, the numbers tell the story."""

from __future__ import annotations

import pytest
from rich.console import Console

from gradvet.demo import first_last_ratio, run_demo


def test_demo_prints_both_tables_and_tells_the_story() -> None:
    console = Console(record=True, width=160, force_terminal=False)
    sick, cured = run_demo(console, steps=60)
    text = console.export_text()
    assert "Gradient reaching each layer" in text and "After training" in text
    assert "sigmoid, default init" in text and "treated: activation:relu + init:kaiming" in text
    assert "remedies tried" in text and "kept" in text
    assert "blocks.0.fc" in text and "head" in text
    assert "gradvet's findings: sigmoid" in text and "gradvet's findings: treated" in text
    # The story: the sigmoid net's first layer gets a vanishing share of the gradient and it learns nothing.
    assert first_last_ratio(sick) < 1e-5 < 1e-1 < first_last_ratio(cured)
    assert cured.loss < 0.5 < 2.0 < sick.loss
    assert "vanishing_gradients" in sick.report.kinds()
    assert "vanishing_gradients" not in cured.report.kinds()


def test_demo_rejects_bad_steps() -> None:
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        run_demo(Console(file=None, quiet=True), steps=0)
