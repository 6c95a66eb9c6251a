"""A finished record is one file: no -wal, -shm or .lock beside it, after reads too (issue 14, fault 9).

While a run is live the writer holds ``PATH.lock`` and SQLite keeps ``PATH-wal`` and
``PATH-shm`` (WAL mode: readers in other processes see each flush). On close the writer
checkpoints, leaves WAL mode and removes the lock, so only ``PATH`` remains; readers of a
finished record (``gradvet.load``, ``show``, ``report``) open it ``immutable`` and
create nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from typer.testing import CliRunner

import gradvet
from gradvet.cli import app

WRITER = str(Path(__file__).with_name("_record_writer.py"))


def _steps(mon: gradvet.Monitor, model: nn.Module, n: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(n):
        opt.zero_grad()
        loss = model(torch.randn(4, 3)).square().mean()
        loss.backward()
        mon.step(loss)
        opt.step()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _journal_mode_byte(path: Path) -> int:
    """Byte 18 of the SQLite header: 1 rollback journal, 2 WAL."""
    return path.read_bytes()[18]


def test_a_closed_run_and_its_reads_leave_only_the_record(tmp_path):
    runs = tmp_path / "runs"
    path = runs / "exp.gradvet"
    model = _model()
    with gradvet.Monitor(model, record=path) as mon:
        _steps(mon, model, 5)
    assert _files(runs) == ["exp.gradvet"]
    assert _journal_mode_byte(path) == 1  # finished: out of WAL mode
    digest = _digest(path)

    assert len(gradvet.load(path).steps) == 5
    assert _files(runs) == ["exp.gradvet"]
    runner = CliRunner()
    res = runner.invoke(app, ["show", str(path)])
    assert res.exit_code == 0, res.output
    assert _files(runs) == ["exp.gradvet"]
    res = runner.invoke(app, ["report", str(path), "-o", str(tmp_path / "exp.html")])
    assert res.exit_code == 0, res.output
    assert _files(runs) == ["exp.gradvet"]
    assert _digest(path) == digest  # readers never write to a finished record


def test_a_record_left_in_wal_mode_is_read_without_leftovers(tmp_path):
    # a record from an earlier gradvet, or one whose writer closed while a reader was open
    path = tmp_path / "old.gradvet"
    model = _model()
    with gradvet.Monitor(model, record=path) as mon:
        _steps(mon, model, 3)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.close()  # the last connection: SQLite removes -wal and -shm, the header says WAL
    assert _journal_mode_byte(path) == 2 and _files(tmp_path) == ["old.gradvet"]
    assert len(gradvet.load(path).steps) == 3
    assert _files(tmp_path) == ["old.gradvet"]


def test_appending_goes_back_to_wal_and_finishes_clean(tmp_path):
    path = tmp_path / "two.gradvet"
    model = _model()
    mon = gradvet.Monitor(model, record=path)
    with mon:
        _steps(mon, model, 4)
    assert _files(tmp_path) == ["two.gradvet"]
    with mon:  # entered again: appends to the finished record
        _steps(mon, model, 4)
        assert len(mon.load().steps) == 8  # flushed and read back while live
        assert _journal_mode_byte(path) == 2  # live: WAL, so other processes read each flush
        assert "two.gradvet.lock" in _files(tmp_path)
    assert _files(tmp_path) == ["two.gradvet"]
    assert gradvet.load(path).steps.tolist() == list(range(8))


def test_a_live_record_is_read_from_another_process_then_left_clean(tmp_path):
    path = tmp_path / "live.gradvet"
    proc = subprocess.Popen(
        [sys.executable, WRITER, str(path), "60", "0.01"], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
        live = _files(tmp_path)
        assert "live.gradvet.lock" in live  # the writer's lock, while it runs
        counts = [len(gradvet.load(path).steps) for _ in range(3)]
        assert counts == sorted(counts)  # each read sees the flushes committed so far
    finally:
        assert proc.wait(timeout=120) == 0
    assert _files(tmp_path) == ["live.gradvet"]
    assert len(gradvet.load(path).steps) == 60
    assert _files(tmp_path) == ["live.gradvet"]
