"""Per-time-step gradient profile of recurrent layers against x.grad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ._reference import monitored_step, reference_outputs, twin


class _Head(nn.Module):
    def __init__(self, cls: type, batch_first: bool, unbatched: bool = False) -> None:
        super().__init__()
        self.rnn = cls(4, 6, batch_first=batch_first)
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def _loss(out):
    # a loss on the last output only: the per-step profile then decays backwards in time
    return out.select(-2, -1).square().mean() + 0.1 * out.mean()


def _expected(grad: torch.Tensor, time_dim: int) -> np.ndarray:
    other = tuple(i for i in range(grad.dim()) if i != time_dim)
    return grad.double().square().sum(dim=other).sqrt().cpu().numpy()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN], ids=["lstm", "gru", "rnn"])
def test_time_profile_matches_input_grad(device, cls, batch_first):
    model = _Head(cls, batch_first).to(device)
    shape = (3, 9, 4) if batch_first else (9, 3, 4)
    x = torch.randn(*shape, device=device)
    ref_model = twin(model)
    run, _ = monitored_step(
        model, x, lambda out: _loss(out.transpose(0, 1) if not batch_first else out)
    )
    xr = x.clone().requires_grad_()
    out = ref_model(xr)
    _loss(out.transpose(0, 1) if not batch_first else out).backward()
    expected = _expected(xr.grad, 1 if batch_first else 0)
    series = run.series("time/rnn")
    assert series.steps.tolist() == [0] and series.values.shape == (1, 9)
    np.testing.assert_allclose(series.values[0], expected, rtol=2e-5, atol=1e-9)
    assert expected[0] < expected[-1]  # the profile is not flat: order matters


def test_time_profile_unbatched_sequence(device):
    model = _Head(nn.LSTM, batch_first=False).to(device)
    x = torch.randn(7, 4, device=device)  # [T, F]
    ref_model = twin(model)
    run, _ = monitored_step(model, x, _loss)
    xr = x.clone().requires_grad_()
    _loss(ref_model(xr)).backward()
    np.testing.assert_allclose(
        run.series("time/rnn").values[0], _expected(xr.grad, 0), rtol=2e-5, atol=1e-9
    )


class _EmbeddedLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(15, 4)
        self.rnn = nn.LSTM(4, 6, batch_first=True)
        self.head = nn.Linear(6, 1)

    def forward(self, idx):
        return self.head(self.rnn(self.emb(idx))[0])


def test_time_profile_when_input_already_requires_grad(device):
    model = _EmbeddedLSTM().to(device)
    idx = torch.randint(0, 15, (4, 8), device=device)
    ref_model = twin(model)
    run, _ = monitored_step(model, idx, _loss)
    ((emb_out, emb_grad),) = reference_outputs(ref_model, idx, _loss, ["emb"])["emb"]
    np.testing.assert_allclose(
        run.series("time/rnn").values[0], _expected(emb_grad, 1), rtol=2e-5, atol=1e-9
    )
    # and training is unchanged: the embedding receives the same gradient as without gradvet
    torch.testing.assert_close(model.emb.weight.grad, ref_model.emb.weight.grad)


def test_time_profile_only_on_layer_steps_and_sums_micro_batches(device):
    model = _Head(nn.GRU, batch_first=True).to(device)
    xs = [torch.randn(2, 5, 4, device=device) for _ in range(2)]
    ref_model = twin(model)
    import gradvet

    with gradvet.Monitor(model, profile="full", layer_every=2) as monitor:
        for _ in range(3):
            model.zero_grad()
            for x in xs:
                (_loss(model(x)) / 2).backward()
            monitor.step()
    series = monitor.run.series("time/rnn")
    assert series.steps.tolist() == [0, 2]
    xr = torch.cat(xs).requires_grad_()
    _loss(ref_model(xr)).backward()
    np.testing.assert_allclose(series.values[0], _expected(xr.grad, 1), rtol=2e-5, atol=1e-9)


def test_time_profile_off():
    model = _Head(nn.LSTM, batch_first=True)
    run, _ = monitored_step(model, torch.randn(2, 4, 4), _loss, time_profile=False)
    assert not [m for m in run.metrics if m.startswith("time/")]
    assert "layer/grad_norm" in run.metrics


def test_time_hook_never_stays_on_the_callers_tensor():
    """A leaf input that requires grad outlives the Monitor: no gradvet hook may stay on it,
    and the profile still matches the plain autograd gradient per time step."""
    import gradvet

    torch.manual_seed(0)
    rnn = nn.RNN(3, 5, batch_first=True)
    x = torch.randn(4, 7, 3, requires_grad=True)
    with gradvet.Monitor(rnn) as monitor:
        out, _ = rnn(x)
        out.sum().backward()
        monitor.step(out.sum())
    assert not x._backward_hooks
    profile = monitor.report().layers[0].time_profile
    np.testing.assert_allclose(profile, x.grad.norm(dim=(0, 2)).numpy(), rtol=1e-5)
    before = x.grad.clone()
    x.grad = None
    rnn(x)[0].sum().backward()  # after the Monitor: plain autograd, nothing of ours runs
    torch.testing.assert_close(x.grad, before)
