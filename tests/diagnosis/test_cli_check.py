"""`gradvet check file.py:factory`: exit codes 0 healthy, 1 findings, 2 usage error."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradvet.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_sick_example_exits_1_and_names_the_first_layer():
    res = runner.invoke(app, ["check", str(ROOT / "examples/sick.py:factory"), "--json"])
    assert res.exit_code == 1, res.output
    data = json.loads(res.output)
    assert data["healthy"] is False
    (f,) = [f for f in data["findings"] if f["kind"] == "vanishing_gradients"]
    assert f["layers"][0] == "0" and f["severity"] == "error"
    assert f["remedies"][0]["id"] == "activation:relu"


def test_healthy_example_exits_0():
    res = runner.invoke(app, ["check", str(ROOT / "examples/healthy.py:factory")])
    assert res.exit_code == 0, res.output
    assert "no findings" in res.output


@pytest.mark.parametrize(
    "spec, phrase",
    [("nope.py:factory", "no such file"), ("{ex}:missing", "has no function"), ("{ex}", "expected path/to/file.py:factory")],
)
def test_usage_errors_exit_2_with_one_clear_message(spec, phrase):
    res = runner.invoke(app, ["check", spec.format(ex=ROOT / "examples/sick.py")])
    assert res.exit_code == 2
    assert phrase in res.output


def test_factory_that_raises_or_returns_garbage_exits_2(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def boom():\n    raise RuntimeError('kaput')\n\ndef junk():\n    return 42\n")
    res = runner.invoke(app, ["check", f"{bad}:boom"])
    assert res.exit_code == 2 and "kaput" in res.output
    res = runner.invoke(app, ["check", f"{bad}:junk"])
    assert res.exit_code == 2 and "must return (model, batch, loss_fn)" in res.output


def test_console_script_version():
    out = subprocess.run([sys.executable, "-m", "gradvet.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("gradvet ")
