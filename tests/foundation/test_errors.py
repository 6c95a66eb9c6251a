"""Bad input: one clear error each, with a message that says the fix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet


def _model():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def _batch():
    return torch.randn(5, 3), torch.randint(0, 2, (5,))


@pytest.mark.parametrize("entry", ["check", "Monitor"])
def test_not_a_module(entry):
    call = (
        (lambda m: gradvet.check(m, _batch(), F.cross_entropy))
        if entry == "check"
        else gradvet.Monitor
    )
    with pytest.raises(TypeError, match="needs a torch.nn.Module, got function"):
        call(lambda x: x)
    with pytest.raises(
        TypeError, match="received the class Linear instead of a model; instantiate it first"
    ):
        call(nn.Linear)


@pytest.mark.parametrize("entry", ["check", "Monitor"])
def test_no_parameters_and_all_frozen(entry):
    call = (
        (lambda m: gradvet.check(m, _batch(), F.cross_entropy))
        if entry == "check"
        else gradvet.Monitor
    )
    with pytest.raises(ValueError, match="has no parameters"):
        call(nn.Sequential(nn.ReLU()))
    frozen = _model().requires_grad_(False)
    with pytest.raises(ValueError, match=r"requires_grad=False; unfreeze"):
        call(frozen)


def test_check_loss_not_scalar():
    with pytest.raises(
        ValueError, match=r"must return a scalar tensor, got \(5,\); use reduction='mean'"
    ):
        gradvet.check(_model(), _batch(), lambda out, y: F.cross_entropy(out, y, reduction="none"))


def test_check_bad_batch_and_loss_fn():
    x, y = _batch()
    with pytest.raises(TypeError, match=r"batch must be a pair \(inputs, targets\).*got a Tensor"):
        gradvet.check(_model(), x, F.cross_entropy)
    with pytest.raises(TypeError, match="got a tuple of length 3"):
        gradvet.check(_model(), (x, y, y), F.cross_entropy)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        gradvet.check(_model(), (x, y), "cross_entropy")
    with pytest.raises(ValueError, match="passes must be an int >= 1"):
        gradvet.check(_model(), (x, y), F.cross_entropy, passes=0)


def test_monitor_step_loss_not_scalar():
    model = _model()
    with gradvet.Monitor(model) as monitor:
        out = model(torch.randn(5, 3))
        out.sum().backward()
        with pytest.raises(
            ValueError, match=r"loss must be a scalar, got a tensor of shape \(5, 2\); reduce it"
        ):
            monitor.step(out)
        with pytest.raises(TypeError, match="loss must be a scalar tensor or a float, got str"):
            monitor.step("0.3")
        monitor.step(0.3)  # a float is fine
    assert monitor.run.loss.tolist() == pytest.approx([0.3])


def test_monitor_step_outside_with_block():
    model = _model()
    monitor = gradvet.Monitor(model)
    model(torch.randn(2, 3)).sum().backward()
    with pytest.raises(gradvet.GradvetUsageError, match="outside `with monitor:`"):
        monitor.step()
    with monitor:
        monitor.step()
    with pytest.raises(gradvet.GradvetUsageError, match="outside `with monitor:`"):
        monitor.step()


def test_monitor_entered_twice():
    monitor = gradvet.Monitor(_model())
    with monitor, pytest.raises(gradvet.GradvetUsageError, match="already active"), monitor:
        pass


def test_last_grad_norms_before_any_step():
    with pytest.raises(gradvet.GradvetUsageError, match="no step measured yet"):
        gradvet.Monitor(_model()).last_grad_norms  # noqa: B018


def test_bad_optimizer_and_scaler():
    with pytest.raises(TypeError, match="needs a torch.optim.Optimizer or a list of them, got dict"):
        gradvet.Monitor(_model(), optimizer={})
    with pytest.raises(ValueError, match="the list is empty"):
        gradvet.Monitor(_model(), optimizer=[])
    with pytest.raises(TypeError, match="needs a torch.amp.GradScaler, got float"):
        gradvet.Monitor(_model(), scaler=1.0)


def test_bad_profile():
    with pytest.raises(
        ValueError,
        match=r"unknown profile 'fast'; choose one of \['business', 'default', 'economy', 'full'\]",
    ):
        gradvet.Monitor(_model(), profile="fast")
    with pytest.raises(
        TypeError, match="profile must be a name like 'economy' or a gradvet.MonitorConfig, got int"
    ):
        gradvet.Monitor(_model(), profile=3)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("layer_every", 0, "layer_every must be an int >= 1, got 0"),
        ("update_every", 2.5, "update_every must be an int >= 1, got 2.5"),
        ("flush_every", True, "flush_every must be an int >= 1, got True"),
        ("saturation_threshold", 1.0, r"saturation_threshold must lie in \(0, 1\), got 1.0"),
        ("saturation_threshold", 0, r"saturation_threshold must lie in \(0, 1\), got 0"),
        ("flush_seconds", 0, "flush_seconds must be > 0, got 0"),
    ],
)
def test_bad_config_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        gradvet.MonitorConfig(**{field: value})
    with pytest.raises(ValueError, match=message):
        gradvet.Monitor(_model(), **{field: value})


def test_unknown_override_names_the_valid_fields():
    with pytest.raises(TypeError, match=r"unknown MonitorConfig field 'layers_every'.*layer_every"):
        gradvet.Monitor(_model(), layers_every=5)


def test_check_loss_fn_error_propagates_and_leaves_no_hooks():
    model = _model()

    def bad_loss(out, y):
        raise KeyError("label")

    with pytest.raises(KeyError, match="label"):
        gradvet.check(model, _batch(), bad_loss)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
