"""Layer-wise pretraining and reduced depth, measured against a plain PyTorch recomputation of the
gradient reaching the first layer, and against training from scratch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradvet.data import digits
from gradvet.lab._models import MLP
from gradvet.remedies import (
    RemedyNotApplicable,
    applicable,
    apply_remedy,
    pretrain_layerwise,
    shallower,
)

torch.set_num_threads(1)


def _sigmoid_stack(depth: int = 10, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def first_layer_signal(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """RMS of dL/d(first Linear's output), by plain autograd."""
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    seen: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: object, out: torch.Tensor) -> None:
        out.retain_grad()
        seen.append(out)

    handle = first.register_forward_hook(keep)
    try:
        nn.functional.cross_entropy(model(x), y).backward()
    finally:
        handle.remove()
    model.zero_grad(set_to_none=True)
    return float(seen[0].grad.pow(2).mean().sqrt())  # type: ignore[union-attr]


def _fit(model: nn.Module, steps: int = 300, lr: float = 0.02) -> tuple[float, float]:
    """The lab's SGD (momentum 0.9, batch 128, seeded draws): ``(mean loss of the last 10 steps, test accuracy)``."""
    d, gen = digits(), torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        x, y = d.batch(128, gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        acc = float((model(d.x_test).argmax(1) == d.y_test).float().mean())
    return sum(losses[-10:]) / 10, acc


@pytest.mark.parametrize("method", ["autoencoder", "aux_head"])
def test_pretraining_brings_gradient_to_the_first_layer_and_learns(method: str) -> None:
    d = digits()
    batch = (d.x_train[:512], d.y_train[:512])
    scratch, pre = _sigmoid_stack(), _sigmoid_stack()
    changes = pretrain_layerwise(pre, d.x_train, d.y_train, method=method)
    assert [c.module for c in changes] == [str(2 * i) for i in range(9)]  # every block but the head
    assert torch.equal(pre[-1].weight, scratch[-1].weight)  # the head is left to fine-tuning
    s0, s1 = first_layer_signal(scratch, *batch), first_layer_signal(pre, *batch)
    assert s1 > 1e4 * s0
    (loss0, acc0), (loss1, acc1) = _fit(scratch), _fit(pre)
    assert loss0 > 2.2 and acc0 < 0.2  # from scratch: chance (ln 10 = 2.30)
    assert loss1 < 0.5 and acc1 > 0.85


def test_pretraining_is_seeded_idempotent_and_leaves_the_global_rng() -> None:
    d = digits()
    a, b = _sigmoid_stack(4), _sigmoid_stack(4)
    state = torch.get_rng_state()
    pretrain_layerwise(a, d.x_train, steps=5)
    assert torch.equal(torch.get_rng_state(), state)
    pretrain_layerwise(b, d.x_train, steps=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert pretrain_layerwise(a, d.x_train, steps=5) == []
    assert applicable("pretrain:layerwise", a, (d.x_train, d.y_train))[0] is False
    assert len(pretrain_layerwise(a, d.x_train, steps=5, force=True)) == 3


def test_pretraining_a_modulelist_of_blocks_and_bad_input() -> None:
    d = digits()
    model = MLP(4, act="sigmoid")
    changes = apply_remedy("pretrain:layerwise", model, batch=(d.x_train, d.y_train), stack="blocks", steps=5)
    assert [c.module for c in changes.changes] == ["blocks.0", "blocks.1", "blocks.2"]
    with pytest.raises(RemedyNotApplicable, match="stack='blocks'"):
        pretrain_layerwise(model, d.x_train)
    with pytest.raises(ValueError, match="integer class targets"):
        pretrain_layerwise(_sigmoid_stack(3), d.x_train, method="aux_head")
    with pytest.raises(ValueError, match="method must be one of"):
        pretrain_layerwise(_sigmoid_stack(3), d.x_train, method="rbm")
    with pytest.raises(RemedyNotApplicable, match="batch=\\(inputs, targets\\)"):
        apply_remedy("pretrain:layerwise", _sigmoid_stack(3))


def test_shallower_keeps_the_outer_layers_and_its_forward_is_theirs() -> None:
    deep = _sigmoid_stack(10)
    kept = [deep[0], deep[1], deep[-3], deep[-2], deep[-1]]
    changes = shallower(deep, depth=3)
    assert len(changes) == 7 and all(c.what == "remove" for c in changes)
    assert list(deep) == kept  # first block, last block, head: the same modules, weights untouched
    x = torch.randn(5, 64)
    ref = x
    for m in kept:
        ref = m(ref)
    torch.testing.assert_close(deep(x), ref)
    assert shallower(deep, depth=3) == [] and shallower(deep) == []


def test_shallower_net_gets_the_gradient_and_learns_where_the_deep_one_does_not() -> None:
    d = digits()
    batch = (d.x_train[:512], d.y_train[:512])
    deep = _sigmoid_stack(10)
    short = apply_remedy("arch:shallower", deep, depth=3).model
    assert sum(isinstance(m, nn.Linear) for m in short) == 3
    assert first_layer_signal(short, *batch) > 1e4 * first_layer_signal(deep, *batch)
    (deep_loss, _), (short_loss, short_acc) = _fit(deep), _fit(short, lr=0.1)
    assert deep_loss > 2.2 and short_loss < 0.5 and short_acc > 0.85
    assert not apply_remedy("arch:shallower", short)  # the default depth leaves a shortened stack alone


def test_shallower_refuses_what_it_cannot_shorten() -> None:
    with pytest.raises(RemedyNotApplicable, match="at least 3"):
        shallower(_sigmoid_stack(2))
    tapered = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 10))
    with pytest.raises(RemedyNotApplicable, match="same width"):
        shallower(tapered, depth=2)
    with pytest.raises(ValueError, match="depth must be an int >= 2"):
        shallower(_sigmoid_stack(5), depth=1)
    assert apply_remedy("arch:shallower", MLP(10, act="sigmoid"), stack="blocks", depth=3).changes
