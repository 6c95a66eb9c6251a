"""CLI output that is not a terminal (a pipe, a log file): no cell is cut, ``show --json``."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

import gradvet
from gradvet.cli import app
from gradvet.integrations._common import print_findings


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention_projection, self.activation = nn.Linear(16, 16), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.attention_projection(x))


class LongNames(nn.Module):
    """Layer names like a transformer's: long enough that 80 columns cut them."""

    def __init__(self) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {"embedding_layer": nn.Embedding(50, 16), "h": nn.ModuleList([Block() for _ in range(3)])}
        )
        self.lm_head = nn.Linear(16, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.transformer["embedding_layer"](ids)
        for block in self.transformer["h"]:
            x = block(x)
        return self.lm_head(x)


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.gradvet"
    torch.manual_seed(0)
    model = LongNames()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradvet.Monitor(model, optimizer=opt, record=path, profile="full") as monitor:
        for _ in range(4):
            ids = torch.randint(0, 50, (4, 8))
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(ids).reshape(-1, 50), ids.reshape(-1))
            loss.backward()
            monitor.step(loss)
            opt.step()
    return path


def _cells(report: Any) -> list[str]:
    """What the layer table must show whole: every name and every value, as the table formats it."""
    out = []
    for layer in report.layers:
        out.append(layer.name or "(root)")
        for v in (layer.signal_norm, layer.signal_rms, layer.grad_norm, layer.update_ratio):
            if v is not None:
                out.append(f"{v:.2e}")
    return out


def _assert_whole(text: str, report: Any) -> None:
    assert "…" not in text
    lines = text.splitlines()
    for layer in report.layers:
        name = layer.name or "(root)"
        row = next(line for line in lines if line.startswith(f"│ {name} "))
        for v in (layer.signal_norm, layer.signal_rms, layer.grad_norm, layer.update_ratio):
            if v is not None:
                assert f" {v:.2e} " in row, (layer.name, v, row)
    assert all(cell in text for cell in _cells(report))


def test_show_through_a_pipe_keeps_every_cell(record: Path) -> None:
    result = CliRunner().invoke(app, ["show", str(record)])
    assert result.exit_code == 0, result.output
    report = gradvet.load(record).report()
    assert any(layer.update_ratio is not None for layer in report.layers)
    _assert_whole(result.output, report)


def test_show_redirected_to_a_file_keeps_every_cell(record: Path, tmp_path: Path) -> None:
    out = tmp_path / "show.txt"
    with out.open("w") as f:  # the real case: the console script's stdout is a file
        subprocess.run([sys.executable, "-m", "gradvet.cli", "show", str(record)], stdout=f, check=True)
    _assert_whole(out.read_text(encoding="utf-8"), gradvet.load(record).report())


def test_end_of_training_table_in_a_log_keeps_every_cell(record: Path) -> None:
    report = gradvet.load(record).report()
    log = Console(file=io.StringIO())  # not a terminal: rich would fit 80 columns
    print_findings(report, log)
    _assert_whole(log.file.getvalue(), report)
    assert log.width == 80  # widened for that print only
    _assert_whole(str(report), report)


def test_show_json_holds_the_report_values(record: Path) -> None:
    result = CliRunner().invoke(app, ["show", "--json", str(record)])
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    want = gradvet.load(record).report().to_dict()
    assert got["steps"] == want["steps"] == 4 and got["loss"] == want["loss"]
    assert [x["name"] for x in got["layers"]] == [x["name"] for x in want["layers"]]
    for g, w in zip(got["layers"], want["layers"]):
        for key in ("grad_norm", "signal_norm", "signal_rms", "update_ratio"):
            assert g[key] == w[key] or (isinstance(w[key], float) and math.isnan(w[key]) and g[key] == "nan")


def test_json_writes_non_finite_values_as_strings() -> None:
    from gradvet.cli import _json

    assert json.loads(_json({"a": [float("nan"), float("inf"), -float("inf"), 1.5]})) == {
        "a": ["nan", "inf", "-inf", 1.5]
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["watch", "--once", "{missing}"], "no gradvet record at"),
        (["watch", "--interval", "0", "{missing}"], "must be > 0 seconds, got 0.0"),
        (["watch", "--once", "{empty}"], "not a gradvet record"),
        (["show", "{missing}"], "no gradvet record at"),
    ],
)
def test_usage_errors_are_one_message_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty.gradvet").write_bytes(b"")
    paths = {"missing": tmp_path / "none.gradvet", "empty": tmp_path / "empty.gradvet"}
    result = CliRunner().invoke(app, [a.format(**paths) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert message in " ".join(result.output.replace("│", " ").split())
