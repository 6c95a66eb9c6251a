"""Lab building blocks: model builders, gate-bias init, and the clipping transforms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradvet.lab._models import MLP, SeqRegressor


def test_mlp_names_depth_and_options() -> None:
    model = MLP(5, "sigmoid", norm=True, skip=True)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert names == ["blocks.0.fc", "blocks.1.fc", "blocks.2.fc", "blocks.3.fc", "head"]
    assert all(b.norm is not None and b.skip for b in model.blocks)
    assert model(torch.randn(4, 64)).shape == (4, 10)


def test_he_init_std_and_scale_and_bias() -> None:
    torch.manual_seed(0)
    model = MLP(3, "relu", "he", width=512, d_in=512, scale=2.0, bias=-3.0)
    w = model.blocks[1].fc.weight
    assert float(w.detach().std()) == pytest.approx(2.0 * math.sqrt(2 / 512), rel=0.03)
    assert torch.all(model.blocks[0].fc.bias == -3.0)


@pytest.mark.parametrize("bad", [{"depth": 1, "act": "relu"}, {"depth": 3, "act": "swish"},
                                 {"depth": 3, "act": "relu", "init": "lecun"}])
def test_mlp_rejects_bad_arguments(bad) -> None:
    with pytest.raises(ValueError, match="depth|activation|init"):
        MLP(**bad)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_gate_bias_sets_the_memory_slice(cell: str) -> None:
    model = SeqRegressor(cell, hidden=8, gate_bias=1.0)
    total = model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0
    assert torch.allclose(total[8:16], torch.ones(8))
    with pytest.raises(ValueError, match="LSTM"):
        SeqRegressor("RNN", hidden=8, gate_bias=1.0)
