"""Issue 15, section 1: a record never costs the user a file or a run.

Each test reproduces one data-loss case of the audit: a checkpoint deleted by
``Monitor(record=...)``, a second ``with`` erasing the first, a report written over its
record, two writers on one path, steps lost at interpreter exit, a relative path moved
by ``os.chdir``, and descriptors left open after a full disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gradvet
from gradvet.cli import app

WRITER = str(Path(__file__).with_name("_record_writer.py"))


def _steps(mon: gradvet.Monitor, model: nn.Module, n: int) -> None:
    for _ in range(n):
        model.zero_grad()
        model(torch.randn(3, 2)).sum().backward()
        mon.step()


def _record(path: Path, n: int = 1, **kw: object) -> None:
    model = nn.Linear(2, 1)
    with gradvet.Monitor(model, record=path, **kw) as mon:  # type: ignore[arg-type]
        _steps(mon, model, n)


def _run(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_file_that_is_not_a_record_is_never_touched(tmp_path, overwrite):
    ckpt = tmp_path / "model_weights.pt"
    torch.save(nn.Linear(2, 1).state_dict(), ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match=r"model_weights.pt' exists and is not a gradvet record.*new path"):
        _record(ckpt, overwrite=overwrite)
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_weights.pt"]  # no lock or temp left


def test_an_existing_record_is_replaced_only_with_overwrite(tmp_path):
    path = tmp_path / "exp.gradvet"
    _record(path, n=3)
    with pytest.raises(ValueError, match=r"already a gradvet record; pass overwrite=True"):
        _record(path, n=1)
    assert len(gradvet.load(path).steps) == 3  # untouched
    _record(path, n=1, overwrite=True)
    assert len(gradvet.load(path).steps) == 1


def test_an_empty_file_may_become_the_record(tmp_path):
    path = tmp_path / "made_by_mkstemp.gradvet"
    path.write_bytes(b"")
    _record(path, n=2)
    assert len(gradvet.load(path).steps) == 2


def test_a_leftover_wal_without_its_record_is_refused(tmp_path):
    path = tmp_path / "exp.gradvet"
    Path(str(path) + "-wal").write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match=r"exp.gradvet-wal' is left over"):
        _record(path)


def test_entering_the_same_monitor_again_appends(tmp_path):
    path, model = tmp_path / "two.gradvet", nn.Linear(2, 1)
    mon = gradvet.Monitor(model, record=path)
    for _ in range(2):
        with mon:
            _steps(mon, model, 5)
    run = gradvet.load(path)
    assert run.steps.tolist() == list(range(10)) and run.meta["status"] == "finished"


def test_report_never_writes_over_its_record(tmp_path):
    path = tmp_path / "exp.html"
    _record(path, n=2)
    runner = CliRunner()
    res = runner.invoke(app, ["report", str(path)])
    assert res.exit_code == 0, res.output
    assert len(gradvet.load(path).steps) == 2 and (tmp_path / "exp.report.html").is_file()
    res = runner.invoke(app, ["report", str(path), "-o", str(path)])
    assert res.exit_code == 2 and "overwrite its own record" in res.output
    assert len(gradvet.load(path).steps) == 2


def test_a_second_monitor_on_the_same_path_is_refused(tmp_path):
    path = tmp_path / "one.gradvet"
    first, other = nn.Linear(2, 1), nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    with gradvet.Monitor(first, record=path) as mon:
        _steps(mon, first, 2)
        with pytest.raises(ValueError, match=rf"being written by another Monitor \(process {os.getpid()}\)"):
            gradvet.Monitor(other, record=path, overwrite=True).__enter__()
        _steps(mon, first, 2)
    run = gradvet.load(path)
    assert len(run.steps) == 4 and len(run.params) == 2  # only the first model's
    assert not Path(str(path) + ".lock").exists()  # released on close
    _record(path, overwrite=True)  # and then free


def test_another_process_writing_is_refused_until_it_dies(tmp_path):
    path = tmp_path / "live.gradvet"
    proc = subprocess.Popen([sys.executable, WRITER, str(path), "-1", "0.01"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
        with pytest.raises(ValueError, match=rf"another Monitor \(process {proc.pid}\)"):
            _record(path, overwrite=True)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    _record(path, n=2, overwrite=True)  # a killed holder's lock does not block the next run
    assert len(gradvet.load(path).steps) == 2


def test_a_monitor_never_closed_flushes_at_exit(tmp_path):
    path = tmp_path / "exit.gradvet"
    code = (
        "import sys, torch, gradvet\n"
        "model = torch.nn.Linear(3, 1)\n"
        "m = gradvet.Monitor(model, record=sys.argv[1], flush_every=1000, flush_seconds=1e6)\n"
        "m.__enter__()\n"
        "for _ in range(250):\n"
        "    model(torch.randn(2, 3)).sum().backward()\n"
        "    m.step()\n"
    )
    res = _run(code, str(path))
    assert res.returncode == 0, res.stderr
    run = gradvet.load(path)
    assert len(run.steps) == 250 and run.meta["status"] == "finished"


def test_a_relative_path_survives_chdir(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    model = nn.Linear(2, 1)
    with gradvet.Monitor(model, record="rel.gradvet") as mon:
        os.chdir(tmp_path / "b")
        _steps(mon, model, 3)
    assert mon.record_path == tmp_path / "a" / "rel.gradvet"
    assert len(mon.load().steps) == 3
    mon.report()  # reads the record where it was written
    assert (tmp_path / "a" / "rel.gradvet").is_file() and not (tmp_path / "b" / "rel.gradvet").exists()


@pytest.mark.parametrize("bad", [{"record": 3}, {"overwrite": "yes"}])
def test_bad_record_arguments_are_type_errors(bad):
    with pytest.raises(TypeError, match="Monitor\\((record|overwrite)="):
        gradvet.Monitor(nn.Linear(2, 1), **bad)


_DISK_FULL = """
import json, os, resource, signal, sys, warnings
import torch, gradvet
path = sys.argv[1]
model = torch.nn.Linear(64, 64)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write then fails with EFBIG
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))  # the disk is full at 60 kB
    with gradvet.Monitor(model, record=path, profile="full", flush_every=2) as m:
        for _ in range(100):
            model(torch.randn(4, 64)).sum().backward()
            m.step()
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used
            pass
    try:
        result = {"steps": len(m.load().steps)}
    except ValueError as e:
        result = {"error": str(e)}
result["open"] = [f for f in fds if os.path.basename(path) in f]
result["warnings"] = [str(w.message) for w in caught]
print(json.dumps(result))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_a_full_disk_closes_the_file_and_says_so(tmp_path):
    path = tmp_path / "full.gradvet"
    res = _run(_DISK_FULL, str(path))
    assert res.returncode == 0, res.stderr  # training went on
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["open"] == []  # connection, WAL, shm and lock all closed
    assert any("could not write the record" in w for w in out["warnings"]), out
    said = out.get("error", "") + " ".join(out["warnings"])
    assert "writing the record" in said and ("full" in said or "I/O" in said), out
    if "steps" in out:
        assert 0 < out["steps"] < 100


def test_a_record_appears_whole_or_not_at_all(tmp_path):
    """A reader polling the path never sees a half-made record (it is renamed into place)."""
    path = tmp_path / "poll.gradvet"
    proc = subprocess.Popen([sys.executable, WRITER, str(path), "20", "0.0"], stdout=subprocess.PIPE)
    seen, deadline = 0, time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if path.exists():
                gradvet.load(path)  # never "no such table: meta"
                seen += 1
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0 and seen > 0
