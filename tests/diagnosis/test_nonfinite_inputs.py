"""NaN/Inf in the data: the most frequent origin of a NaN, said first and with the data's remedy (issue 12)."""

import numpy as np
import torch
from torch import nn

import gradvet


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(6):
        layers += [nn.Linear(64 if i == 0 else 32, 32 if i < 5 else 10)] + ([nn.Sigmoid()] if i < 5 else [])
    return nn.Sequential(*layers)


def _train(bad_step: int, profile: str = "full", steps: int = 40):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    counts = []
    with gradvet.Monitor(model, optimizer=opt, profile=profile) as mon:
        for s in range(steps):
            x, y = torch.randn(32, 64, generator=gen), torch.randint(0, 10, (32,), generator=gen)
            if s == bad_step:
                x[3, 5], x[7, 1] = float("inf"), float("nan")
            counts.append(int((~torch.isfinite(x)).sum()))  # the plain count
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            mon.step(loss)
            opt.step()
    return mon, counts


def test_a_bad_batch_is_found_counted_and_said_first() -> None:
    mon, counts = _train(bad_step=30)
    run = mon.load()
    s = run.get("input_nonfinite")
    assert list(s.steps) == list(range(40))
    np.testing.assert_array_equal(s.values, np.asarray(counts, dtype=np.float32))
    report = mon.report()
    first = report.findings[0]
    assert first.kind == "nonfinite_gradients" and first.severity == "error"
    assert "the batch at step 30 holds 2 NaN/Inf value(s) in its inputs" in first.evidence
    assert [r.id for r in first.remedies][:2] == ["data:filter_nonfinite", "skip_nonfinite"]
    assert first.causes[0].id == "nonfinite_inputs" and first.layers == ("0",)


def test_unchecked_steps_are_not_counted_and_clean_runs_say_nothing() -> None:
    # economy: layer taps (and the input check) every 50 steps; the others are not checked (NaN)
    mon, _ = _train(bad_step=-1, profile="economy", steps=60)
    s = mon.load().get("input_nonfinite")
    checked = np.isfinite(s.values)
    assert list(s.steps[checked]) == [0, 50] and (s.values[checked] == 0).all()
    assert "nonfinite_gradients" not in mon.report().kinds()


def test_check_counts_non_finite_targets() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    y[2, 0] = float("nan")
    report = gradvet.check(model, (x, y), nn.functional.mse_loss)
    assert report.meta["targets_nonfinite"] == 1
    first = report.findings[0]
    assert first.kind == "nonfinite_gradients" and "the targets hold 1 NaN/Inf value(s)" in first.evidence
    assert first.remedies[0].id == "data:filter_nonfinite"
