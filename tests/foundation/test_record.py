"""The on-disk record: round trip, concurrent reading, crash safety, refusal of bad files."""

from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet
from gradvet.record import SCHEMA_VERSION

WRITER = str(Path(__file__).with_name("_record_writer.py"))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.rnn = nn.GRU(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, idx):
        return self.fc(torch.tanh(self.rnn(self.emb(idx))[0][:, -1]))


def _train(model, **kw):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    with gradvet.Monitor(model, optimizer=opt, profile="business", flush_every=3, **kw) as monitor:
        for _ in range(12):
            idx = torch.randint(0, 10, (4, 5), generator=g)
            y = torch.randint(0, 3, (4,), generator=g)
            opt.zero_grad()
            loss = F.cross_entropy(model(idx), y)
            loss.backward()
            monitor.step(loss)
            opt.step()
    return monitor


def test_round_trip_equals_in_memory_run(tmp_path):
    torch.manual_seed(0)
    model = _Net()
    disk = _train(copy.deepcopy(model), record=tmp_path / "run.gradvet", update_every=4)
    mem = _train(copy.deepcopy(model), update_every=4)
    loaded, live = gradvet.load(tmp_path / "run.gradvet"), mem.run
    assert disk.run is None and live is not None
    assert loaded.metrics == live.metrics
    assert {"time/rnn", "param/update_ratio", "layer/dead_frac", "loss"} <= set(loaded.metrics)
    for metric in live.metrics:
        a, b = loaded.series(metric), live.series(metric)
        np.testing.assert_array_equal(a.steps, b.steps, err_msg=metric)
        np.testing.assert_array_equal(a.values, b.values, err_msg=metric)
        assert a.values.dtype == np.float32 and a.steps.dtype == np.int64
    assert loaded.series("layer/grad_norm").steps.tolist() == [0, 10]  # business: every 10th step
    assert loaded.series("param/update_ratio").steps.tolist() == [0, 4, 8]  # update_every=4
    assert loaded.params == live.params
    assert loaded.layers == live.layers
    for key in (
        "gradvet_version",
        "torch_version",
        "model",
        "optimizer",
        "config",
        "frozen",
        "status",
        "steps",
    ):
        assert loaded.meta[key] == live.meta[key], key
    assert loaded.meta["schema_version"] == SCHEMA_VERSION and loaded.meta["status"] == "finished"
    assert loaded.steps.tolist() == list(range(12))
    # monitor.load() reads the same record back
    np.testing.assert_array_equal(disk.load().loss, loaded.loss)


def _poll(path, until, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Path(path).exists():
            try:
                run = gradvet.load(path)
            except ValueError:  # the writer has not created its tables yet
                run = None
            if run is not None and until(run):
                return run
        time.sleep(0.05)
    raise AssertionError(f"record {path} never satisfied the condition")


def test_reading_while_another_process_writes(tmp_path):
    path = tmp_path / "live.gradvet"
    proc = subprocess.Popen(
        [sys.executable, WRITER, str(path), "60", "0.02"], stdout=subprocess.PIPE
    )
    try:
        counts = []
        run = _poll(path, lambda r: len(r.steps) > 0)
        counts.append(len(run.steps))
        while proc.poll() is None and len(counts) < 200:
            counts.append(len(gradvet.load(path).steps))
            time.sleep(0.05)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    final = gradvet.load(path)
    assert len(final.steps) == 60 and final.meta["status"] == "finished"
    assert counts == sorted(counts) and len(set(counts)) >= 2, counts  # it grew while we read
    assert all(c % 5 == 0 or c < 60 for c in counts)


def test_sigkilled_writer_leaves_a_loadable_record(tmp_path):
    path = tmp_path / "crash.gradvet"
    proc = subprocess.Popen(
        [sys.executable, WRITER, str(path), "-1", "0.002"], stdout=subprocess.PIPE
    )
    try:
        seen = len(_poll(path, lambda r: len(r.steps) >= 10).steps)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    run = gradvet.load(path)
    assert len(run.steps) >= seen >= 10
    assert run.steps.tolist() == list(range(len(run.steps)))  # no torn or missing blocks
    assert run.meta["status"].startswith("interrupted")  # it never finished, and no process writes it now
    assert run.series("param/grad_norm").values.shape == (len(run.steps), 4)
    assert len(gradvet.load(path).steps) == len(
        run.steps
    )  # loading again (after WAL replay) agrees


def _small_record(path):
    model = nn.Linear(2, 1)
    with gradvet.Monitor(model, record=path) as m:
        model(torch.randn(3, 2)).sum().backward()
        m.step()


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path):
    path = tmp_path / "new.gradvet"
    _small_record(path)
    con = sqlite3.connect(path)
    with con:
        con.execute(
            "UPDATE meta SET value=? WHERE key='schema_version'", (json.dumps(SCHEMA_VERSION + 1),)
        )
    con.close()
    with pytest.raises(ValueError, match="upgrade gradvet"):
        gradvet.load(path)


@pytest.mark.parametrize("content", ["random", "empty_sqlite", "other_sqlite", "zero_bytes"])
def test_non_record_file_is_refused(tmp_path, content):
    path = tmp_path / "x.gradvet"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif content == "zero_bytes":
        path.write_bytes(b"")
    else:
        con = sqlite3.connect(path)
        if content == "other_sqlite":
            with con:
                con.execute("CREATE TABLE meta(key TEXT, value TEXT)")
                con.execute("INSERT INTO meta VALUES ('name', '\"x\"')")
        con.close()
    with pytest.raises(ValueError, match="not a gradvet record"):
        gradvet.load(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no gradvet record"):
        gradvet.load(tmp_path / "nope.gradvet")


def test_record_path_that_is_a_directory_is_refused(tmp_path):
    with (
        pytest.raises(ValueError, match="is a directory"),
        gradvet.Monitor(nn.Linear(2, 1), record=tmp_path),
    ):
        pass
