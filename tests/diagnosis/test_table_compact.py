"""Large models get a table a person can read: repeated blocks grouped, findings' layers kept whole."""

import statistics

import pytest

from gradvet._render import COMPACT_ABOVE, layer_table, table_rows, to_text
from gradvet.findings import Finding
from gradvet.report import LayerReport, Report


def _report(blocks: int, named: tuple[str, ...] = ()) -> Report:
    layers = [LayerReport("embed", "Embedding", "param", signal_norm=1.0, grad_norm=2.0)]
    for b in range(blocks):
        layers += [
            LayerReport(f"h.{b}.ln", "LayerNorm", "param", signal_norm=1e-3 * (b + 1), grad_norm=0.1),
            LayerReport(f"h.{b}.fc", "Linear", "param", signal_norm=0.5 + b / 100, grad_norm=0.2 * (b + 1)),
            LayerReport(f"h.{b}.drop", "Dropout", "other", signal_norm=0.5),
        ]
    layers.append(LayerReport("head", "Linear", "param", signal_norm=0.3, grad_norm=1.0))
    findings = [Finding("vanishing_gradients", "warning", list(named), "x")] if named else []
    return Report(findings=findings, layers=layers)


def test_repeated_blocks_are_grouped_with_median_and_span() -> None:
    report = _report(20, named=("h.7.fc",))
    rows = table_rows(report)
    names = [r.name for r in rows]
    # the named layer keeps its own row; its block position is grouped without it; dropout left out
    assert names == ["embed", "h.{0..19}.ln", "h.{0..19}.fc", "h.7.fc", "head"]
    fc = rows[2]
    want = [0.5 + b / 100 for b in range(20) if b != 7]
    assert len(fc.layers) == 19
    assert fc.median("signal_norm") == statistics.median(want)
    assert fc.span("signal_norm") == f"{min(want):.2e}..{max(want):.2e}"
    assert fc.median("grad_norm") == statistics.median([0.2 * (b + 1) for b in range(20) if b != 7])
    text = to_text(layer_table(report), width=200)
    assert "h.{0..19}.fc" in text and "h.7.fc" in text and "Dropout" not in text
    assert "on 5 rows" in text and "report.table(full=True)" in text


def test_full_table_and_small_models_show_every_layer() -> None:
    big = _report(20)
    assert len(table_rows(big, full=True)) == len(big.layers)
    assert "h.13.drop" in to_text(big.table(full=True), width=200)
    small = _report(3)
    assert len(small.layers) <= COMPACT_ABOVE
    assert [r.name for r in table_rows(small)] == [x.name for x in small.layers]
    assert "span" not in to_text(layer_table(small), width=200)


def test_a_run_that_ends_in_nan_shows_its_last_finite_values_and_says_when_it_broke() -> None:
    import numpy as np
    import torch

    import gradvet

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradvet.Monitor(model, optimizer=opt, profile="full") as mon:
        for step in range(6):
            opt.zero_grad()
            if step == 4:
                with torch.no_grad():
                    model[0].weight[0, 0] = float("nan")
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            mon.step(loss)
            opt.step()
    run = mon.load()
    report = run.report()
    assert report.nonfinite_from == 4
    losses = run.loss
    assert np.isnan(losses[-1]) and report.loss == float(losses[3])
    # each layer's values are from its last finite step (3), not the NaN of the last one
    s = run.get("layer/grad_norm")
    names = [layer["name"] for layer in run.layers]
    for name in ("0", "2"):
        assert report.layer(name).signal_norm == float(s.values[3, names.index(name)])
    assert "non-finite (NaN/Inf) from step 4" in str(report)


def test_show_all_prints_every_layer(tmp_path) -> None:
    import torch
    from typer.testing import CliRunner

    import gradvet
    from gradvet.cli import app

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(8, 8)) for _ in range(45)])
    for block in model:
        torch.nn.init.orthogonal_(block[0].weight)  # a healthy linear stack: no finding keeps a layer apart
    path = tmp_path / "r.gradvet"
    with gradvet.Monitor(model, record=path, profile="full") as mon:
        loss = model(torch.randn(32, 8)).square().mean()
        loss.backward()
        mon.step(loss)
    compact = CliRunner().invoke(app, ["show", str(path)]).output
    full = CliRunner().invoke(app, ["show", "--all", str(path)]).output
    assert "│ {1..43}.0 " in compact and "│ 13.0 " not in compact and "│ 0.0 " in compact and "│ 44.0 " in compact
    assert all(f"│ {i}.0 " in full for i in range(45)) and "{1..43}" not in full


def test_a_tied_head_says_whose_gradient_counts_its_weight() -> None:
    import torch

    import gradvet
    from gradvet.html import layer_table_html

    class LM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = torch.nn.Embedding(20, 8)
            self.mid = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(8, 20, bias=False)
            self.head.weight = self.wte.weight  # tied, as language models do

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.mid(self.wte(ids))))

    model = LM()
    ids = torch.randint(0, 20, (4, 6))
    report = gradvet.check(
        model, (ids, ids), lambda out, t: torch.nn.functional.cross_entropy(out.flatten(0, 1), t.flatten())
    )
    head, wte = report.layer("head"), report.layer("wte")
    assert head.tied_to == "wte" and head.grad_norm is None and wte.tied_to == ""
    # the shared weight's gradient (both uses) is counted once, at its owner: plain autograd agrees
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    assert wte.grad_norm == pytest.approx(float(model.wte.weight.grad.norm()), rel=1e-5)
    assert "tied: wte" in to_text(report.table(), width=200)
    assert "tied to <code>wte</code>" in layer_table_html(report.layers)
