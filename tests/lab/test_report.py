"""The HTML report: every chart drawn from data, self-contained, findings rendered; the data
extraction checked against a plain-PyTorch recomputation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradvet
from gradvet.html import RUN_CHARTS, findings_html, render_report, write_report
from gradvet.html._data import (
    param_grad_by_layer,
    pick_rows,
    signal_layers,
    spans_decades,
    update_ratio_by_layer,
)

from .conftest import record_mixed

CHARTS = {"loss", "gradient-flow", "signal-heatmap", "gradw-heatmap", "update-ratio", "activations", "time-profile"}


def charts_in(html: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r'data-chart="([^"]+)" data-points="(\d+)"', html)}


def test_report_has_every_chart_with_data(mixed_record: Path, tmp_path: Path) -> None:
    out = write_report(mixed_record, tmp_path / "sub" / "r.html")
    html = out.read_text()
    charts = charts_in(html)
    assert set(charts) == CHARTS
    assert all(n > 0 for n in charts.values()), charts
    assert html.count("<svg") == len(CHARTS)
    assert len(RUN_CHARTS) == len(CHARTS)


def test_report_is_self_contained(mixed_record: Path) -> None:
    html = render_report(gradvet.load(mixed_record))
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert "@import" not in html and not re.findall(r"url\((?!#)", html)  # only in-page clip paths
    assert all(h.startswith(("#", "data:image/png;base64,")) for h in re.findall(r'href="([^"]*)"', html))


def test_report_shows_findings_with_evidence_causes_and_prescriptions(mixed_record: Path) -> None:
    run = gradvet.load(mixed_record)
    report = run.report()
    html = render_report(run)
    assert 'id="findings"' in html
    if report.findings:
        f = report.findings[0]
        assert f'data-kind="{f.kind}"' in html
        from html import escape

        assert escape(f.evidence) in html
        if f.causes:
            assert escape(f.causes[0].reason) in html
        if f.remedies:
            assert escape(f.remedies[0].explanation) in html
    assert "No findings" in findings_html([])


def test_report_is_deterministic(mixed_record: Path) -> None:
    run = gradvet.load(mixed_record)
    assert render_report(run) == render_report(run)


def test_missing_data_gives_notes_not_charts(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    with gradvet.Monitor(model, record=tmp_path / "m.gradvet", profile="economy") as mon:
        for _ in range(3):
            model.zero_grad()
            loss = model(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            mon.step(loss)
    html = render_report(gradvet.load(tmp_path / "m.gradvet"))
    charts = charts_in(html)
    assert "time-profile" not in charts and "update-ratio" not in charts
    assert "no recurrent" in html and "pass optimizer=" in html
    assert charts["loss"] == 3


def test_write_report_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no gradvet record"):
        write_report(tmp_path / "nope.gradvet", tmp_path / "x.html")
    bad = tmp_path / "bad.gradvet"
    bad.write_text("not sqlite")
    with pytest.raises(ValueError, match="not a gradvet record"):
        write_report(bad, tmp_path / "x.html")


def test_param_grad_by_layer_matches_autograd(tmp_path: Path) -> None:
    """|grad W| per layer = the norm of all of that layer's parameter gradients, recomputed directly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    expected = []
    with gradvet.Monitor(model, record=tmp_path / "g.gradvet", profile="full") as mon:
        for _ in range(2):
            model.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            expected.append([float(torch.sqrt(sum(p.grad.pow(2).sum() for p in m.parameters())))
                             for m in (model[0], model[2])])
            mon.step(loss)
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
    run = gradvet.load(tmp_path / "g.gradvet")
    layers = signal_layers(run)
    assert [x["name"] for x in layers] == ["0", "2"]
    _, got = param_grad_by_layer(run, layers)
    assert np.allclose(got, np.array(expected), rtol=1e-4)


def test_update_ratio_by_layer_matches_weight_copies(tmp_path: Path) -> None:
    """||delta W|| / ||W|| per layer, recomputed from copies of the weights around opt.step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    expected = []
    with gradvet.Monitor(model, optimizer=opt, record=tmp_path / "u.gradvet", profile="full") as mon:
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            mon.step(loss)
            before = [[p.detach().clone() for p in m.parameters()] for m in (model[0], model[2])]
            opt.step()
            row = []
            for m, old in zip((model[0], model[2]), before):
                delta = torch.sqrt(sum((p.detach() - o).pow(2).sum() for p, o in zip(m.parameters(), old)))
                norm = torch.sqrt(sum(o.pow(2).sum() for o in old))
                row.append(float(delta / norm))
            expected.append(row)
    run = gradvet.load(tmp_path / "u.gradvet")
    _, got = update_ratio_by_layer(run, signal_layers(run))
    assert np.allclose(got, np.array(expected), rtol=1e-3)


def test_small_helpers() -> None:
    assert pick_rows(np.arange(10)) == [0, 4, 9] or pick_rows(np.arange(10)) == [0, 5, 9]
    assert pick_rows(np.arange(1)) == [0] and pick_rows(np.arange(0)) == []
    assert spans_decades(np.array([1e-3, 1.0])) and not spans_decades(np.array([1.0, 2.0, np.nan]))


def test_heatmap_counts_only_finite_cells(tmp_path: Path) -> None:
    from gradvet.html import heatmap_chart

    m = np.array([[1.0, np.nan], [np.inf, 2.0]])
    chart = heatmap_chart("h", "t", m, row_labels=["a", "b"], col_labels=["x", "y"], xlabel="x", ylabel="y",
                          cbar_label="c", caption="c", annotate=True)
    assert chart.points == 2 and 'data-points="2"' in chart.html()


def test_economy_record_from_a_longer_run(tmp_path: Path) -> None:
    path = record_mixed(tmp_path / "e.gradvet", steps=30, profile="business")
    charts = charts_in(render_report(gradvet.load(path)))
    assert charts["loss"] == 30 and charts["signal-heatmap"] > 0
