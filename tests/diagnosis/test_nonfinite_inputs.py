"""NaN/Inf in the data: the most frequent origin of a NaN, said first and with the data's remedy (issue 12)."""

import numpy as np
import pytest
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


def test_every_step_is_checked_in_the_economy_profile_too() -> None:
    # economy measures layers every 50 steps; the inputs are checked on every training forward
    mon, counts = _train(bad_step=30, profile="economy", steps=60)
    s = mon.load().get("input_nonfinite")
    np.testing.assert_array_equal(s.values, np.asarray(counts, dtype=np.float32))
    assert "the batch at step 30 holds 2" in mon.report().findings[0].evidence
    clean, _ = _train(bad_step=-1, profile="economy", steps=20)
    assert (clean.load().get("input_nonfinite").values == 0).all()
    assert "nonfinite_gradients" not in clean.report().kinds()


def test_check_counts_non_finite_targets() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    y[2, 0] = float("nan")
    report = gradvet.check(model, (x, y), nn.functional.mse_loss)
    assert report.meta["targets_nonfinite"] == 1
    first = report.findings[0]
    assert first.kind == "nonfinite_gradients" and "the targets hold 1 NaN/Inf value(s)" in first.evidence
    assert first.remedies[0].id == "data:filter_nonfinite"


def _relu_he(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(8):
        lin = nn.Linear(64, 64 if i < 7 else 10)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers += [lin] + ([nn.ReLU()] if i < 7 else [])
    return nn.Sequential(*layers)


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from gradvet.data import digits

    d = digits()
    gen = torch.Generator().manual_seed(0)
    return [(d.x_train[idx], d.y_train[idx]) for idx in (torch.randint(0, len(d.x_train), (128,), generator=gen)
                                                          for _ in range(n))]


def test_divergence_is_exploding_with_the_learning_rate_first_and_the_late_origin_said() -> None:
    batches = _batches(60)
    # plain PyTorch: the global gradient norm per step until the loss is non-finite
    model = _relu_he()
    opt = torch.optim.SGD(model.parameters(), lr=3.0)
    norms, losses = [], []
    for x, y in batches:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        losses.append(float(loss.detach()))
        if not np.isfinite(losses[-1]):
            break
        loss.backward()
        norms.append(float(torch.sqrt(sum(p.grad.double().square().sum() for p in model.parameters()))))
        opt.step()
    first_bad = len(losses) - 1
    assert 1 < first_bad < 10, losses  # diverges within a few steps
    # gradvet, economy profile (layers every 50 steps)
    model = _relu_he()
    opt = torch.optim.SGD(model.parameters(), lr=3.0)
    with gradvet.Monitor(model, optimizer=opt) as mon:
        for x, y in batches:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            mon.step(loss)
            opt.step()
    report = mon.report()
    exploding = report.finding("exploding_gradients")
    assert exploding is not None and exploding.severity == "error"
    assert exploding.causes[0].id == "learning_rate" and "learning rate 3" in exploding.causes[0].reason
    finite = [g for g in norms if np.isfinite(g)]
    want = np.log10(max(finite[1:]) / finite[0])
    assert exploding.data["log10_growth"] == pytest.approx(want, rel=1e-4)
    nonfinite = report.finding("nonfinite_gradients")
    assert f"the first measured one after step {first_bad}" in nonfinite.evidence
