"""Gradient transforms against independent references: torch's clip_grad_*, plain loops, numpy.

Runs on ``GRADVET_TEST_DEVICE`` (default cpu); the no-host-sync checks need CUDA.
"""

from __future__ import annotations

import copy
import doctest
import importlib
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import gradvet
from gradvet.errors import GradvetUsageError
from gradvet.remedies import _autoclip
from gradvet.remedies._transforms import (
    ClipByGlobalNorm,
    FiniteState,
    GradientTransform,
    adaptive_clip,
    autoclip,
    chain,
    clip_by_global_norm,
    clip_by_value,
    skip_nonfinite,
)

DEVICE = torch.device(os.environ.get("GRADVET_TEST_DEVICE", "cpu"))
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(),
    reason="GRADVET_TEST_DEVICE=cuda without CUDA",
)
torch.set_num_threads(1)

SHAPES = [(6, 5), (6,), (4, 3, 3, 3), (4,), ()]  # linear, bias, conv kernel, gain, 0-d scale


def make_params(seed: int = 0, scale: float = 1.0, shapes=SHAPES, device=DEVICE) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for i, shape in enumerate(shapes):
        p = nn.Parameter(torch.randn(shape, generator=g).to(device))
        p.grad = (scale * (i + 1) * torch.randn(shape, generator=g)).to(device)
        params.append(p)
    return params


def twin(params: list[nn.Parameter]) -> list[nn.Parameter]:
    out = []
    for p in params:
        q = nn.Parameter(p.detach().clone())
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


def total_norm(params, norm_type: float = 2.0) -> torch.Tensor:
    flat = torch.cat([p.grad.reshape(-1).double() for p in params if p.grad is not None])
    return torch.linalg.vector_norm(flat, norm_type)


def assert_grads_close(ours, ref, **kw) -> None:
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, **kw)


# -- clip_by_global_norm ----------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_global_norm_clip_equals_torch_clip_grad_norm(norm_type):
    params = make_params(scale=3.0)
    ref = twin(params)
    max_norm = 0.5
    clip = clip_by_global_norm(max_norm, norm_type=norm_type)
    total = clip(params)
    ref_total = nn.utils.clip_grad_norm_(ref, max_norm, norm_type=norm_type)
    assert_grads_close(params, ref)
    torch.testing.assert_close(total, ref_total)
    assert float(total_norm(params, norm_type)) <= max_norm * (1 + 1e-5)
    assert float(total_norm(params, norm_type)) == pytest.approx(max_norm, rel=1e-4)
    assert int(clip.state.steps) == 1 and int(clip.state.clipped) == 1 and int(clip.state.nonfinite) == 0
    torch.testing.assert_close(clip.state.last_norm, ref_total)


def test_global_norm_clip_below_threshold_leaves_grads_untouched():
    params = make_params()
    before = [p.grad.clone() for p in params]
    clip = clip_by_global_norm(10 * float(total_norm(params)))
    clip(params)
    for p, b in zip(params, before):
        assert torch.equal(p.grad, b)
    assert int(clip.state.clipped) == 0 and int(clip.state.steps) == 1


def test_global_norm_clip_counts_only_steps_that_clip():
    params = make_params()
    n = float(total_norm(params))
    clip = clip_by_global_norm(2 * n)
    clip(params)  # under the limit
    for p in params:
        p.grad.mul_(4.0)  # now 4n > 2n
    clip(params)
    assert int(clip.state.steps) == 2 and int(clip.state.clipped) == 1
    assert float(clip.state.last_norm) == pytest.approx(4 * n, rel=1e-5)


def test_norms_path_equals_recomputing():
    a, b = make_params(scale=5.0), make_params(scale=5.0)
    norms = [torch.linalg.vector_norm(p.grad) for p in b]  # computed independently of gradvet
    ta = clip_by_global_norm(1.0)(a)
    tb = clip_by_global_norm(1.0)(b, norms=norms)
    torch.testing.assert_close(ta, tb)
    assert_grads_close(a, b)
    c = make_params(scale=5.0)
    clip_by_global_norm(1.0)(c, norms=torch.stack(norms))  # a 1-d tensor works too
    assert_grads_close(a, c)


class TwoHeads(nn.Module):
    """An unused head: Monitor reports NaN for its norms, which the clipper must skip."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(5, 8)
        self.used = nn.Linear(8, 3)
        self.unused = nn.Linear(8, 3)

    def forward(self, x):
        return self.used(torch.tanh(self.body(x)))


def test_norms_from_a_real_monitor_match_torch():
    torch.manual_seed(0)
    model = TwoHeads().to(DEVICE)
    ref_model = copy.deepcopy(model)
    x = torch.randn(16, 5, device=DEVICE) * 10
    clip = clip_by_global_norm(0.1)
    with gradvet.Monitor(model) as monitor:
        loss = model(x).pow(2).sum()
        loss.backward()
        monitor.step(loss)
        norms = monitor.last_grad_norms
        assert len(norms) == len(monitor.parameters) == 6
        assert any(math.isnan(float(n)) for n in norms)  # the unused head has no gradient
        total = clip(monitor.parameters, norms=norms)
    ref_model(x).pow(2).sum().backward()
    ref_total = nn.utils.clip_grad_norm_(ref_model.parameters(), 0.1)
    torch.testing.assert_close(total, ref_total)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad)
    with_grad = [n for n in norms if not math.isnan(float(n))]
    clip(monitor.parameters, norms=with_grad)  # aligned with the gradients only: also accepted
    with pytest.raises(GradvetUsageError, match="aligned with params"):
        clip(monitor.parameters, norms=norms[:-1])  # 5: neither all 6 params nor the 4 with grads


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_global_norm_scales_like_torch_and_is_counted(bad):
    params = make_params()
    params[2].grad[0, 0, 0, 0] = bad
    ref = twin(params)
    clip = clip_by_global_norm(1.0)
    total = clip(params)
    nn.utils.clip_grad_norm_(ref, 1.0)
    assert_grads_close(params, ref, equal_nan=True)
    assert not torch.isfinite(total)
    assert int(clip.state.nonfinite) == 1 and int(clip.state.clipped) == 0
    if bad == float("inf"):  # coef 0: finite entries become 0, the inf entry NaN
        assert torch.equal(params[0].grad, torch.zeros_like(params[0].grad))
    else:
        assert all(torch.isnan(p.grad).all() for p in params)


def _sparse_model():
    torch.manual_seed(1)
    emb = nn.Embedding(10, 4, sparse=True).to(DEVICE)
    lin = nn.Linear(4, 2).to(DEVICE)
    idx = torch.tensor([1, 1, 3, 7, 1], device=DEVICE)  # repeated index: an uncoalesced grad
    (lin(emb(idx)) * 20).pow(2).sum().backward()
    assert emb.weight.grad.is_sparse
    return [emb.weight, *lin.parameters()]


def test_global_norm_clip_sparse_grad_equals_dense_reference():
    params = _sparse_model()
    dense = [nn.Parameter(p.detach().clone()) for p in params]
    for d, p in zip(dense, params):
        d.grad = p.grad.to_dense().clone()
    clip = clip_by_global_norm(1.0)
    total = clip(params)
    ref_total = nn.utils.clip_grad_norm_(dense, 1.0)
    torch.testing.assert_close(total, ref_total)
    for p, d in zip(params, dense):
        torch.testing.assert_close(p.grad.to_dense(), d.grad)


# -- clip_by_value ----------------------------------------------------------------------------
def test_clip_by_value_equals_clamp_and_counts_entries():
    params = make_params(scale=2.0)
    params[1].grad[0] = float("nan")  # stays NaN, not counted
    before = [p.grad.clone() for p in params]
    c = 1.5
    clip = clip_by_value(c)
    n = clip(params)
    expected = sum(int((b.abs() > c).sum()) for b in before)
    assert expected > 0 and int(n) == expected
    for p, b in zip(params, before):
        torch.testing.assert_close(p.grad, torch.clamp(b, -c, c), equal_nan=True, rtol=0, atol=0)
    n2 = clip(params)  # nothing left to clip
    assert int(n2) == 0 and int(clip.state.clipped) == expected and int(clip.state.steps) == 2
    assert int(clip.state.last_clipped) == 0


def test_clip_by_value_sparse_clamps_summed_entries():
    params = _sparse_model()
    dense = params[0].grad.to_dense().clone()
    c = float(dense.abs().max()) / 3
    n = clip_by_value(c)(params[:1])
    torch.testing.assert_close(params[0].grad.to_dense(), dense.clamp(-c, c))
    assert int(n) == int((dense.abs() > c).sum())


# -- adaptive_clip ----------------------------------------------------------------------------
def reference_agc(weight: torch.Tensor, grad: torch.Tensor, clipping: float, eps: float):
    """NFNets AGC written out unit by unit: (clipped grad, units clipped)."""
    w, g = weight.detach().double(), grad.clone().double()
    units = [...] if w.ndim <= 1 else list(range(w.shape[0]))
    n = 0
    for i in units:
        limit = clipping * max(float(w[i].norm()), eps)
        gn = float(g[i].norm())
        if gn > limit:
            g[i] = g[i] * (limit / gn)
            n += 1
    return g.to(grad.dtype), n


def test_adaptive_clip_matches_unitwise_reference():
    params = make_params(seed=3)
    # spread the gradient scales so that some units clip and some do not
    g = torch.Generator().manual_seed(4)
    for p in params:
        rows = 1 if p.ndim <= 1 else p.shape[0]
        spread = torch.logspace(-4, 0, rows).to(DEVICE)
        spread = spread[torch.randperm(rows, generator=g)]
        p.grad = p.grad * (spread.view(-1, *[1] * (p.ndim - 1)) if p.ndim > 1 else spread[0] * 1e-3)
    params[3].grad.mul_(1e6)  # a gain that clips
    before = [p.grad.clone() for p in params]
    clipping, eps = 0.05, 1e-3
    refs = [reference_agc(p, b, clipping, eps) for p, b in zip(params, before)]
    agc = adaptive_clip(clipping, eps)
    n = agc(params)
    for p, b, (ref, _) in zip(params, before, refs):
        torch.testing.assert_close(p.grad, ref)
        if p.ndim > 1:  # rows below the limit are bit-for-bit unchanged
            same = [i for i in range(p.shape[0]) if torch.equal(ref[i], b[i].to(ref.dtype))]
            assert all(torch.equal(p.grad[i], b[i]) for i in same)
    expected = sum(k for _, k in refs)
    total_units = sum(1 if p.ndim <= 1 else p.shape[0] for p in params)
    assert 0 < expected < total_units
    assert int(n) == expected and int(agc.state.clipped) == expected
    assert int(agc.state.units) == total_units
    assert float(agc.clipped_fraction) == pytest.approx(expected / total_units)


def test_adaptive_clip_zero_weights_use_eps_floor():
    w = nn.Parameter(torch.zeros(3, 2, device=DEVICE))
    w.grad = torch.ones(3, 2, device=DEVICE)
    adaptive_clip(clipping=0.1, eps=1e-2)([w])
    row_norms = w.grad.norm(dim=1)
    torch.testing.assert_close(row_norms, torch.full((3,), 0.1 * 1e-2, device=DEVICE))


def test_adaptive_clip_refuses_sparse_before_touching_anything():
    params = _sparse_model()
    lin_before = params[1].grad.clone()
    with pytest.raises(GradvetUsageError, match="dense gradients"):
        adaptive_clip(1e-6)([params[1], params[0]])
    assert torch.equal(params[1].grad, lin_before)


# -- autoclip ---------------------------------------------------------------------------------
@pytest.mark.parametrize("percentile", [10.0, 37.5, 50.0, 100.0])
def test_autoclip_threshold_is_numpy_percentile_of_history(percentile):
    clip = autoclip(percentile=percentile)
    seen = []
    for step in range(12):
        params = make_params(seed=step, scale=float(np.exp(np.sin(step) * 3)))
        norm = float(total_norm(params))
        seen.append(norm)
        total = clip(params)
        expected = np.percentile(seen, percentile, method="linear")
        assert float(total) == pytest.approx(norm, rel=1e-5)
        assert float(clip.state.threshold) == pytest.approx(expected, rel=1e-5)
        assert float(total_norm(params)) == pytest.approx(min(norm, expected), rel=1e-4)
    clipped = sum(s > np.percentile(seen[: i + 1], percentile) for i, s in enumerate(seen))
    assert int(clip.state.clipped) == clipped and int(clip.state.steps) == 12


def test_autoclip_bounded_history_is_a_ring_buffer():
    clip = autoclip(percentile=25.0, history=4)
    seen = []
    for step in range(10):
        params = make_params(seed=step, scale=1.0 + step)
        seen.append(float(total_norm(params)))
        clip(params)
        assert clip.state.history.numel() == 4
        window = seen[-4:]
        assert float(clip.state.threshold) == pytest.approx(np.percentile(window, 25.0), rel=1e-5)
    np.testing.assert_allclose(clip.norm_history().cpu().numpy(), seen[-4:], rtol=1e-5)


def test_autoclip_unbounded_history_doubles(monkeypatch):
    monkeypatch.setattr(_autoclip, "_START", 4)
    clip = autoclip(percentile=90.0)
    seen = []
    for step in range(11):
        params = make_params(seed=step, scale=0.5 + step % 3)
        seen.append(float(total_norm(params)))
        clip(params)
    assert clip.state.history.numel() == 16 and clip.state.count == 11
    np.testing.assert_allclose(clip.norm_history().cpu().numpy(), seen, rtol=1e-5)
    assert float(clip.state.threshold) == pytest.approx(np.percentile(seen, 90.0), rel=1e-5)


def test_autoclip_keeps_nonfinite_norms_out_of_the_history():
    clip = autoclip(percentile=50.0)
    seen = []
    for step in range(5):
        params = make_params(seed=step)
        if step == 2:
            params[0].grad[0, 0] = float("inf")
        else:
            seen.append(float(total_norm(params)))
        clip(params)
    assert int(clip.state.nonfinite) == 1
    assert float(clip.state.threshold) == pytest.approx(np.percentile(seen, 50.0), rel=1e-5)
    assert math.isnan(float(clip.norm_history()[2]))


# -- skip_nonfinite ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_skip_nonfinite_zeroes_every_grad_and_counts(bad):
    params = make_params()
    params[1].grad[2] = bad
    guard = skip_nonfinite()
    finite = guard(params)
    assert not bool(finite) and not bool(guard.finite)
    for p in params:
        assert torch.equal(p.grad, torch.zeros_like(p.grad))
    assert int(guard.state.skipped) == 1 and int(guard.state.steps) == 1


def test_skip_nonfinite_leaves_finite_grads_untouched():
    params = make_params()
    before = [p.grad.clone() for p in params]
    guard = skip_nonfinite()
    assert bool(guard(params))
    for p, b in zip(params, before):
        assert torch.equal(p.grad, b)
    assert int(guard.state.skipped) == 0 and int(guard.state.steps) == 1


def test_skip_nonfinite_with_norms_reads_the_norms():
    params = make_params()
    norms = [torch.linalg.vector_norm(p.grad) for p in params]
    norms[3] = torch.tensor(float("nan"), device=DEVICE)  # as if that gradient held a NaN
    guard = skip_nonfinite()
    assert not bool(guard(params, norms=norms))
    assert all(torch.equal(p.grad, torch.zeros_like(p.grad)) for p in params)


def test_skip_nonfinite_sparse_grad():
    params = _sparse_model()
    params[0].grad._values()[0, 0] = float("nan")
    guard = skip_nonfinite()
    assert not bool(guard(params))
    assert all(not p.grad.to_dense().any() for p in params)


def test_guarded_step_skips_the_optimizer_on_nonfinite_grads():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).to(DEVICE)
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, weight_decay=0.1)
    guard = skip_nonfinite()
    with pytest.raises(GradvetUsageError, match="call guard"):
        guard.guarded_step(opt)
    x = torch.randn(4, 3, device=DEVICE)
    model(x).sum().backward()
    ref(x).sum().backward()
    guard(model.parameters())
    assert guard.guarded_step(opt) is True
    ref_opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    model(x * float("nan")).sum().backward()
    guard(model.parameters())
    assert guard.guarded_step(opt) is False
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)  # zeroed grads + weight decay would have moved them
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        guard.guarded_step(object())


# -- chain ------------------------------------------------------------------------------------
def test_chain_order_matters_and_each_order_equals_its_composition():
    def grads():
        w = nn.Parameter(torch.zeros(2, device=DEVICE))
        w.grad = torch.tensor([3.0, 0.5], device=DEVICE)
        return [w]

    a, b = grads(), grads()
    chain(clip_by_value(1.0), clip_by_global_norm(1.0))(a)
    chain(clip_by_global_norm(1.0), clip_by_value(1.0))(b)
    value_then_norm = torch.tensor([1.0, 0.5], device=DEVICE)
    value_then_norm = value_then_norm / (value_then_norm.norm() + 1e-6)
    g = torch.tensor([3.0, 0.5], device=DEVICE)
    norm_then_value = (g / (g.norm() + 1e-6)).clamp(-1.0, 1.0)
    torch.testing.assert_close(a[0].grad, value_then_norm)
    torch.testing.assert_close(b[0].grad, norm_then_value)
    assert not torch.allclose(a[0].grad, b[0].grad)


def test_chain_skip_before_clip_zeroes_and_clip_before_skip_spreads_nan():
    a, b = make_params(), make_params()
    for ps in (a, b):
        ps[0].grad[0, 0] = float("nan")
    guard_first = chain(skip_nonfinite(), clip_by_global_norm(1.0))
    guard_first(a)
    assert all(torch.equal(p.grad, torch.zeros_like(p.grad)) for p in a)
    assert int(guard_first.state[1].nonfinite) == 0  # the clipper saw zeros
    clip_first = chain(clip_by_global_norm(1.0), skip_nonfinite())
    clip_first(b)  # the NaN coefficient spreads NaN; the guard then zeroes everything
    assert int(clip_first.state[0].nonfinite) == 1 and int(clip_first.state[1].skipped) == 1


class Spy(GradientTransform):
    def init_state(self, device):
        return FiniteState(  # any small state will do
            steps=torch.zeros((), dtype=torch.int64, device=device),
            skipped=torch.zeros((), dtype=torch.int64, device=device),
            finite=torch.ones((), dtype=torch.bool, device=device),
        )

    def apply(self, params, norms):
        self.got = norms
        self.state = type(self.state)(self.state.steps + 1, self.state.skipped, self.state.finite)
        return None


def test_chain_forwards_norms_to_the_first_transform_only_and_reads_a_generator_once():
    model = nn.Linear(3, 2).to(DEVICE)
    model(torch.randn(2, 3, device=DEVICE)).sum().backward()
    first, second = Spy(), Spy()
    t = chain(first, second)
    norms = [p.grad.norm() for p in model.parameters()]
    t(model.parameters(), norms=norms)  # a generator: both transforms must see the params
    assert first.got is not None and len(first.got) == 2 and second.got is None
    assert tuple(int(s.steps) for s in t.state) == (1, 1)
    t.reset()
    assert tuple(int(s.steps) for s in t.state) == (0, 0)
    with pytest.raises(GradvetUsageError, match="aligned"):
        t(model.parameters(), norms=norms[:1])
    assert int(first.state.steps) == 0  # checked before any transform ran


# -- property ---------------------------------------------------------------------------------
shapes_st = st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes=shapes_st, seed=st.integers(0, 2**16), log_scale=st.floats(-3, 3), log_max=st.floats(-3, 3))
def test_property_global_norm_clip_bounds_norm_and_keeps_direction(shapes, seed, log_scale, log_max):
    params = make_params(seed=seed, scale=10.0**log_scale, shapes=[tuple(s) for s in shapes])
    before = torch.cat([p.grad.reshape(-1).double() for p in params])
    max_norm = 10.0**log_max
    clip_by_global_norm(max_norm)(params)
    after = torch.cat([p.grad.reshape(-1).double() for p in params])
    assert float(after.norm()) <= max_norm * (1 + 1e-5)
    cos = torch.dot(before, after) / (before.norm() * after.norm())
    assert float(cos) == pytest.approx(1.0, abs=1e-6)
    if float(before.norm()) * (1 + 1e-5) + 1e-5 < max_norm:  # nothing to clip: unchanged
        assert torch.equal(before, after)


# -- state ------------------------------------------------------------------------------------
def test_state_before_use_after_reset_and_with_no_gradients():
    clip = clip_by_global_norm(1.0)
    assert int(clip.state.steps) == 0 and math.isnan(float(clip.state.last_norm))
    w = nn.Parameter(torch.ones(3, device=DEVICE))
    assert clip([w]) is None and int(clip.state.steps) == 0  # grad None: skipped entirely
    w.grad = torch.full((3,), 10.0, device=DEVICE)
    clip([w])
    assert int(clip.state.clipped) == 1 and clip.state.steps.device.type == DEVICE.type
    clip.reset()
    assert int(clip.state.steps) == 0 and int(clip.state.clipped) == 0
    assert clip.state.steps.device.type == DEVICE.type


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: clip_by_global_norm(-1.0), "finite number > 0"),
        (lambda: clip_by_global_norm(0.0), "finite number > 0"),
        (lambda: clip_by_global_norm(float("nan")), "finite number > 0"),
        (lambda: clip_by_global_norm(float("inf")), "finite number > 0"),
        (lambda: clip_by_global_norm(torch.tensor(1.0)), "pass a number"),
        (lambda: clip_by_global_norm(1.0, norm_type=0), "norm_type must be a number > 0"),
        (lambda: clip_by_global_norm(1.0, eps=-1), "eps must be"),
        (lambda: clip_by_value(0), "finite number > 0"),
        (lambda: adaptive_clip(clipping=-0.1), "finite number > 0"),
        (lambda: autoclip(percentile=0), r"in \(0, 100\]"),
        (lambda: autoclip(percentile=100.5), r"in \(0, 100\]"),
        (lambda: autoclip(percentile=float("nan")), r"in \(0, 100\]"),
        (lambda: autoclip(history=0), "positive int"),
        (lambda: chain(clip_by_global_norm), "not a gradient transform"),
        (lambda: chain(type(skip_nonfinite())), "instantiate it"),
    ],
)
def test_bad_arguments_raise_usage_errors_that_say_what_to_pass(make, match):
    with pytest.raises(GradvetUsageError, match=match):
        make()


def test_bad_params_and_norms_raise_usage_errors():
    clip = clip_by_global_norm(1.0)
    with pytest.raises(GradvetUsageError, match="not a tensor"):
        clip([1.0, 2.0])
    with pytest.raises(GradvetUsageError, match=r"model\.parameters\(\)"):
        clip(nn.Linear(2, 2))
    with pytest.raises(GradvetUsageError, match="iterable"):
        clip(3)
    params = make_params()
    with pytest.raises(GradvetUsageError, match="aligned with params"):
        clip(params, norms=[p.grad.norm() for p in params][:2])
    with pytest.raises(GradvetUsageError, match="0-d tensor"):
        clip(params, norms=[1.0] * len(params))
    with pytest.raises(GradvetUsageError, match="norm_type=2.0"):
        clip_by_global_norm(1.0, norm_type=1.0)(params, norms=[p.grad.norm() for p in params])
    assert int(clip.state.steps) == 0


# -- docs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["_transform_base", "_clip", "_agc", "_autoclip", "_finite", "_chain"])
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"gradvet.remedies.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


# -- CUDA: no host sync -----------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "make",
    [
        lambda: clip_by_global_norm(0.5),
        lambda: clip_by_value(0.5),
        lambda: adaptive_clip(0.01),
        lambda: skip_nonfinite(),
        lambda: autoclip(10.0, history=8),
    ],
    ids=["global_norm", "value", "agc", "skip_nonfinite", "autoclip"],
)
def test_cuda_transforms_do_not_sync(make):
    dev = torch.device("cuda")
    params = make_params(seed=0, scale=3.0, device=dev)
    ref = twin(params)
    t = make()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        t(params)  # the first call builds the state on the device, later ones update it
        first = [p.grad.clone() for p in params]
        t(params)
        t(params, norms=[torch.linalg.vector_norm(p.grad) for p in params])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(t.state.steps) == 3
    if isinstance(t, ClipByGlobalNorm):
        nn.utils.clip_grad_norm_(ref, 0.5)
        for g, q in zip(first, ref):
            torch.testing.assert_close(g, q.grad)
