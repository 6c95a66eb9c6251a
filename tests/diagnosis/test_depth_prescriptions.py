"""A deep plain stack's vanishing gradients also prescribe a shallower net and layer-wise pretraining
(issue 16), after the remedies that keep the depth; a residual, normalised or short net does not."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import gradvet
from gradvet.data import digits


def _sigmoid_mlp(depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth - 1):
        layers += [nn.Linear(64 if i == 0 else 32, 32), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(32, 10))


def _batch():
    d = digits()
    return d.x_train[:256], d.y_train[:256]


def test_a_deep_plain_sigmoid_stack_gets_both_after_the_others() -> None:
    torch.manual_seed(0)
    f = gradvet.check(_sigmoid_mlp(10), _batch(), F.cross_entropy).finding("vanishing_gradients")
    ids = [r.id for r in f.remedies]
    assert ids[-2:] == ["arch:shallower", "pretrain:layerwise"]
    assert ids[0] == "activation:relu"
    shallower = f.remedies[-2]
    assert "10 layers" in shallower.explanation and "apply_remedy('arch:shallower'" in shallower.snippet


def test_a_normalised_stack_does_not_get_them() -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(9):
        layers += [nn.Linear(64 if i == 0 else 32, 32), nn.BatchNorm1d(32), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(32, 10))
    model[0].weight.data.mul_(1e-3)
    f = gradvet.check(model, _batch(), F.cross_entropy).finding("vanishing_gradients")
    assert f is None or not {"arch:shallower", "pretrain:layerwise"} & {r.id for r in f.remedies}
