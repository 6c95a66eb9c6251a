"""What the re-run audit of issue 15 (bench/audit.py) still found, each reproduced here:

- a FIFO (or device) at the record path was replaced by the record (as root, ``/dev/full`` itself);
- a record whose writer was killed, or whose disk filled up, said "status: running" forever;
- ``treat -o`` onto a full disk said "RuntimeError: basic_ios::clear: iostream error";
- escape sequences from module names reached the HTML report's text.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gradvet
from gradvet.cli import app
from gradvet.html import write_report


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_fifo_at_the_record_path_is_refused_and_left_alone(tmp_path: Path, overwrite: bool) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"), gradvet.Monitor(nn.Linear(3, 1), record=fifo,
                                                                              overwrite=overwrite):
        pass
    assert fifo.is_fifo()


_WRITER = textwrap.dedent("""
    import os, signal, sys, torch, gradvet
    torch.set_num_threads(1)
    model = torch.nn.Linear(8, 8)
    mon = gradvet.Monitor(model, record=sys.argv[1], flush_every=2)
    mon.__enter__()
    for _ in range(6):
        model.zero_grad(); loss = model(torch.randn(4, 8)).pow(2).mean(); loss.backward(); mon.step(loss)
    mon._flush()
    mon._writer.flush()  # the writer thread has committed the steps
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_writers_record_says_interrupted_not_running(tmp_path: Path) -> None:
    path = tmp_path / "killed.gradvet"
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run = gradvet.load(path)
    assert len(run.steps) == 6
    assert run.meta["status"].startswith("interrupted: no process is writing it")


def test_a_live_record_still_says_running(tmp_path: Path) -> None:
    path = tmp_path / "live.gradvet"
    model = nn.Linear(8, 8)
    with gradvet.Monitor(model, record=path, flush_every=1) as mon:
        model(torch.randn(4, 8)).sum().backward()
        mon.step()
        assert gradvet.load(path).meta["status"] == "running"  # this process holds the writer's lock
    assert gradvet.load(path).meta["status"] not in ("running",) and "interrupted" not in gradvet.load(path).meta["status"]


_DISK_FULL = textwrap.dedent("""
    import json, resource, signal, sys, warnings, torch, gradvet
    torch.set_num_threads(1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000))  # the disk is "full" past 60 kB
    model = torch.nn.Linear(64, 64)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with gradvet.Monitor(model, record=sys.argv[1], profile="full", flush_every=2) as m:
            for _ in range(100):
                model.zero_grad(); model(torch.randn(4, 64)).sum().backward(); m.step()
        run = m.load()
    print(json.dumps({"steps": len(run.steps), "status": run.meta["status"]}))
""")


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_a_full_disk_is_said_in_the_writers_process_and_by_readers(tmp_path: Path) -> None:
    path = tmp_path / "full.gradvet"
    proc = subprocess.run([sys.executable, "-c", _DISK_FULL, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 < seen["steps"] < 100
    assert seen["status"].startswith("record write failed")
    status = gradvet.load(path).meta["status"]
    assert status.startswith(("record write failed", "interrupted")), status
    assert status != "running"


@pytest.mark.skipif(not os.path.exists("/dev/full") or not Path("/dev/full").is_char_device(),
                    reason="needs /dev/full")
def test_treat_o_to_a_full_disk_names_the_file_and_the_cause(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import torch\nfrom torch import nn\ndef ok():\n    torch.manual_seed(0)\n"
                 "    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)), "
                 "(torch.randn(16, 3), None), lambda out, y: out.pow(2).mean()\n")
    res = CliRunner().invoke(app, ["treat", f"{f}:ok", "-o", "/dev/full"])
    assert res.exit_code == 2
    assert "gradvet treat: error: could not read or write /dev/full: No space left on device" in res.stderr


def test_escape_sequences_in_names_never_reach_the_html(tmp_path: Path) -> None:
    model = nn.Sequential()
    model.add_module("win\x1b]0;title\x07dow", nn.Linear(3, 4))
    model.add_module("clear\x1b[2J", nn.Linear(4, 1))
    path = tmp_path / "esc.gradvet"
    with gradvet.Monitor(model, record=path) as mon:
        model(torch.randn(8, 3)).sum().backward()
        mon.step()
    html = write_report(path, tmp_path / "esc.html").read_text()
    assert "\x1b" not in html and "\x07" not in html
    assert "window" in html and "title" not in html.split("<main>")[1]  # shown, with the escape taken out
