"""Nothing of gradvet's is left on a model after use; check() changes nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


class _Mixed(nn.Module):
    """Conv + BatchNorm + dropout + LSTM + functional activation: every kind of tap."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.3)
        self.rnn = nn.LSTM(4, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = self.drop(F.relu(self.bn(self.conv(x))))  # [B, C, T]
        out, _ = self.rnn(h.transpose(1, 2))
        return self.head(torch.sigmoid(out[:, -1]))


def _hooks(model: nn.Module, opt=None) -> dict:
    snap = {
        (name, attr): list(getattr(mod, attr, {}).keys())
        for name, mod in model.named_modules()
        for attr in _HOOK_DICTS
    }
    for name, p in model.named_parameters():
        snap[(name, "_backward_hooks")] = list((p._backward_hooks or {}).keys())
        snap[(name, "_post_accumulate_grad_hooks")] = list(
            (getattr(p, "_post_accumulate_grad_hooks", None) or {}).keys()
        )
    if opt is not None:
        snap[("opt", "pre")] = list(opt._optimizer_step_pre_hooks.keys())
        snap[("opt", "post")] = list(opt._optimizer_step_post_hooks.keys())
    return snap


def _batch():
    return torch.randn(6, 3, 10), torch.randint(0, 2, (6,))


def _train(model, opt, monitor, steps=2):
    for _ in range(steps):
        x, y = _batch()
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        monitor.step(loss)
        opt.step()


def test_no_hooks_left_after_with_block():
    model = _Mixed()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.head.register_forward_hook(lambda m, i, o: None)  # the user's own hook survives
    before = _hooks(model, opt)
    monitor = gradvet.Monitor(model, optimizer=opt, profile="full")
    with monitor:
        assert _hooks(model, opt) != before  # hooks are really installed while active
        _train(model, opt, monitor)
    assert _hooks(model, opt) == before
    monitor.close()  # idempotent
    assert _hooks(model, opt) == before
    assert monitor.run.meta["status"] == "finished"


def test_no_hooks_left_when_the_body_raises():
    model = _Mixed()
    opt = torch.optim.Adam(model.parameters())
    before = _hooks(model, opt)
    monitor = gradvet.Monitor(model, optimizer=opt, profile="full")
    with pytest.raises(RuntimeError, match="boom"), monitor:
        _train(model, opt, monitor, steps=1)
        model(torch.randn(2, 3, 10))  # a forward in flight when the error hits
        raise RuntimeError("boom")
    assert _hooks(model, opt) == before
    assert monitor.run.meta["status"].startswith("crashed: RuntimeError")
    assert monitor.run.steps.tolist() == [0]  # what was measured before the error is kept


def test_no_hooks_left_when_forward_raises_inside_model():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            torch.sigmoid(self.fc(x))  # a measured functional activation, then the error
            raise ValueError("bad shape")

    model = Broken()
    before = _hooks(model)
    monitor = gradvet.Monitor(model, profile="full")
    with pytest.raises(ValueError, match="bad shape"), monitor:
        model(torch.randn(2, 3))
    assert _hooks(model) == before
    # the TorchFunctionMode gradvet enters for a measured forward is gone too
    assert not torch.overrides._is_torch_function_mode_enabled()


def test_monitor_can_be_reused_in_a_second_block():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    before = _hooks(model)
    monitor = gradvet.Monitor(model, profile="full")
    for _ in range(2):
        with monitor:
            model(torch.randn(2, 3)).sum().backward()
            monitor.step()
        assert _hooks(model) == before
    assert monitor.run.steps.tolist() == [0, 1]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def test_check_leaves_everything_untouched():
    model = _Mixed()
    # warm BatchNorm statistics, a mixed train/eval state, existing gradients
    model(torch.randn(4, 3, 10)).sum().backward()
    model.eval()
    model.drop.train()
    grads_before = {n: p.grad for n, p in model.named_parameters()}
    grad_values = {n: g.clone() for n, g in grads_before.items()}
    modes = {n: m.training for n, m in model.named_modules()}
    state = _state(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append("step"))
    hooks = _hooks(model, opt)
    batch = _batch()
    torch.manual_seed(123)
    rng = torch.get_rng_state()

    report = gradvet.check(model, batch, F.cross_entropy, passes=2)

    assert report.steps == 2 and len(report.layers) == len(gradvet.Monitor(model).layer_infos)
    after = _state(model)
    assert list(after) == list(state)  # num_batches_tracked and running stats included
    for k, v in state.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    for n, p in model.named_parameters():
        assert p.grad is grads_before[n] and torch.equal(p.grad, grad_values[n]), n
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert calls == []
    assert _hooks(model, opt) == hooks


def test_check_with_no_previous_grads_leaves_none():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    state = _state(model)
    gradvet.check(model, (torch.randn(8, 3), torch.randint(0, 2, (8,))), F.cross_entropy)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in _state(model).items())
    assert model.training


def test_two_monitors_on_two_models_do_not_interfere():
    a = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 1))
    b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    x = torch.randn(5, 3)
    with gradvet.Monitor(a, profile="full") as ma, gradvet.Monitor(b, profile="full") as mb:
        a(x).sum().backward()
        b(x).sum().backward()
        ma.step()
        mb.step()
    ga = [a[0].weight.grad.norm().item(), a[0].bias.grad.norm().item()]
    gb = [b[0].weight.grad.norm().item(), b[0].bias.grad.norm().item()]
    assert ma.run.series("param/grad_norm").values[0, :2] == pytest.approx(ga, rel=1e-6)
    assert mb.run.series("param/grad_norm").values[0, :2] == pytest.approx(gb, rel=1e-6)
    assert [layer["activation"] for layer in ma.run.layers] == ["", "sigmoid", ""]
    assert [layer["activation"] for layer in mb.run.layers] == ["", "relu", ""]
