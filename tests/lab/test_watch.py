"""``gradvet watch``: one frame from a record, and tailing a record another process writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from gradvet.watch import sparkline, watch


def test_once_renders_steps_loss_layers_and_findings(mixed_record: Path) -> None:
    console = Console(record=True, width=140)
    watch(mixed_record, once=True, console=console)
    text = console.export_text()
    assert "steps 12" in text and "status finished" in text
    assert "loss " in text and "latest" in text
    for layer in ("rnn", "fc1", "fc2", "head"):
        assert layer in text
    assert "findings" in text


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no gradvet record"):
        watch(tmp_path / "none.gradvet", once=True, console=Console(quiet=True))
    with pytest.raises(ValueError, match="interval must be > 0"):
        watch(tmp_path / "none.gradvet", interval=0, console=Console(quiet=True))


def test_sparkline() -> None:
    assert sparkline(np.array([])) == ""
    line = sparkline(np.array([1.0, 2.0, 3.0, np.nan]))
    assert line[0] == "▁" and line[2] == "█" and line[3] == "×"
    assert len(sparkline(np.arange(1000.0), width=40)) == 40


_WRITER = textwrap.dedent("""
    import sys, time, torch, gradvet
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with gradvet.Monitor(model, record=sys.argv[1], profile="full", flush_every=2) as mon:
        for _ in range(20):
            model.zero_grad()
            loss = model(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            mon.step(loss)
            time.sleep(0.05)
""")


@pytest.mark.timeout(120)
def test_live_view_tails_a_record_until_the_run_finishes(tmp_path: Path) -> None:
    path = tmp_path / "live.gradvet"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)])
    try:
        console = Console(record=True, width=120, force_terminal=False)
        watch(path, interval=0.2, console=console)  # returns when the record says "finished"
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    text = console.export_text()
    assert "steps 20" in text and "status finished" in text


def test_live_view_waits_while_the_file_is_not_yet_a_record(tmp_path: Path) -> None:
    from gradvet.watch import _frame

    path = tmp_path / "starting.gradvet"
    path.write_bytes(b"")  # the writer's connect() created the file; its tables are not there yet
    frame, done = _frame(path)
    assert not done and "waiting for" in frame.plain and "not a gradvet record" in frame.plain
    with pytest.raises(ValueError, match="not a gradvet record"):
        watch(path, once=True)  # a single frame has no later poll: the error is the answer
