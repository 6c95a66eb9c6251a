"""Issue 15: the command line on a missing, damaged or unusable record exits 2 with a message."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gradvet
from gradvet.cli import app
from gradvet.record._schema import text_crc
from gradvet.watch import _frame


@pytest.mark.parametrize(
    "args, says",
    [
        (["watch", "--once", "{tmp}/missing.gradvet"], "no gradvet record"),
        (["watch", "--once", "{tmp}/junk.gradvet"], "not a gradvet record"),
        (["watch", "--interval", "0", "{tmp}/missing.gradvet"], "interval must be > 0"),
        (["show", "{tmp}/junk.gradvet"], "not a gradvet record"),
        (["report", "{tmp}/junk.gradvet"], "not a gradvet record"),
    ],
)
def test_bad_records_exit_2_with_the_reason(tmp_path, args, says):
    (tmp_path / "junk.gradvet").write_bytes(b"not sqlite at all" * 100)
    res = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2, res.output
    assert says in " ".join(res.output.split()) and "Traceback" not in res.output


def test_watch_stops_on_a_record_whose_writing_failed(tmp_path):
    path = tmp_path / "failed.gradvet"
    model = nn.Linear(2, 1)
    with gradvet.Monitor(model, record=path) as mon:
        model(torch.randn(3, 2)).sum().backward()
        mon.step()
    status = json.dumps("record write failed: OperationalError: database or disk is full")
    con = sqlite3.connect(path)
    with con:  # what the writer leaves when the disk fills up
        con.execute("UPDATE meta SET value=?, crc=? WHERE key='status'", (status, text_crc("status", status)))
    con.close()
    assert _frame(path)[1]  # the run is over: watch stops instead of waiting forever
