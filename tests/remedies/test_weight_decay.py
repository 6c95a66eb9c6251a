"""Weight decay against growing weights: the record's weight norms match a plain recomputation,
the weight-growth rule prescribes weight decay without it and is silent with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradvet
from gradvet.data import digits
from gradvet.lab._growth import noisy_labels, weight_norms
from gradvet.lab._models import MLP

STEPS = 300


def _train(weight_decay: float, path: Path) -> tuple[gradvet.Report, list[float], gradvet.Run]:
    """The growth net of gradvet.lab._growth, with a plain norm of its weights taken at every step."""
    data = digits()
    y = noisy_labels(data.y_train, 0.3, 0)
    torch.manual_seed(0)
    model = MLP(6, act="relu")
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(1)
    plain = []
    with gradvet.Monitor(model, optimizer=opt, record=path, layer_every=50) as monitor:
        for _ in range(STEPS):
            idx = torch.randint(0, len(y), (128,), generator=gen)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), y[idx])
            loss.backward()
            monitor.step(loss)
            with torch.no_grad():  # the reference: every 2-D parameter, before the step
                plain.append(float(torch.sqrt(sum(p.double().pow(2).sum() for p in model.parameters() if p.ndim >= 2))))
            opt.step()
    return monitor.report(), plain, gradvet.load(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[float, tuple]:
    out = tmp_path_factory.mktemp("wd")
    return {wd: _train(wd, out / f"wd{wd}.gradvet") for wd in (0.0, 1.0)}


def test_recorded_weight_norms_match_plain_recomputation(runs: dict[float, tuple]) -> None:
    for _, plain, run in runs.values():
        steps, w = weight_norms(run)
        np.testing.assert_allclose(w, np.asarray(plain)[steps], rtol=1e-4)


def test_weight_decay_stops_the_growth(runs: dict[float, tuple]) -> None:
    free, decayed = np.asarray(runs[0.0][1]), np.asarray(runs[1.0][1])
    assert free[-1] / free[0] > 2.0
    assert decayed[-1] / decayed[0] < 1.3
    assert decayed[-1] < 0.6 * free[-1]


def test_rule_prescribes_weight_decay_only_where_weights_grow(runs: dict[float, tuple]) -> None:
    report = runs[0.0][0]
    found = [f for f in report.findings if f.kind == "exploding_gradients"]
    assert found and found[0].remedies[0].id == "optim:weight_decay"
    assert "weight_decay=" in found[0].remedies[0].snippet
    steps, _ = weight_norms(runs[0.0][2])
    plain = np.asarray(runs[0.0][1])[steps]  # the steps where the Monitor measured the weights
    k = max(3, min(10, len(plain) // 10))  # the rule's early window
    late = plain[len(plain) - max(k, len(plain) // 5):]
    assert found[0].data["weight_growth"] == pytest.approx(np.median(late) / np.median(plain[:k]), rel=1e-3)
    assert not [f for f in runs[1.0][0].findings if f.kind == "exploding_gradients"]
