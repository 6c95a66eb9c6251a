"""Per-parameter statistics and update/weight ratios against plain autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet

from ._reference import ATOL, RTOL, monitored_step


def _expected(params, grads):
    rows = []
    for p, g in zip(params, grads):
        if g is None:
            rows.append([np.nan, np.nan, np.nan, p.detach().double().norm().item()])
            continue
        g = g.to_dense() if g.is_sparse else g
        rows.append(
            [
                g.double().norm().item(),
                g.double().abs().max().item(),
                float((~torch.isfinite(g)).sum()),
                p.detach().double().norm().item(),
            ]
        )
    return np.array(rows)


def _loss(y):
    return lambda out: F.cross_entropy(out, y)


def test_param_stats_match_autograd(device):
    model = nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    ).to(device)
    x, y = torch.randn(10, 6, device=device), torch.randint(0, 3, (10,), device=device)
    run, loss = monitored_step(model, x, _loss(y))
    params = list(model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    assert run.param_names() == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    got = np.stack([run.series(f"param/{s}").values[0] for s in gradvet.stats.PARAM_STATS], axis=1)
    np.testing.assert_allclose(got, _expected(params, grads), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(run.loss, [loss.item()], rtol=1e-6)
    assert [p["shape"] for p in run.params] == [list(p.shape) for p in params]
    assert [p["numel"] for p in run.params] == [p.numel() for p in params]
    assert [p["layer"] for p in run.params] == ["0", "0", "2", "2", "4", "4"]


@pytest.mark.parametrize("profile", ["full", "economy"])
def test_nonfinite_gradient_entries_are_counted(device, profile):
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)).to(device)
    mask = torch.zeros(8, 4, dtype=torch.bool, device=device)
    mask.view(-1)[[0, 5, 9]] = True
    infs = torch.zeros_like(mask)
    infs.view(-1)[[12, 30]] = True

    def poison(g):
        return g.masked_fill(mask, float("nan")).masked_fill(infs, float("inf"))

    model[0].weight.register_hook(poison)
    x = torch.randn(3, 4, device=device)
    with gradvet.Monitor(model, profile=profile) as monitor:
        for _ in range(2):
            model.zero_grad()
            model(x).square().mean().backward()
            monitor.step()
    nonfinite = monitor.run.series("param/grad_nonfinite").values
    assert nonfinite[0].tolist() == [5.0, 0.0, 0.0, 0.0]  # step 0 is a layer step: exact count
    # economy skips the extra pass off layer steps: 1.0 flags "some", a lower bound.
    assert nonfinite[1].tolist() == ([5.0, 0, 0, 0] if profile == "full" else [1.0, 0, 0, 0])
    norms = monitor.run.series("param/grad_norm").values
    assert np.isnan(norms[:, 0]).all() and np.isfinite(norms[:, 1:]).all()


def test_frozen_parameters_are_absent_and_listed(device):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).to(device)
    model[0].requires_grad_(False)
    x = torch.randn(5, 4, device=device)
    run, _ = monitored_step(model, x, lambda out: out.square().mean())
    assert run.param_names() == ["2.weight", "2.bias"]
    assert run.meta["frozen"] == ["0.weight", "0.bias"]
    assert run.series("param/grad_norm").values.shape == (1, 2)
    g = torch.autograd.grad(model(x).square().mean(), [model[2].weight])[0]
    np.testing.assert_allclose(
        run.series("param/grad_norm").values[0, 0], g.norm().item(), rtol=RTOL
    )


class _WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(4, 2)
        self.unused = nn.Linear(4, 2)

    def forward(self, x):
        return self.used(x)


def test_unused_parameter_has_nan_gradient_not_zero(device):
    model = _WithUnused().to(device)
    run, _ = monitored_step(
        model, torch.randn(3, 4, device=device), lambda out: out.square().mean()
    )
    assert run.param_names() == ["used.weight", "used.bias", "unused.weight", "unused.bias"]
    for stat in ("grad_norm", "grad_max", "grad_nonfinite"):
        row = run.series(f"param/{stat}").values[0]
        assert np.isfinite(row[:2]).all() and np.isnan(row[2:]).all(), stat
    np.testing.assert_allclose(
        run.series("param/param_norm").values[0, 2], model.unused.weight.norm().item(), rtol=RTOL
    )
    # the layer that never ran has NaN layer statistics, not zeros
    idx = [layer["name"] for layer in run.layers].index("unused")
    assert np.isnan(run.series("layer/grad_norm").values[0, idx])
    assert np.isnan(run.series("layer/act_mean").values[0, idx])


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, 12, bias=False)
        self.head.weight = self.emb.weight  # weight tying, as in GPT-2

    def forward(self, idx):
        return self.head(torch.tanh(self.mid(self.emb(idx))))


def test_tied_parameters_counted_once(device):
    model = _Tied().to(device)
    idx = torch.randint(0, 12, (4, 5), device=device)
    tgt = torch.randint(0, 12, (4, 5), device=device)

    def loss_fn(out):
        return F.cross_entropy(out.reshape(-1, 12), tgt.reshape(-1))

    run, _ = monitored_step(model, idx, loss_fn)
    assert run.param_names() == ["emb.weight", "mid.weight", "mid.bias"]
    assert run.params[0]["layer"] == "emb"
    params = list(model.parameters())
    grads = torch.autograd.grad(loss_fn(model(idx)), params)  # sums both uses of the tied weight
    got = np.stack([run.series(f"param/{s}").values[0] for s in gradvet.stats.PARAM_STATS], axis=1)
    np.testing.assert_allclose(got, _expected(params, grads), rtol=RTOL, atol=ATOL)
    emb = [layer for layer in run.layers if layer["name"] == "emb"][0]
    head = [layer for layer in run.layers if layer["name"] == "head"][0]
    assert emb["params"] == [0] and head["params"] == []


def test_sparse_embedding_gradient_matches_dense(device):
    torch.manual_seed(1)
    sparse = nn.Sequential(nn.Embedding(20, 5, sparse=True), nn.Linear(5, 1)).to(device)
    dense = nn.Sequential(nn.Embedding(20, 5), nn.Linear(5, 1)).to(device)
    dense.load_state_dict(sparse.state_dict())
    idx = torch.tensor(
        [[1, 2, 2, 7], [7, 7, 3, 1]], device=device
    )  # repeated rows: coalescing matters

    def loss_fn(out):
        return (out - 1).square().mean()

    run, _ = monitored_step(sparse, idx, loss_fn)
    assert sparse[0].weight.grad.is_sparse
    assert run.params[0]["sparse_grad"] is True
    g = torch.autograd.grad(loss_fn(dense(idx)), dense[0].weight)[0]
    row = run.series("param/grad_norm").values[0]
    np.testing.assert_allclose(row[0], g.norm().item(), rtol=RTOL)
    np.testing.assert_allclose(
        run.series("param/grad_max").values[0, 0], g.abs().max().item(), rtol=RTOL
    )
    assert run.series("param/grad_nonfinite").values[0, 0] == 0


@pytest.mark.parametrize(
    "make_opt",
    [
        pytest.param(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), id="sgd"),
        pytest.param(lambda ps: torch.optim.Adam(ps, lr=1e-2), id="adam"),
    ],
)
def test_update_ratio_matches_hand_computed(device, make_opt):
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    opt = make_opt(model.parameters())
    expected = []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        for _ in range(3):
            opt.zero_grad()
            loss = model(torch.randn(6, 4, device=device)).square().mean()
            loss.backward()
            monitor.step(loss)
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            expected.append(
                [
                    ((p.detach() - b).norm() / b.norm()).item()
                    for p, b in zip(model.parameters(), before)
                ]
            )
    series = monitor.run.series("param/update_ratio")
    assert series.steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(series.values, np.array(expected), rtol=1e-5, atol=1e-8)


def test_update_ratio_only_on_schedule_and_only_for_optimized_params(device):
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    opt = torch.optim.SGD(model[2].parameters(), lr=0.1)  # model[0] trains elsewhere (not at all)
    with gradvet.Monitor(model, optimizer=opt, profile="full", update_every=2) as monitor:
        for _ in range(5):
            opt.zero_grad()
            model(torch.randn(6, 4, device=device)).square().mean().backward()
            monitor.step()
            opt.step()
    series = monitor.run.series("param/update_ratio")
    assert series.steps.tolist() == [0, 2, 4]
    assert np.isnan(series.values[:, :2]).all() and np.isfinite(series.values[:, 2:]).all()


def test_no_update_ratio_without_optimizer_steps(device):
    model = nn.Linear(3, 1).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        model(torch.randn(2, 3, device=device)).sum().backward()
        monitor.step()  # the optimizer never steps: nothing to measure
    assert monitor.run.get("param/update_ratio") is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_parameters_keep_float32_accuracy(device, dtype):
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 8)).to(device, dtype)
    x = torch.randn(32, 64, device=device, dtype=dtype)
    run, _ = monitored_step(model, x, lambda out: out.float().square().mean())
    params = list(model.parameters())
    grads = [p.grad for p in params]
    got = np.stack([run.series(f"param/{s}").values[0] for s in gradvet.stats.PARAM_STATS], axis=1)
    # norms of the half-precision tensors, computed in float64: a half-precision
    # result (3 significant digits for bfloat16) would miss by up to 0.4%
    np.testing.assert_allclose(got, _expected(params, grads), rtol=2e-6)


def test_economy_off_steps_record_the_l2_norm_only(device):
    """param_every=3: max |g| and ||W|| on steps 0, 3; the L2 norm on every step, equal to p.grad.norm()."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(6, 4, device=device)
    expected = []
    with gradvet.Monitor(model, optimizer=opt, layer_every=100, update_every=100, param_every=3) as monitor:
        for _ in range(5):
            opt.zero_grad()
            model(x).square().mean().backward()
            expected.append([p.grad.norm().item() for p in model.parameters()])
            monitor.step()
            opt.step()
    run = monitor.run
    np.testing.assert_allclose(run.series("param/grad_norm").values, np.array(expected), rtol=1e-5)
    mx = run.series("param/grad_max").values
    pn = run.series("param/param_norm").values
    assert np.isfinite(mx[[0, 3]]).all() and np.isnan(mx[[1, 2, 4]]).all()
    assert np.isfinite(pn[[0, 3]]).all() and np.isnan(pn[[1, 2, 4]]).all()
    # the report falls back on the last step that has a parameter norm
    rep = monitor.report()
    assert rep.layer("0").param_norm is not None


def test_norms_of_a_list_that_mixes_dtypes_keep_float32_accuracy():
    """The update-ratio buffers mix a model's dtypes in one list: a bfloat16 tensor after a float32 one
    still gets a float32 norm (a bfloat16 result keeps 3 significant digits)."""
    from gradvet.stats._params import _foreach_norm
    from gradvet.stats._updates import l2_norms

    torch.manual_seed(0)
    ts = [torch.randn(300), torch.randn(500).bfloat16(), torch.randn(7).half()]
    expected = [t.double().norm().item() for t in ts]
    got = _foreach_norm(ts, 2.0)
    assert [g.dtype for g in got] == [torch.float32] * 3
    np.testing.assert_allclose([g.item() for g in got], expected, rtol=1e-6)
    np.testing.assert_allclose(l2_norms(ts).numpy(), expected, rtol=1e-6)
