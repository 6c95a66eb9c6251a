"""An AMP run whose scaler skips overflowed steps: reading it (report, show, HTML) prints no warning of
gradvet's own on the user's stderr (issue 15, section 4). Before, numpy's "invalid value encountered in
subtract" leaked from the diagnosis for every NaN step."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import gradvet
from gradvet.cli import app
from gradvet.html import write_report


@pytest.fixture(scope="module")
def amp_record(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("amp") / "amp.gradvet"
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30)  # overflows fp16 for the first steps
    with gradvet.Monitor(m, optimizer=opt, scaler=scaler, record=path, layer_every=1) as mon:
        for _ in range(40):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = m(torch.randn(32, 8)).float().pow(2).mean()
            opt.zero_grad()
            scaler.scale(loss).backward()
            mon.step(loss)
            scaler.step(opt)
            scaler.update()
    return path


def test_reading_an_amp_run_with_skipped_steps_warns_nothing(amp_record: Path, tmp_path: Path) -> None:
    run = gradvet.load(amp_record)
    # the record really holds overflowed steps: the case that used to warn
    bad = ~torch.isfinite(torch.as_tensor(run.get("param/grad_norm").values)).all(dim=1)
    skipped = int(bad.sum())
    assert 5 <= skipped < 40
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # recorded, not raised: a raised warning would be a failed rule
        report = run.report()
        str(report)
        write_report(amp_record, tmp_path / "amp.html")
    assert [str(w.message) for w in caught] == []
    assert report.healthy
    (f,) = report.findings
    assert f.severity == "info" and f.data["skipped_steps"] == skipped


def test_show_of_an_amp_run_has_a_clean_stderr(amp_record: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = CliRunner().invoke(app, ["show", str(amp_record)])
    assert res.exit_code == 0
    assert res.stderr == "" and [str(w.message) for w in caught] == []
