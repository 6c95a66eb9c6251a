"""Issue 15, section 4: ``check`` and ``Monitor`` refuse or warn on careless uses, with the fix."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import gradvet


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 4), torch.randint(0, 3, (n,))


def _state(model: nn.Module) -> dict:
    return {
        "sd": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [p.grad for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _state(model)
    assert before["sd"].keys() == after["sd"].keys()
    for k, v in before["sd"].items():
        assert torch.equal(v, after["sd"][k]), k
    assert all(a is b for a, b in zip(before["grads"], after["grads"]))
    assert before["modes"] == after["modes"]


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_check_under_no_grad_says_so(mode) -> None:
    model = _model().eval()
    before = _state(model)
    with mode(), pytest.raises(ValueError, match=r"inside torch\.(no_grad|inference_mode)\(\)") as err:
        gradvet.check(model, _batch(), nn.functional.cross_entropy)
    assert "does not require grad" not in str(err.value)
    assert "outside" in str(err.value)
    _assert_unchanged(model, before)


def test_check_under_no_grad_with_enable_grad_works() -> None:
    with torch.no_grad(), torch.enable_grad():
        report = gradvet.check(_model(), _batch(), nn.functional.cross_entropy)
    assert report is not None


@pytest.mark.parametrize(
    "batch",
    [
        (torch.randn(0, 4), torch.randint(0, 3, (0,))),
        (torch.randn(8, 4), torch.randint(0, 3, (0,))),
        ({}, torch.randint(0, 3, (8,))),
    ],
    ids=["zero-samples", "zero-targets", "empty-dict"],
)
def test_check_refuses_an_empty_batch(batch) -> None:
    model = _model()
    before = _state(model)
    with pytest.raises(ValueError, match="batch is empty"):
        gradvet.check(model, batch, nn.functional.cross_entropy)
    _assert_unchanged(model, before)


def test_check_refuses_an_empty_dict_entry() -> None:
    class Keyed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    with pytest.raises(ValueError, match=r"inputs\['x'\] has shape \(0, 4\)"):
        gradvet.check(Keyed(), ({"x": torch.randn(0, 4)}, torch.randint(0, 3, (0,))), nn.functional.cross_entropy)


def test_check_refuses_a_meta_device_model() -> None:
    with torch.device("meta"):
        model = _model()
    with pytest.raises(ValueError, match="'meta' device.*to_empty"):
        gradvet.check(model, _batch(), nn.functional.cross_entropy)
    assert all(p.is_meta for p in model.parameters())


def test_check_still_works_and_restores() -> None:
    model = _model()
    before = _state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gradvet.check(model, _batch(), nn.functional.cross_entropy)
    _assert_unchanged(model, before)


def _train(monitor_calls: list[int], *, opt_model: nn.Module | None = None) -> list[warnings.WarningMessage]:
    """Optimizer steps with ``monitor_calls[i]`` monitor.step() calls before the i-th; the warnings."""
    model = _model()
    opt = torch.optim.SGD((opt_model or model).parameters(), lr=0.01)
    x, y = _batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradvet.Monitor(model, optimizer=opt) as monitor:
            for calls in monitor_calls:
                opt.zero_grad()
                for _ in range(calls):
                    loss = nn.functional.cross_entropy(model(x), y)
                    loss.backward()
                    monitor.step(loss)
                opt.step()
    return list(caught)


def _step_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "monitor.step() was called" in str(w.message)]


def test_step_called_twice_per_optimizer_step_warns_once_with_counts() -> None:
    found = _step_warnings(_train([2, 2, 2, 2]))
    assert len(found) == 1
    assert "called 2 times for 1 optimizer step" in found[0]


def test_one_step_per_optimizer_step_does_not_warn() -> None:
    assert _step_warnings(_train([1, 1, 1])) == []


def test_a_lone_extra_call_does_not_warn() -> None:
    # an AMP step the GradScaler skipped (optimizer.step() not run) looks like this
    assert _step_warnings(_train([3, 1, 1, 2, 1])) == []


def test_closure_steps_do_not_warn() -> None:
    model = _model()
    opt = torch.optim.LBFGS(model.parameters(), max_iter=4)
    x, y = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with gradvet.Monitor(model, optimizer=opt) as monitor:
            for _ in range(3):

                def closure() -> torch.Tensor:
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(model(x), y)
                    loss.backward()
                    monitor.step(loss)
                    return loss

                opt.step(closure)


def test_optimizer_over_another_model_warns_at_construction() -> None:
    model, other = _model(), _model()
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="hold none of the 6 trainable parameters"):
        gradvet.Monitor(model, optimizer=opt)


def test_optimizer_over_some_parameters_does_not_warn() -> None:
    model = _model()
    opt = torch.optim.SGD(model[0].parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gradvet.Monitor(model, optimizer=opt)


# -- a layer added mid-run (issue 15, section 4) ---------------------------------------------------------------


class Growing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.extra: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return h if self.extra is None else self.extra(h)


def _run_steps(model: nn.Module, mon: gradvet.Monitor, steps: int) -> None:
    for _ in range(steps):
        loss = model(torch.randn(4, 4)).pow(2).mean()
        model.zero_grad()
        loss.backward()
        mon.step(loss)


def test_a_layer_added_mid_run_warns_once_naming_it() -> None:
    torch.manual_seed(0)
    model = Growing()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradvet.Monitor(model, flush_every=2) as mon:
            _run_steps(model, mon, 3)
            assert not [w for w in caught if "not monitored" in str(w.message)]
            model.extra = nn.Linear(8, 2)
            _run_steps(model, mon, 6)
    msgs = [str(w.message) for w in caught if "not monitored" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert "2 trainable parameter(s)" in msgs[0] and "'extra.weight', 'extra.bias'" in msgs[0]
    # the record still holds only the layers known at the start, with every step
    run = mon.run
    assert run is not None and run.steps.tolist() == list(range(9))


def test_unfreezing_a_layer_mid_run_warns_and_a_fixed_model_does_not() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    model[0].requires_grad_(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradvet.Monitor(model, flush_every=2) as mon:
            _run_steps(model, mon, 4)
        assert not [w for w in caught if "not monitored" in str(w.message)]
        with gradvet.Monitor(model, flush_every=2) as mon:
            model[0].requires_grad_(True)
            _run_steps(model, mon, 4)
    msgs = [str(w.message) for w in caught if "not monitored" in str(w.message)]
    assert len(msgs) == 1 and "'0.weight', '0.bias'" in msgs[0]
