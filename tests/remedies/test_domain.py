"""``guard:domain``: DomainGuard against plain ``torch.clamp``, and guard_domain on models
whose NaN/Inf is born inside an operation (log of a negative number, exp overflow)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradvet
from gradvet.errors import GradvetUsageError
from gradvet.remedies import (
    DomainGuard,
    RemedyNotApplicable,
    applicable,
    apply_remedy,
    guard_domain,
)
from gradvet.remedies._domain import LOW_FRACTION
from gradvet.zoo import InfWeightNet, NanNet, digits

torch.set_num_threads(1)
C32 = math.log(torch.finfo(torch.float32).max) / 2  # the overflow bound's scale for float32


class Exp(nn.Module):
    def __init__(self, k: float = 1000.0) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.k * x)


class Cosh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cosh(1000 * x)


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)


class InplaceLog(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.log_()


class AddNan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + float("nan")


class RootLog(nn.Module):
    """The log sits in the root's own forward: no submodule to wrap."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.fc(x)).sum(1)


class TwoBranches(nn.Module):
    """``a(fc1(x)) + b(fc2(x))``: two places where a NaN can be born independently."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.fc1, self.fc2, self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8), a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(self.fc1(x)) + self.b(self.fc2(x))


def head(op: nn.Module, width: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(width, width), op, nn.Linear(width, 3))


def batch(n: int = 32, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, 3, (n,), generator=g)


def all_finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


# -- DomainGuard ----------------------------------------------------------------------
@pytest.mark.parametrize("low,high", [(0.1, None), (None, 0.5), (-0.3, 0.4), (0, 2)])
def test_guard_is_inner_of_clamped_input(low, high) -> None:
    x = torch.randn(16, 5, dtype=torch.float64, requires_grad=True)
    out = DomainGuard(Log(), low, high)(x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = torch.log(ref_x.clamp(low, high))
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)  # bit for bit, NaN where log(<0)
    out.nan_to_num().sum().backward()
    ref.nan_to_num().sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=0, atol=0, equal_nan=True)


def test_guard_clamps_only_floating_positional_args() -> None:
    class Probe(nn.Module):
        def forward(self, x, idx, scale, *, bias):
            return x[idx] * scale + bias

    guard = DomainGuard(Probe(), low=0.0, high=1.0)
    x, idx, bias = torch.tensor([-2.0, 0.5, 3.0]), torch.tensor([2, 0]), torch.tensor(-5.0)
    out = guard(x, idx, 10, bias=bias)
    assert torch.equal(out, x.clamp(0, 1)[idx] * 10 + bias)  # the int tensor, the int and the kwarg pass as they are


def test_guard_repr_state_dict_and_bad_arguments() -> None:
    guard = DomainGuard(nn.Linear(2, 2), low=1e-3)
    assert "low=0.001, high=None" in repr(guard) and "(inner): Linear" in repr(guard)
    assert set(nn.Sequential(guard).state_dict()) == {"0.inner.weight", "0.inner.bias"}
    with pytest.raises(TypeError, match="nn.Module"):
        DomainGuard(torch.log, low=0.0)  # type: ignore[arg-type]
    for kw, msg in [({}, "needs a bound"), ({"low": 1.0, "high": 0.0}, "low <= high"),
                    ({"low": float("nan")}, "finite number"), ({"high": True}, "finite number")]:
        with pytest.raises(ValueError, match=msg):
            DomainGuard(Log(), **kw)


# -- guard_domain on NanNet -----------------------------------------------------------
def test_nannet_wraps_exactly_log_with_the_measured_bound() -> None:
    torch.manual_seed(0)
    model, (x, y) = NanNet(), digits(64)
    fc1, fc2, fc3, log = model.fc1, model.fc2, model.fc3, model.log
    result = apply_remedy("guard:domain", model, batch=(x, y))
    treated = result.model
    assert [(c.module, c.what) for c in result.changes] == [("log", "wrap")]
    assert isinstance(treated.log, DomainGuard) and type(treated.log.inner).__name__ == "LogLayer"
    assert [type(m).__name__ for m in (treated.fc1, treated.fc2, treated.fc3)] == ["Linear"] * 3
    assert model.log is log and model.fc1 is fc1 and model.fc2 is fc2 and model.fc3 is fc3  # original untouched
    # plain-PyTorch reference: the log's input, its non-finite count, the bound 1/20 of its RMS
    with torch.no_grad():
        h = fc2(torch.relu(fc1(x)))
    n_bad = int((~torch.isfinite(torch.log(h))).sum())
    assert n_bad > 0 and f"{n_bad} of {h.numel()} outputs non-finite" in result.changes[0].old
    assert treated.log.high is None
    assert treated.log.low == pytest.approx(LOW_FRACTION * float(h.double().pow(2).mean().sqrt()), rel=1e-6)
    out = treated(x)
    with torch.no_grad():
        ref = fc3(torch.log(h.clamp(treated.log.low, None)))
    torch.testing.assert_close(out.detach(), ref, rtol=0, atol=0)
    F.cross_entropy(out, y).backward()
    assert all(p.grad is not None and all_finite(p.grad) for p in treated.parameters())


def test_idempotent_and_applicable() -> None:
    torch.manual_seed(0)
    model, b = NanNet(), digits(64)
    ok, why = applicable("guard:domain", model, batch=b)
    assert ok and "log: wrap" in why and not isinstance(model.log, DomainGuard)
    treated = apply_remedy("guard:domain", model, batch=b).model
    again = apply_remedy("guard:domain", treated, batch=b)
    assert not again and again.changes == []
    assert applicable("guard:domain", treated, batch=b) == (False, "guard:domain was applied already: nothing would "
                                                                   "change")


def test_float64_is_kept() -> None:
    torch.manual_seed(0)
    model = NanNet().double()
    x, y = digits(64)
    treated = apply_remedy("guard:domain", model, batch=(x.double(), y)).model
    out = treated(x.double())
    assert out.dtype == torch.float64 and all_finite(out)
    assert all(p.dtype == torch.float64 for p in treated.parameters())


# -- overflow -------------------------------------------------------------------------
def test_exp_overflow_gets_the_high_bound() -> None:
    model, (x, y) = head(Exp(1000.0)), batch()
    assert not all_finite(model(x))
    changes = guard_domain(model, (x, y))
    guard = model[1]
    assert [c.module for c in changes] == ["1"] and isinstance(guard, DomainGuard)
    assert guard.low is None and guard.high == pytest.approx(C32 * 1e-3)
    # the first bound of the ladder that works: 10x looser overflows on this batch
    with torch.no_grad():
        h = model[0](x)
    assert all_finite(torch.exp(1000 * h.clamp(max=guard.high)))
    assert not all_finite(torch.exp(1000 * h.clamp(max=10 * guard.high)))
    assert all_finite(model(x))


def test_overflow_on_both_sides_gets_both_bounds() -> None:
    model, b = head(Cosh()), batch()
    guard_domain(model, b)
    assert (model[1].low, model[1].high) == (pytest.approx(-C32 * 1e-3), pytest.approx(C32 * 1e-3))
    assert all_finite(model(b[0]))


def test_a_looser_earlier_guard_is_tightened_not_nested() -> None:
    torch.manual_seed(0)
    model, b = nn.Sequential(nn.Linear(8, 8), DomainGuard(Exp(1000.0), high=10.0)), batch()
    assert not all_finite(model(b[0]))
    changes = guard_domain(model, b)
    assert [(c.module, c.new) for c in changes] == [("1", "DomainGuard(low=None, high=0.0444) (outputs finite)")]
    assert isinstance(model[1].inner, Exp) and all_finite(model(b[0]))


def test_shared_module_is_guarded_under_every_name() -> None:
    torch.manual_seed(0)
    log = Log()
    model, b = TwoBranches(log, log), batch()
    changes = guard_domain(model, b)
    assert [c.module for c in changes] == ["a"]
    assert model.a is model.b and isinstance(model.a, DomainGuard)
    assert all_finite(model(b[0]))


def test_module_that_edits_its_input_in_place() -> None:
    model, b = head(InplaceLog()), batch()
    guard_domain(model, b)
    assert isinstance(model[1], DomainGuard) and model[1].low > 0 and all_finite(model(b[0]))


def test_probe_leaves_no_hooks_buffers_or_rng_changed() -> None:
    torch.manual_seed(0)
    model, b = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), Log(), nn.Linear(8, 3)), batch()
    stats = {k: v.clone() for k, v in model.named_buffers()}
    rng = torch.get_rng_state()
    guard_domain(model, b)
    assert all(torch.equal(v, dict(model.named_buffers())[k.replace("3.", "3.inner.")]) for k, v in stats.items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert model.training and model[3].training


# -- refusals -------------------------------------------------------------------------
def test_refusals_say_what_to_do() -> None:
    torch.manual_seed(0)
    with pytest.raises(RemedyNotApplicable, match=r"pass batch=\(inputs, targets\)"):
        apply_remedy("guard:domain", NanNet())
    with pytest.raises(RemedyNotApplicable, match="every forward output .* is finite"):
        apply_remedy("guard:domain", head(nn.ReLU()), batch=batch())
    with pytest.raises(RemedyNotApplicable, match=r"RootLog.forward itself.*clamp_min"):
        apply_remedy("guard:domain", RootLog(), batch=batch())
    with pytest.raises(RemedyNotApplicable, match=r"fc2.*init:reset_nonfinite"):
        apply_remedy("guard:domain", InfWeightNet(), batch=digits(32))
    with pytest.raises(RemedyNotApplicable, match="no clamp of '1'"):
        apply_remedy("guard:domain", head(AddNan()), batch=batch())
    for bad in (-0.1, 1.0, "0.1", True):
        with pytest.raises(GradvetUsageError, match="low_fraction"):
            guard_domain(head(Log()), batch(), low_fraction=bad)  # type: ignore[arg-type]


def test_refusal_edits_nothing() -> None:
    """A model with one guardable and one unguardable birthplace is left exactly as it was."""
    torch.manual_seed(0)
    model = TwoBranches(Log(), AddNan())
    text = repr(model)
    with pytest.raises(RemedyNotApplicable, match="no clamp of 'b'"):
        guard_domain(model, batch())
    assert repr(model) == text


def test_low_fraction_zero_is_the_clamp_probs_floor() -> None:
    model = head(Log())
    guard_domain(model, batch(), low_fraction=0.0)
    assert model[1].low == torch.finfo(torch.float32).eps


# -- diagnosis and treatment ----------------------------------------------------------
def test_diagnosis_prescribes_guard_domain_only_for_an_op() -> None:
    torch.manual_seed(0)
    f = gradvet.check(NanNet(), digits(64), F.cross_entropy).finding("nonfinite_gradients")
    assert f is not None and f.remedies[0].id == "guard:domain" and "'log'" in f.remedies[0].explanation
    assert "apply_remedy('guard:domain', model, batch=batch)" in f.remedies[0].snippet
    assert [r.id for r in f.remedies[1:]] == ["skip_nonfinite", "clip:norm", "lr:lower"]
    w = gradvet.check(InfWeightNet(), digits(64), F.cross_entropy).finding("nonfinite_gradients")
    assert w is not None and "guard:domain" not in [r.id for r in w.remedies]


def sgd_losses(model: nn.Module, b, steps: int = 100) -> list[float]:
    torch.manual_seed(0)
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    x, y = b
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_treat_heals_nannet_with_guard_domain_and_it_trains() -> None:
    torch.manual_seed(0)
    model, b = NanNet(), digits(64)
    result = gradvet.treat(model, b, F.cross_entropy)
    assert "nonfinite_gradients" in result.before.kinds()
    assert result.healthy and "guard:domain" in [r.id for r in result.applied]
    again = gradvet.check(result.model, b, F.cross_entropy)
    assert again.healthy and again.kinds() == result.after.kinds()
    losses = sgd_losses(result.model, b)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
