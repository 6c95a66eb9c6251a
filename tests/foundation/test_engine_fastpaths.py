"""The engine's fast paths record what the slow paths would, against independent recomputation.

- P1: update/weight ratios from snapshot buffers kept across steps, ||W|| reused from
  ``monitor.step``: exact when parameters, dtypes and the optimizer's groups change.
- P2: non-finite gradient counts only where the L2 norm is non-finite (CPU).
- P3: gradvet's own statistics run with torch functions disabled: the user's
  functional activations are still attributed, and a user's TorchFunctionMode
  sees exactly the torch calls it sees without gradvet.
- P5: per-layer statistics: one single-pass path on every device (issue 13), exact
  against float64 recomputation, non-finite entries counted and skipped.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import gradvet
from gradvet.stats import _layer
from gradvet.stats._activations import activation_kind
from gradvet.stats._params import param_stats

from ._reference import assert_close, layer_value, monitored_step, reference_outputs


def _nonfinite(t: torch.Tensor) -> float:
    return float((~torch.isfinite(t)).sum())


# -- P2: non-finite counts ------------------------------------------------------------------
@pytest.mark.parametrize("mixed_dtypes", [False, True], ids=["fast-path", "grouped-path"])
def test_nonfinite_count_exact_with_one_bad_entry(device, mixed_dtypes):
    """One NaN in one gradient, an inf in another; a third overflows its norm with finite entries."""
    torch.manual_seed(0)
    dt = torch.float64 if mixed_dtypes else torch.float32
    params = [
        torch.randn(7, 5, device=device),
        torch.randn(11, device=device, dtype=dt),
        torch.randn(3, 4, device=device),
        torch.randn(6, device=device),
    ]
    grads = [torch.randn_like(p) for p in params]
    grads[0][3, 2] = float("nan")
    grads[1][4] = float("-inf")
    grads[2][:] = 3e30  # every entry finite, the float32 sum of squares is inf
    assert math.isinf(torch.linalg.vector_norm(grads[2]).item())
    out = param_stats(params, grads, count_nonfinite=True)
    assert out[:, 2].tolist() == [_nonfinite(g) for g in grads] == [1.0, 1.0, 0.0, 0.0]
    # the other columns are untouched by the lazy count
    np.testing.assert_allclose(out[3, 0].item(), grads[3].double().norm().item(), rtol=1e-6)
    np.testing.assert_allclose(
        out[:, 3].cpu(), [p.double().norm().item() for p in params], rtol=1e-6
    )


def test_nonfinite_count_many_bad_entries_through_monitor(device):
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).to(device)
    bad = torch.zeros(16, 6, dtype=torch.bool, device=device)
    bad.view(-1)[torch.randperm(96, device=device)[:13]] = True
    model[0].weight.register_hook(lambda g: g.masked_fill(bad, float("nan")))
    x = torch.randn(4, 6, device=device)
    with gradvet.Monitor(model, profile="full") as monitor:
        for _ in range(2):
            model.zero_grad()
            model(x).square().mean().backward()
            expected = [_nonfinite(p.grad) for p in model.parameters()]
            monitor.step()
    assert expected == [13.0, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(monitor.run.series("param/grad_nonfinite").values, [expected] * 2)


# -- P5: per-layer statistics ---------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: torch.randn(64, 33) * 3 + 7, id="shifted"),
        pytest.param(lambda: torch.sigmoid(torch.randn(16, 8, 5, 5) * 20), id="saturated-sigmoid"),
        pytest.param(lambda: torch.randn(40, 24).t(), id="non-contiguous"),
        pytest.param(lambda: torch.randn(9, 17, dtype=torch.float64), id="float64"),
        pytest.param(lambda: torch.randn(9, 17).bfloat16(), id="bfloat16"),
    ],
)
def test_output_stats_against_float64_recomputation(make):
    """One path on every device (issue 13): a single-pass var_mean, no CPU-only shortcut."""
    y = make()
    kind = activation_kind(nn.Sigmoid())
    acc, _ = _layer.output_stats(y, kind, 0.1, 1)
    y64 = y.double()
    expected = [y64.sum(), y64.square().sum(), y.numel(), (y64 * (1 - y64) < 0.025).sum(), 0]
    np.testing.assert_allclose(acc.tolist(), [float(v) for v in expected], rtol=1e-5, atol=1e-6)
    # the spread survives a mean that dwarfs it (E[y^2] - E[y]^2 from float32 sums would not)
    mean, var = acc[0] / acc[2], acc[1] / acc[2] - (acc[0] / acc[2]) ** 2
    assert_close(var.sqrt().item(), y64.std(unbiased=False).item(), rtol=1e-4)
    assert_close(mean.item(), y64.mean().item(), rtol=1e-6)


def test_output_stats_with_nonfinite_entries_counts_and_skips_them():
    y = torch.randn(12, 10)
    y[0, 0], y[3, 4], y[7, 1] = float("nan"), float("inf"), float("-inf")
    acc, _ = _layer.output_stats(y, None, 0.1, -1)
    kept = y[torch.isfinite(y)].double()
    expected = [kept.sum(), kept.square().sum(), kept.numel(), 0, 3]
    np.testing.assert_allclose(acc.tolist(), [float(v) for v in expected], rtol=1e-6)


def test_output_stats_overflowing_sum_of_finite_entries_is_not_called_nonfinite():
    y = torch.full((4, 8), 3e38)  # finite entries; their float32 sum is inf
    acc, _ = _layer.output_stats(y, None, 0.1, -1)
    assert acc[2].item() == 32 and acc[4].item() == 0  # all counted as finite, none non-finite


@pytest.mark.parametrize(
    "g, nonfinite",
    [
        pytest.param(torch.randn(30, 7), 0, id="finite"),
        pytest.param(
            torch.randn(30, 7).index_fill_(0, torch.tensor([4]), float("nan")), 7, id="nan-row"
        ),
        pytest.param(torch.full((5, 5), 1e30), 0, id="overflow"),
    ],
)
def test_grad_stats_count_and_sum_of_squares(g, nonfinite):
    acc = _layer.grad_stats(g)
    assert acc[1].item() == g.numel() and acc[2].item() == nonfinite == _nonfinite(g)
    if nonfinite == 0 and torch.isfinite(g.square().sum()):
        assert_close(acc[0].item(), g.double().square().sum().item(), rtol=1e-6)


def test_alive_mask_equals_any_nonzero():
    y = torch.randn(6, 5, 4).relu()
    y[:, 1] = 0.0
    y[:, 2] = -0.0  # negative zero is zero: dead
    y[2, 3, 0] = float("nan")  # NaN is not zero: alive
    for unit_dim in (1, -1, 0):
        d = unit_dim % y.dim()
        other = tuple(i for i in range(y.dim()) if i != d)
        assert torch.equal(_layer._alive(y, unit_dim), (y != 0).any(dim=other))
    empty = torch.zeros(0, 5)
    assert torch.equal(_layer._alive(empty, -1), torch.zeros(5, dtype=torch.bool))


def test_layer_nonfinite_counts_through_monitor(device):
    """NaN weights in the head: its output is partly NaN, every gradient below it is NaN,
    the hidden outputs and the head's dL/d output stay finite: both paths in one model."""
    model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 4)).to(device)
    with torch.no_grad():
        model[2].weight[1] = float("nan")  # output column 1 is NaN on every sample
    x = torch.randn(5, 6, device=device)

    def loss_fn(out):
        return out[:, 2:].square().mean()  # the NaN column does not reach the loss

    ref = reference_outputs(model, x, loss_fn, ["0", "1", "2"])
    run, _ = monitored_step(model, x, loss_fn)
    counts = {}
    for name in ("0", "1", "2"):
        ((y, g),) = ref[name]
        counts[name] = (
            layer_value(run, "out_nonfinite", name),
            layer_value(run, "grad_nonfinite", name),
        )
        assert counts[name] == (_nonfinite(y), _nonfinite(g)), name
        kept = y[torch.isfinite(y)].double()
        assert_close(layer_value(run, "act_mean", name), kept.mean().item(), rtol=1e-5, what=name)
        assert_close(
            layer_value(run, "act_std", name), kept.std(unbiased=False).item(), rtol=1e-5, what=name
        )
    # NaN * 0 in the head's backward makes every gradient below it NaN
    assert counts == {"0": (0, 50), "1": (0, 50), "2": (5, 0)}
    ((_, g2),) = ref["2"]
    assert_close(layer_value(run, "grad_norm", "2"), g2.double().norm().item(), rtol=1e-5)


# -- P3: gradvet's statistics bypass torch-function overrides -------------------------------
class _Counting(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 12)
        self.fc2 = nn.Linear(12, 12)
        self.fc3 = nn.Linear(12, 2)

    def forward(self, x):
        # each activation runs right after gradvet's hook measured its input's layer
        return self.fc3(torch.sigmoid(self.fc2(F.relu(self.fc1(x)))))


def test_functional_activations_still_attributed_after_gradvet_stats(device):
    torch.manual_seed(0)
    model = _Functional().to(device)
    with torch.no_grad():
        model.fc2.weight.mul_(6.0)  # some saturated sigmoid units
        model.fc1.bias[:4] = -100.0  # 4 of 12 ReLU units dead
    x = torch.randn(32, 5, device=device)
    run, _ = monitored_step(model, x, lambda out: out.square().mean(), saturation_threshold=0.2)
    activations = {layer["name"]: layer["activation"] for layer in run.layers}
    assert activations == {"": "", "fc1": "relu", "fc2": "sigmoid", "fc3": ""}
    pre2 = model.fc2(F.relu(model.fc1(x))).detach()
    s = torch.sigmoid(pre2).double()
    expected_sat = (s * (1 - s) < 0.25 * 0.2).double().mean().item()
    assert 0.05 < expected_sat < 0.95
    assert_close(layer_value(run, "sat_frac", "fc2"), expected_sat, rtol=1e-6)
    pre1 = model.fc1(x).detach()
    expected_dead = (F.relu(pre1) == 0).all(dim=0).double().mean().item()
    assert expected_dead == pytest.approx(1 / 3)
    assert_close(layer_value(run, "dead_frac", "fc1"), expected_dead, rtol=1e-6)
    # the layer's moments are its own (pre-activation) output's
    assert_close(layer_value(run, "act_mean", "fc2"), pre2.double().mean().item(), rtol=1e-5)


def test_user_mode_sees_the_same_torch_calls_with_and_without_gradvet():
    torch.manual_seed(0)
    model = _Functional()
    x = torch.randn(8, 5)

    def calls() -> list[str]:
        """Torch calls a user's mode sees in a forward and backward (gradvet's hooks included)."""
        model.zero_grad()
        with _Counting() as user:
            model(x).sum().backward()
        return user.calls

    plain = calls()
    with gradvet.Monitor(model, profile="full") as monitor:
        monitored = calls()
        monitor.step()
    assert "sigmoid" in plain and "relu" in plain and "backward" in plain
    assert monitored == plain  # none of gradvet's own statistics went through the user's mode
    assert not torch.overrides._is_torch_function_mode_enabled()
    # gradvet's mode, entered inside the user's, still attributed the activations
    activations = {layer["name"]: layer["activation"] for layer in monitor.run.layers}
    assert activations == {"": "", "fc1": "relu", "fc2": "sigmoid", "fc3": ""}
    assert np.isfinite(monitor.run.series("layer/grad_norm").values).all()


# -- P1: update ratios from buffers kept across steps ---------------------------------------
def _step_and_expect(model, opt, monitor, x, expected, params=None):
    opt.zero_grad()
    model(x).square().mean().backward()
    monitor.step()
    ps = list(model.parameters()) if params is None else params
    before = [p.detach().clone() for p in ps]
    opt.step()
    expected.append(
        [
            ((p.detach().double() - b.double()).norm() / b.double().norm()).item()
            for p, b in zip(ps, before)
        ]
    )


def test_snapshot_buffers_are_reused_and_freed(device):
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(6, 4, device=device)
    expected: list[list[float]] = []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        _step_and_expect(model, opt, monitor, x, expected)
        ptrs = {k: b.data_ptr() for k, b in monitor._snapshots[id(opt)].items()}
        for _ in range(3):
            _step_and_expect(model, opt, monitor, x, expected)
        assert {k: b.data_ptr() for k, b in monitor._snapshots[id(opt)].items()} == ptrs
        assert sorted(ptrs) == [0, 1, 2, 3]
    assert monitor._snapshots == {}  # close() gives the weight copy back
    np.testing.assert_allclose(monitor.run.series("param/update_ratio").values, expected, rtol=1e-5)


def test_update_ratio_follows_param_group_changes(device):
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    opt = torch.optim.SGD(model[2].parameters(), lr=0.1)
    x = torch.randn(6, 4, device=device)
    params = list(model.parameters())
    expected: list[list[float]] = []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        _step_and_expect(model, opt, monitor, x, expected, params[2:])
        opt.add_param_group({"params": list(model[0].parameters()), "lr": 0.05})  # unfrozen later
        _step_and_expect(model, opt, monitor, x, expected, params)
        assert sorted(monitor._snapshots[id(opt)]) == [0, 1, 2, 3]
        opt.param_groups.pop(0)  # the head leaves the optimizer
        _step_and_expect(model, opt, monitor, x, expected, params[:2])
        assert sorted(monitor._snapshots[id(opt)]) == [0, 1]  # its copy is not kept
    got = monitor.run.series("param/update_ratio").values
    nan = float("nan")
    want = [[nan, nan, *expected[0]], expected[1], [*expected[2], nan, nan]]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_update_ratio_after_a_dtype_change(device):
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected: list[list[float]] = []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        _step_and_expect(model, opt, monitor, torch.randn(6, 4, device=device), expected)
        model.double()  # the same Parameter objects, new storage and dtype
        _step_and_expect(model, opt, monitor, torch.randn(6, 4, device=device).double(), expected)
        assert {b.dtype for b in monitor._snapshots[id(opt)].values()} == {torch.float64}
    np.testing.assert_allclose(monitor.run.series("param/update_ratio").values, expected, rtol=1e-5)


def test_replaced_parameter_gets_no_ratio_and_no_buffer(device):
    """A Parameter replaced in the model and the optimizer is not a monitored one: NaN, not stale."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(6, 4, device=device)
    expected: list[list[float]] = []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        _step_and_expect(model, opt, monitor, x, expected)
        model[2].weight = nn.Parameter(torch.randn(1, 8, device=device))
        opt.param_groups[0]["params"][2] = model[2].weight
        _step_and_expect(model, opt, monitor, x, expected)
        assert sorted(monitor._snapshots[id(opt)]) == [0, 1, 3]
    got = monitor.run.series("param/update_ratio").values
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)
    assert np.isnan(got[1, 2]) and np.isfinite(got[1, [0, 1, 3]]).all()
    np.testing.assert_allclose(got[1, [0, 1, 3]], np.array(expected[1])[[0, 1, 3]], rtol=1e-5)


def test_update_ratio_when_the_optimizer_step_comes_a_step_late(device):
    """An optimizer step skipped on an update step (AMP overflow) is measured at the next one,
    whose monitor.step did not compute ||W|| (param_every): the norm comes from the snapshot."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(6, 4, device=device)
    expected: list[list[float]] = []
    cfg = {"update_every": 4, "param_every": 100, "layer_every": 100}
    with gradvet.Monitor(model, optimizer=opt, **cfg) as monitor:
        model(x).square().mean().backward()
        monitor.step()  # step 0: an update step, but the optimizer skips it
        _step_and_expect(model, opt, monitor, x, expected)  # step 1: ||W|| not measured
    run = monitor.run
    assert np.isnan(run.series("param/param_norm").values[1]).all()
    series = run.series("param/update_ratio")
    assert series.steps.tolist() == [0]
    np.testing.assert_allclose(series.values, expected, rtol=1e-5)


def test_bfloat16_update_ratio_accumulates_in_float32(device):
    """The old bfloat16 norms kept 3 significant digits (ratios off by ~0.4%)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 8)).to(device, torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    expected: list[list[float]] = []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as monitor:
        for _ in range(2):
            _step_and_expect(
                model, opt, monitor, torch.randn(32, 64, device=device).bfloat16(), expected
            )
    np.testing.assert_allclose(monitor.run.series("param/update_ratio").values, expected, rtol=2e-5)


# -- under torch.compile: functional activations counted once ---------------------------
class _Saturating(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 3)
        with torch.no_grad():
            self.fc1.weight.mul_(8.0)

    def forward(self, x):
        return self.fc2(torch.sigmoid(self.fc1(x)))


def test_compiled_functional_activation_is_attributed_once():
    """Dynamo traces gradvet's mode; the attribution itself runs eagerly, once per call
    (traced, the in-place accumulator add was counted twice with the eager backend)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Saturating()
    x = torch.randn(32, 6)

    def loss_fn(out):
        return out.square().mean()

    s = torch.sigmoid(model.fc1(x)).detach().double()
    expected = (s * (1 - s) < 0.25 * 0.1).double().mean().item()
    assert 0.05 < expected < 0.95
    compiled = torch.compile(model, backend="eager")
    run, _ = monitored_step(compiled, x, loss_fn)
    torch._dynamo.reset()
    activations = {layer["name"]: layer["activation"] for layer in run.layers}
    assert activations["_orig_mod.fc1"] == "sigmoid"
    assert_close(layer_value(run, "sat_frac", "_orig_mod.fc1"), expected, rtol=1e-6)
