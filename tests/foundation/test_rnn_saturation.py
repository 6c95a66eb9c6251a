"""Saturation and dead units of plain RNN layers, read off their output, against plain PyTorch.

``nn.RNN``'s sequence output (of its last layer) is ``tanh(...)`` (or ``relu(...)``) of the step's
pre-activation, so the fraction of outputs where ``tanh' = 1 - h^2`` is below the threshold is recorded
as for an ``nn.Tanh`` module. Each expected value below is recomputed from the output of a plain copy
of the model, with no gradvet code involved.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from ._reference import assert_close, dead_fraction, layer_value, monitored_step, twin


def _tanh_sat(y: Tensor, t: float) -> float:
    return (1 - y.double().square() < t).double().mean().item()


def _loss(out):
    y = out[0]
    y = y.data if isinstance(y, nn.utils.rnn.PackedSequence) else y
    return y.square().mean()


def _plain_output(model: nn.Module, x) -> Tensor:
    with torch.no_grad():
        y = twin(model)(x)[0]
    return y.data if isinstance(y, nn.utils.rnn.PackedSequence) else y


@pytest.mark.parametrize("threshold", [0.1, 0.3])
@pytest.mark.parametrize("batch_first", [False, True], ids=["TBF", "BTF"])
def test_tanh_rnn_sat_frac_is_the_fraction_of_outputs_where_tanh_prime_is_small(device, batch_first, threshold):
    rnn = nn.RNN(6, 24, batch_first=batch_first).to(device)
    with torch.no_grad():  # rows from linear to saturated: a mix, so the case discriminates
        rnn.weight_ih_l0.mul_(torch.linspace(0.05, 6.0, 24, device=device)[:, None])
    x = torch.randn((5, 9, 6) if batch_first else (9, 5, 6), device=device) * 2
    expected = _tanh_sat(_plain_output(rnn, x), threshold)
    assert 0.1 < expected < 0.9
    run, _ = monitored_step(rnn, x, _loss, saturation_threshold=threshold)
    layer = run.layers[0]
    assert layer["role"] == "recurrent" and layer["activation"] == "tanh"
    assert_close(layer_value(run, "sat_frac", ""), expected, rtol=1e-6)
    assert layer_value(run, "dead_frac", "") == 0.0  # tanh units cannot die


def test_two_layer_rnn_reads_its_last_layers_output_only(device):
    """The module's output is its last layer's: layer 0 (saturated by large inputs) is not seen."""
    rnn = nn.RNN(4, 16, num_layers=2).to(device)
    with torch.no_grad():
        rnn.weight_ih_l1.mul_(3.0)  # layer 1 reads layer 0's outputs, in [-1, 1]: partly saturated
    x = torch.randn(12, 3, 4, device=device) * 30
    y1 = _plain_output(rnn, x)
    first = nn.RNN(4, 16).to(device)  # layer 0 alone, with the same weights
    first.load_state_dict({k: v for k, v in rnn.state_dict().items() if k.endswith("_l0")})
    y0 = _plain_output(first, x)
    sat0, sat1 = _tanh_sat(y0, 0.1), _tanh_sat(y1, 0.1)
    assert sat0 > 0.6 and 0.1 < sat1 < 0.5  # the layers differ: reading the wrong one would show
    run, _ = monitored_step(rnn, x, _loss)
    assert_close(layer_value(run, "sat_frac", ""), sat1, rtol=1e-6)


def test_bidirectional_rnn_counts_both_directions(device):
    rnn = nn.RNN(4, 10, bidirectional=True, batch_first=True).to(device)
    with torch.no_grad():
        rnn.weight_ih_l0.mul_(20.0)  # forward direction saturated, the reverse one live
        rnn.weight_ih_l0_reverse.mul_(0.2)
    x = torch.randn(3, 7, 4, device=device)
    y = _plain_output(rnn, x)
    assert y.shape[-1] == 20
    expected, forward_only = _tanh_sat(y, 0.1), _tanh_sat(y[..., :10], 0.1)
    assert abs(expected - forward_only) > 0.2
    run, _ = monitored_step(rnn, x, _loss)
    assert_close(layer_value(run, "sat_frac", ""), expected, rtol=1e-6)


def test_packed_sequence_is_read_without_its_padding(device):
    rnn = nn.RNN(5, 12, batch_first=True).to(device)
    with torch.no_grad():
        rnn.weight_ih_l0.mul_(10.0)
    lengths = torch.tensor([9, 6, 3, 2])
    x = pack_padded_sequence(torch.randn(4, 9, 5, device=device), lengths, batch_first=True)
    y = _plain_output(rnn, x)  # [sum(lengths), 12]: the real steps only
    assert y.shape == (int(lengths.sum()), 12)
    expected = _tanh_sat(y, 0.1)
    padded = torch.nn.utils.rnn.pad_packed_sequence(twin(rnn)(x)[0], batch_first=True)[0].detach()
    assert abs(_tanh_sat(padded, 0.1) - expected) > 0.05  # zeros of the padding would dilute it
    run, _ = monitored_step(rnn, x, _loss)
    assert_close(layer_value(run, "sat_frac", ""), expected, rtol=1e-6)


def test_relu_rnn_dead_frac_counts_units_off_at_every_step_and_sample(device):
    rnn = nn.RNN(6, 16, nonlinearity="relu", batch_first=True).to(device)
    with torch.no_grad():
        rnn.bias_ih_l0[:6] = -100.0  # units 0..5 never fire
        rnn.bias_ih_l0[6:] = 1.0
    x = torch.randn(4, 8, 6, device=device)
    y = _plain_output(rnn, x)
    expected = dead_fraction(y, -1)
    assert expected == 6 / 16
    run, _ = monitored_step(rnn, x, _loss)
    assert run.layers[0]["activation"] == "relu"
    assert_close(layer_value(run, "dead_frac", ""), expected)
    assert layer_value(run, "sat_frac", "") == 0.0  # ReLU does not saturate


@pytest.mark.parametrize("make", [nn.LSTM, nn.GRU], ids=["LSTM", "GRU"])
def test_gated_layers_are_not_read_as_tanh(device, make):
    """LSTM/GRU outputs are gate products and mixtures: near +-1 is no tanh' of theirs, and nothing is recorded."""
    rnn = make(4, 8, batch_first=True).to(device)
    if make is nn.LSTM:
        with torch.no_grad():  # input, forget and output gates held open: h = tanh(c), c a sum of +-1 steps
            for rows in (slice(0, 16), slice(24, 32)):
                rnn.weight_ih_l0[rows] = 0.0
                rnn.weight_hh_l0[rows] = 0.0
                rnn.bias_ih_l0[rows] = 10.0
    x = torch.randn(3, 12, 4, device=device) * 50
    assert _tanh_sat(_plain_output(rnn, x), 0.1) > 0.2  # a tanh predicate would find saturation here
    run, _ = monitored_step(rnn, x, _loss)
    assert run.layers[0]["activation"] == ""
    assert layer_value(run, "sat_frac", "") == 0.0
