"""A trunk that gets no gradient at all is vanished, not unread (gradvet.diagnosis._trunk).

transformers' EfficientNet draws its BatchNorm gains from N(0, 0.02): its activations fall to ~1e-33
before the classifier, ``||dL/dx * x||`` underflows to 0 at every trunk point (the loss-side end
included) and ``||dL/dx||`` to 0 over the input-side points (float32 squares of elements below ~1e-22).
Before, the trunk profile had no reference and ``check`` said nothing. Zeros by design (a zero-init
layer on the trunk, a zero-init branch end) stay silent.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradvet


class _Chain(nn.Module):
    """inp -> one residual block (the branch makes the graph a trunk) -> 4 Linear + tanh -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.chain = nn.ModuleList(nn.Linear(16, 16, bias=False) for _ in range(4))  # a bias would cut the stream
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        for layer in self.chain:
            x = torch.tanh(layer(x))
        return self.head(x)


def _chain(scale: float) -> nn.Module:
    """Chain layers 1 to 3 with weights times ``scale``."""
    torch.manual_seed(0)
    model = _Chain()
    with torch.no_grad():
        for layer in model.chain[1:]:
            layer.weight.mul_(scale)
    return model


_BATCH = (torch.randn(32, 6, generator=torch.Generator().manual_seed(1)),
          torch.randint(0, 4, (32,), generator=torch.Generator().manual_seed(2)))


def _input_grads(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Plain autograd: dL/dx of the named layers' inputs."""
    seen: dict[str, torch.Tensor] = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, a[0]) or a[0].retain_grad())
             for n in names]
    F.cross_entropy(model(_BATCH[0]), _BATCH[1]).backward()
    for h in hooks:
        h.remove()
    return {n: seen[n].grad for n in names}


def test_trunk_points_with_no_gradient_are_vanished() -> None:
    # three trunk layers scaled by 1e-11 (not zero): the activations entering the head are ~1e-33 and
    # the input-side gradients ~1e-36, whose float32 squares underflow
    model = _chain(1e-11)
    seen: dict[str, torch.Tensor] = {}
    h = model.head.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach()))
    grads = _input_grads(model, ["fc1", "chain.0", "head"])
    h.remove()
    assert float(seen["x"].double().std()) < 1e-20
    assert float(grads["chain.0"].double().norm()) < 1e-30 * float(grads["head"].double().norm())
    model.zero_grad()
    # what gradvet records: ||dL/dx * x|| is 0 at every trunk point, the loss-side end included, so the
    # scale-free reading has no reference; ||dL/dx|| is 0 at the input side and not at the head
    with gradvet.Monitor(model, profile="full") as mon:
        loss = F.cross_entropy(model(_BATCH[0]), _BATCH[1])
        loss.backward()
        mon.step(loss)
    run = mon.load()
    trunk = {layer["name"]: i for i, layer in enumerate(run.layers) if "trunk" in (layer.get("graph") or {})}
    assert set(trunk) == {"fc1", "chain.0", "chain.1", "chain.2", "chain.3", "head"}
    assert all(run.get("graph/in_sens").values[0, i] == 0.0 for i in trunk.values())
    in_grad = run.get("graph/in_grad").values[0]
    assert in_grad[trunk["fc1"]] == 0.0 and in_grad[trunk["head"]] > 0

    model.zero_grad()
    report = gradvet.check(model, _BATCH, F.cross_entropy)
    f = report.finding("vanishing_gradients")
    assert f is not None and f.severity == "error", report.findings
    assert f.layers[:3] == ("inp", "fc1", "chain.0")
    assert "is 0 in float32" in f.evidence and "'head'" in f.evidence
    assert f.data["no_gradient"][:2] == ["fc1", "chain.0"]


def test_no_gradient_behind_a_zero_layer_on_the_trunk_is_blocked_not_vanished() -> None:
    # the same layers exactly zero: blocked by design until their first step, like a zero-init head
    model = _chain(0.0)
    assert float(_input_grads(model, ["chain.0"])["chain.0"].abs().max()) == 0.0
    model.zero_grad()
    report = gradvet.check(model, _BATCH, F.cross_entropy)
    assert not [f for f in report.findings if f.kind == "vanishing_gradients" and f.severity != "info"], \
        report.findings


def test_zero_init_branch_end_leaves_the_trunk_alone() -> None:
    # a zero-init residual branch end (Goyal et al., 2017): the branch gets no gradient, the trunk does
    model = _chain(1.0)
    with torch.no_grad():
        model.fc2.weight.zero_()
        model.fc2.bias.zero_()
    assert float(_input_grads(model, ["fc1"])["fc1"].norm()) > 0  # the trunk point feeding the branch
    model.zero_grad()
    report = gradvet.check(model, _BATCH, F.cross_entropy)
    assert report.healthy, report.findings


def test_transformers_efficientnet_at_init_is_vanishing() -> None:
    pytest.importorskip("transformers")
    from gradvet.corpus import call, cases

    case = next(c for c in cases() if c.id == "transformers/efficientnet")
    model, (inputs, targets), loss_fn = case.build(0)
    # plain PyTorch: the activations leaving top_conv are ~1e-33, and the stem's output gets no gradient
    out: dict[str, torch.Tensor] = {}
    hooks = [model.efficientnet.encoder.top_conv.register_forward_hook(
                 lambda m, a, o: out.__setitem__("top", o.detach())),
             model.efficientnet.embeddings.convolution.register_forward_hook(
                 lambda m, a, o: out.__setitem__("stem", o) or o.retain_grad())]
    model.train()
    loss = loss_fn(call(model, inputs), targets)
    for h in hooks:
        h.remove()
    assert float(out["top"].double().std()) < 1e-20
    loss.backward()
    assert float(out["stem"].grad.double().abs().max()) < 1e-30  # subnormal: its float32 square is 0
    never = [n for n, p in model.named_parameters() if float(p.grad.abs().max()) == 0.0]
    assert len(never) >= 20  # 28 of 96 at batch 2: biases and SE layers of the first blocks
    model.zero_grad()

    report = gradvet.check(model, (inputs, targets), loss_fn)
    f = report.finding("vanishing_gradients")
    assert f is not None and f.severity in ("warning", "error"), report.findings
    assert f.layers[0] == "efficientnet.embeddings.convolution"
    assert "is 0 in float32" in f.evidence and "classifier" in f.evidence
    assert f.causes[0].id == "init_scale" and "gains" in f.causes[0].reason
