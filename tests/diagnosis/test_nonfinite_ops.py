"""A NaN/Inf made by a functional op in ``forward()`` is named as that op, between the modules around
it, with its line and why its input left the domain (issue 12, case 1). Each case runs the forward
pass op by op in plain PyTorch as the reference: the first op whose output is non-finite, and the
count of out-of-domain values that made it.

Before: gradvet.check blamed the next module ("the NaN/Inf is born at 'l4': its forward output is
non-finite"), whose input was already NaN.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet
from gradvet._nanhunt import find_origin


def _line_of(fn, text: str) -> int:
    src, start = inspect.getsourcelines(fn)
    return start + next(i for i, ln in enumerate(src) if text in ln)


class SqrtNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3, self.l4 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.l2(torch.relu(self.l1(x))))
        h = torch.sqrt(self.l3(h))
        return self.l4(h)

    def reference(self, x):
        """The same forward op by op: (name of the first non-finite op, out-of-domain count)."""
        h = torch.relu(self.l2(torch.relu(self.l1(x))))
        z = self.l3(h)
        assert torch.isfinite(z).all()
        assert not torch.isfinite(torch.sqrt(z)).all()
        return "torch.sqrt", int((z < 0).sum())


class LogNet(SqrtNet):
    def forward(self, x):
        h = torch.relu(self.l2(torch.relu(self.l1(x))))
        return self.l4(self.l3(h).log())

    def reference(self, x):
        z = self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))
        assert torch.isfinite(z).all() and not torch.isfinite(z.log()).all()
        return "Tensor.log", int((z < 0).sum())


class DivNet(SqrtNet):
    def forward(self, x):
        h = self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))
        d = torch.relu(h).sum(dim=1, keepdim=True)  # 0 for rows with no positive unit
        return self.l4(h / d)

    def reference(self, x):
        h = self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))
        r = torch.relu(h)
        d = r.sum(dim=1, keepdim=True)
        assert torch.isfinite(r).all() and torch.isfinite(d).all() and not torch.isfinite(h / d).all()
        return "Tensor.__truediv__", int((d == 0).sum())


class ExpNet(SqrtNet):
    def forward(self, x):
        h = self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))
        return self.l4(torch.exp(h * 400.0))

    def reference(self, x):
        h = self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))
        z = h * 400.0
        assert torch.isfinite(z).all() and not torch.isfinite(torch.exp(z)).all()
        return "torch.exp", int((z > math.log(torch.finfo(torch.float32).max)).sum())


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)


@pytest.mark.parametrize("cls, kind", [(SqrtNet, "sqrt"), (LogNet, "log"), (DivNet, "div"), (ExpNet, "exp")])
def test_check_names_the_functional_op_between_the_modules(cls, kind) -> None:
    torch.manual_seed(1)
    model = cls()
    if cls is DivNet:  # make some rows all-negative after l3, so that their divisor is exactly 0
        with torch.no_grad():
            model.l3.bias.fill_(-3.0)
    x, y = _batch()
    with torch.no_grad():
        op, count = model.reference(x)
    assert count > 0
    report = gradvet.check(model, (x, y), F.cross_entropy)
    (f,) = [f for f in report.findings if f.kind == "nonfinite_gradients"]
    assert f.severity == "error"
    assert f.data["between"] == ["l3", "l4"] and f.data["born_at"] is None
    assert f.layers == ("l3", "l4")
    assert f.data["op"] == op or (kind == "div" and f.data["op"] in ("Tensor.div", "Tensor.__truediv__"))
    line = _line_of(cls.forward, {"sqrt": "torch.sqrt", "log": ".log()", "div": "h / d", "exp": "torch.exp"}[kind])
    assert f.data["where"] == f"test_nonfinite_ops.py:{line} in forward"
    assert f"between 'l3' and 'l4': `{f.data['op']}`" in f.evidence
    assert f"{count} of" in f.evidence  # the reference's out-of-domain count
    assert "born at 'l4'" not in f.evidence
    assert f.remedies[0].id == "guard:domain" and f.remedies[0].snippet.splitlines()[0] == f"# {f.data['where']}"
    assert {"sqrt": "clamp_min", "log": "clamp_min", "div": "clamp_min", "exp": "clamp_max"}[kind] in f.remedies[0].snippet


class Overflow(nn.Module):
    """A leaf layer that overflows: the op is the layer's own (F.linear), inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        with torch.no_grad():
            self.b.weight.fill_(1e38)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_an_overflowing_layer_is_named_inside_itself() -> None:
    torch.manual_seed(0)
    model = Overflow()
    x, y = _batch()
    with torch.no_grad():
        h = torch.relu(model.a(x))
        assert torch.isfinite(h).all() and not torch.isfinite(model.b(h)).all()  # reference: b's own linear
    report = gradvet.check(model, (x, y), F.cross_entropy)
    (f,) = [f for f in report.findings if f.kind == "nonfinite_gradients"]
    assert f.data["born_at"] == "b" and f.layers == ("b",)
    assert "inside 'b': `torch.nn.functional.linear`" in f.evidence and "overflows float32" in f.evidence


def test_nan_in_the_data_is_the_data_not_an_op() -> None:
    torch.manual_seed(0)
    model = SqrtNet()
    with torch.no_grad():
        model.l3.bias.fill_(5.0)  # sqrt stays in its domain
    x, y = _batch()
    x[3, 2] = float("nan")
    assert find_origin(model, lambda: model(x)) is None  # the first non-finite op had a non-finite input
    report = gradvet.check(model, (x, y), F.cross_entropy)
    first = report.findings[0]
    assert "the batch at step 0 holds 1 NaN/Inf value(s) in its inputs" in first.evidence
    assert "op" not in first.data and first.remedies[0].id == "data:filter_nonfinite"


def test_healthy_model_runs_no_hunt(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr("gradvet._nanhunt.find_origin", lambda *a, **k: calls.append(1))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    report = gradvet.check(model, _batch(), F.cross_entropy)
    assert report.healthy and not calls


def test_the_hunt_leaves_the_model_and_rng_as_check_found_them() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 3))
    model[3].weight.data.mul_(1e38)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    report = gradvet.check(model, _batch(), F.cross_entropy)
    assert any(f.kind == "nonfinite_gradients" for f in report.findings)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
