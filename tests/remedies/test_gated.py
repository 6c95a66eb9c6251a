"""`arch:gated_rnn`: plain RNNs become drop-in GRUs, and `treat` pairs the swap with gate init."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradvet
from gradvet.remedies import MODEL_REMEDIES, RemedyNotApplicable, apply_remedy, gate_rnns
from gradvet.zoo import SeqModel, adding_problem


class TwoRNNs(nn.Module):
    """An RNN stack, an RNNCell loop and a plain RNN subclass that must be left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.RNN(3, 16, num_layers=2, nonlinearity="relu", batch_first=True, dropout=0.1,
                          bidirectional=True)
        self.cell = nn.RNNCell(32, 8, bias=False)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        out, _ = self.enc(x, h0)
        h = torch.zeros(x.shape[0], 8, dtype=x.dtype)
        for t in range(out.shape[1]):
            h = self.cell(out[:, t], h)
        return self.head(h)


def first_vs_last_step_grad(model: nn.Module, batch) -> float:
    """Plain-autograd reference: ||dL/dx_0|| / ||dL/dx_T|| over the batch."""
    x, y = batch
    x = x.clone().requires_grad_(True)
    F.mse_loss(model(x), y).backward()
    g = x.grad.norm(dim=(0, 2))
    return float(g[0] / g[-1])


def test_gate_rnns_keeps_every_constructor_argument_and_the_call_signature() -> None:
    torch.manual_seed(0)
    model = TwoRNNs().double().eval()
    changes = gate_rnns(model)
    assert [(c.module, c.what) for c in changes] == [("enc", "replace"), ("cell", "replace")]
    assert changes[0].old.startswith("RNN(3, 16, num_layers=2") and changes[0].new.startswith("GRU(3, 16")
    enc, cell = model.enc, model.cell
    assert type(enc) is nn.GRU and type(cell) is nn.GRUCell
    assert (enc.input_size, enc.hidden_size, enc.num_layers, enc.batch_first, enc.dropout, enc.bidirectional) == (
        3, 16, 2, True, 0.1, True)
    assert (cell.input_size, cell.hidden_size, cell.bias) == (32, 8, False)
    assert enc.weight_hh_l0.shape == (3 * 16, 16) and enc.weight_hh_l0.dtype == torch.float64
    assert not enc.training, "the eval/train mode of the replaced layer is kept"
    out = model(torch.randn(4, 5, 3, dtype=torch.float64), torch.zeros(4, 4, 16, dtype=torch.float64))
    assert out.shape == (4, 1)


def test_gate_rnns_is_idempotent_and_refuses_what_it_cannot_do() -> None:
    model = SeqModel("RNN")
    assert apply_remedy("arch:gated_rnn", model)  # on a copy
    assert type(model.rnn) is nn.RNN
    gated = apply_remedy("arch:gated_rnn", model).model
    assert not apply_remedy("arch:gated_rnn", gated), "a second application changes nothing"
    with pytest.raises(RemedyNotApplicable, match="has none"):
        apply_remedy("arch:gated_rnn", nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(RemedyNotApplicable, match="cannot replace itself"):
        apply_remedy("arch:gated_rnn", nn.RNN(2, 4))

    class MyRNN(nn.RNN):
        pass

    holder = nn.Sequential()
    holder.add_module("rnn", MyRNN(2, 4))
    with pytest.raises(RemedyNotApplicable, match="subclass"):
        apply_remedy("arch:gated_rnn", holder)


def test_treat_swaps_a_vanishing_rnn_for_a_gru_with_chrono_gates_and_the_gradient_reaches_the_start() -> None:
    torch.manual_seed(0)
    model, batch = SeqModel("RNN"), adding_problem(64, 50, 0)
    result = gradvet.treat(model, batch, F.mse_loss)
    assert "vanishing_gradients" in result.before.kinds()
    assert [r.id for r in result.applied] == ["arch:gated_rnn", "init:chrono"]
    assert result.healthy and gradvet.check(result.model, batch, F.mse_loss).healthy
    assert type(model.rnn) is nn.RNN and type(result.model.rnn) is nn.GRU
    before, after = first_vs_last_step_grad(model, batch), first_vs_last_step_grad(result.model, batch)
    assert before < 1e-6, before          # the RNN's first inputs get nothing
    assert after > 1e-2, after            # the GRU with chrono gates carries the gradient back 50 steps
    # the treated net learns the adding problem (predicting the mean scores about 0.17)
    net = copy.deepcopy(result.model)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for i in range(300):  # the untreated RNN stays at 0.16 for as long
        x, y = adding_problem(64, 50, seed=1000 + i)
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        opt.step()
    x, y = adding_problem(512, 50, seed=7)
    with torch.no_grad():
        assert float(F.mse_loss(net(x), y)) < 0.05


def test_treat_inplace_replays_the_swap_on_the_callers_model() -> None:
    torch.manual_seed(1)
    model, batch = SeqModel("RNN"), adding_problem(32, 50, 1)
    result = gradvet.treat(model, batch, F.mse_loss, inplace=True)
    assert result.model is model and type(model.rnn) is nn.GRU
    assert result.healthy == gradvet.check(model, batch, F.mse_loss).healthy


def test_a_remedy_that_does_nothing_does_not_ride_along_with_the_one_that_works(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pair rule: a remedy that alone measures no better is kept with the next one only if the pair
    beats that next remedy alone."""
    def noop_touch(model, *, batch=None, **kw):
        from gradvet.remedies import Change
        return [Change("", "init", "x", "x")]  # claims a change, changes no number

    monkeypatch.setitem(MODEL_REMEDIES, "init:noop", noop_touch)
    torch.manual_seed(2)
    layers = [m for _ in range(8) for m in (nn.Linear(32, 32), nn.Sigmoid())]
    model = nn.Sequential(*layers, nn.Linear(32, 10))
    batch = (torch.randn(128, 32), torch.randint(0, 10, (128,)))
    result = gradvet.treat(model, batch, F.cross_entropy, remedies=["init:noop", "activation:relu", "init:kaiming"])
    first = result.attempts[0]
    assert (first.remedy, first.outcome) == ("init:noop", "reverted")
    assert "with activation:relu on top" in first.reason and "activation:relu alone" in first.reason
    assert "init:noop" not in [r.id for r in result.applied]
    assert [r.id for r in result.applied][:1] == ["activation:relu"]


def test_treat_table_shows_the_time_profile_and_it_matches_plain_autograd() -> None:
    from gradvet._render_treat import treat_to_text

    torch.manual_seed(0)
    model, batch = SeqModel("RNN"), adding_problem(64, 50, 0)
    result = gradvet.treat(model, batch, F.mse_loss)
    for report, net in ((result.before, model), (result.after, result.model)):
        profile = report.layer("rnn").time_profile
        assert len(profile) == 50
        assert profile[0] / profile[-1] == pytest.approx(first_vs_last_step_grad(net, batch), rel=1e-3)
    text = treat_to_text(result)
    assert "gradient reaching the first time step / the last" in text
    before = result.before.layer("rnn").time_profile
    assert f"{before[0] / before[-1]:.2e}" in text
