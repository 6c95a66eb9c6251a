"""Report rendering (rich, JSON) and `gradvet show` on a record."""

import json

import torch
from typer.testing import CliRunner

import gradvet
from gradvet.cli import app
from gradvet.zoo import digits, mlp


def _sick_record(path):
    torch.manual_seed(0)
    model = mlp(10, "sigmoid", 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = digits(128)
    with gradvet.Monitor(model, optimizer=opt, record=path, profile="business") as monitor:
        for _ in range(12):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            monitor.step(loss)
            opt.step()
    return monitor


def test_report_json_and_text_carry_the_finding(tmp_path):
    monitor = _sick_record(tmp_path / "r.gradvet")
    report = monitor.report()
    data = json.loads(report.to_json())
    assert data["healthy"] is False and data["steps"] == 12
    kinds = [f["kind"] for f in data["findings"]]
    assert "vanishing_gradients" in kinds
    assert [layer["name"] for layer in data["layers"]][:3] == ["0", "1", "2"]
    text = str(report)
    assert "vanishing_gradients" in text and "prescription" in text and "activation:relu" in text
    # per-layer update ratios are shown once an optimizer was given
    assert "upd/W" in text


def test_show_prints_table_and_findings(tmp_path):
    path = tmp_path / "r.gradvet"
    _sick_record(path)
    res = CliRunner().invoke(app, ["show", str(path)])
    assert res.exit_code == 0, res.output
    assert "12 steps" in res.output and "vanishing_gradients" in res.output


def test_show_refuses_a_missing_or_foreign_file(tmp_path):
    res = CliRunner().invoke(app, ["show", str(tmp_path / "nope.gradvet")])
    assert res.exit_code == 2 and "no gradvet record" in res.output
    junk = tmp_path / "junk.gradvet"
    junk.write_bytes(b"not a database at all" * 100)
    res = CliRunner().invoke(app, ["show", str(junk)])
    assert res.exit_code == 2 and "not a gradvet record" in res.output
