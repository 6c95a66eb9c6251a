"""Issue 15, section 3: module names, class names and paths are shown as plain text.

rich reads ``[...]`` in a string as markup: a module named ``[/]`` raised MarkupError in
``show``/``watch``/``report``, ``[bold red]x`` came out styled, and escape sequences in a name
(window title, clear screen) reached the terminal.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gradvet
from gradvet._render import clean, to_text
from gradvet._render_treat import attempts_table, before_after_table
from gradvet.cli import app
from gradvet.watch import render_frame

EvilLinear = type("[red]Evil[/]Linear", (nn.Linear,), {})

#: module name -> what the terminal must show
NAMES = {
    "[/]": "[/]",
    "[bold red]x": "[bold red]x",
    "[link=https://evil]innocent[/link]": "[link=https://evil]innocent[/link]",
    "win\x1b]0;title\x07dow": "window",
    "clr\x1b[2Jscreen": "clrscreen",
}


def _hostile() -> nn.Module:
    torch.manual_seed(0)
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    for i, name in enumerate(NAMES):
        mods[name] = EvilLinear(16, 16) if i == 0 else nn.Linear(16, 16)
        mods[f"act{i}"] = nn.Sigmoid()
    for i in range(6):  # deep enough for a vanishing-gradient finding that names layers
        mods[f"fc{i}"], mods[f"sig{i}"] = nn.Linear(16, 16), nn.Sigmoid()
    mods["head"] = nn.Linear(16, 4)
    return nn.Sequential(mods)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(32, 16), torch.randint(0, 4, (32,))


def _assert_literal(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text
    for shown in NAMES.values():
        assert shown in text, shown
    assert "[red]Evil[/]Linear" in text


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "run[/]x.gradvet"
    model = _hostile()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch()
    with gradvet.Monitor(model, optimizer=opt, record=path, profile="full") as monitor:
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            monitor.step(loss)
            opt.step()
    return path


def test_clean_removes_escape_sequences() -> None:
    assert clean("a\x1b]8;;https://x\x1b\\b\x1b]8;;\x1b\\c") == "abc"
    assert clean("a\x1b[31mb\x1b[0m\rc\x9b2Jd") == "abcd"
    assert clean("line1\nline2\t[/]") == "line1\nline2\t[/]"


def test_check_and_str_report_show_names_literally() -> None:
    report = gradvet.check(_hostile(), _batch(), nn.functional.cross_entropy)
    text = str(report)
    _assert_literal(text)
    assert report.findings, "the deep sigmoid chain should give a finding whose panel names layers"


def test_show_prints_names_literally(record: Path) -> None:
    result = CliRunner().invoke(app, ["show", str(record)])
    assert result.exit_code in (0, 1), result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    _assert_literal(result.output)
    assert str(record) in result.output


def test_watch_once_prints_names_literally(record: Path) -> None:
    result = CliRunner().invoke(app, ["watch", str(record), "--once"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    for shown in NAMES.values():
        assert shown in result.output, shown
    frame = to_text(render_frame(gradvet.load(record), "p\x1b]0;t\x07[/]ath"))
    assert "p[/]ath" in frame and "\x1b" not in frame


def test_report_to_a_markup_path(record: Path, tmp_path: Path) -> None:
    out = tmp_path / "[/]out[bold].html"
    result = CliRunner().invoke(app, ["report", str(record), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()
    assert str(out) in result.output.replace("\n", "")


def test_treat_tables_show_names_literally() -> None:
    layer = SimpleNamespace(role="param", name="[/]\x1b[2Jfc", signal_rms=1e-3)
    result = SimpleNamespace(
        before=SimpleNamespace(layers=[layer]),
        after=SimpleNamespace(layers=[layer]),
        applied=[SimpleNamespace(id="r", changes=[SimpleNamespace(module="[bold]m", old="[/]", new="x")])],
        attempts=[SimpleNamespace(remedy="r", outcome="kept", reason="[/] helped")],
    )
    text = to_text(before_after_table(result)) + to_text(attempts_table(result))
    assert "[/]fc" in text and "[bold]m: [/] -> x" in text and "[/] helped" in text
    assert "\x1b" not in text
