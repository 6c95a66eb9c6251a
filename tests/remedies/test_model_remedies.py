"""Model-editing remedies: values against theory or a plain-PyTorch recomputation."""

from __future__ import annotations

import copy
import doctest
import importlib
import math
import os
from functools import partial
from typing import Any, Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradvet.diagnosis._prescribe import CATALOGUE
from gradvet.errors import GradvetUsageError
from gradvet.remedies import (
    MODEL_REMEDIES,
    Change,
    RemedyNotApplicable,
    Residual,
    add_residual,
    applicable,
    apply_remedy,
    chrono_init,
    create_act,
    init_forget_gate_bias,
    init_kaiming,
    init_orthogonal,
    init_xavier,
    insert_norm,
    lsuv_init,
    reset_biases,
    swap_activations,
    zero_init_residual,
)
from gradvet.zoo import NanNet

torch.set_num_threads(1)
DEVICE = torch.device(os.environ.get("GRADVET_TEST_DEVICE", "cpu"))


@pytest.fixture(autouse=True)
def _no_grad() -> Any:
    """Remedies edit weights outside autograd; tests that need gradients enable them explicitly."""
    with torch.no_grad():
        yield


# -- models ---------------------------------------------------------------------------
def sigmoid_mlp(depth: int = 10, width: int = 64, seed: int = 0, act: type[nn.Module] = nn.Sigmoid) -> nn.Sequential:
    """``depth`` Linear layers, ``act`` between them, PyTorch default init."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


class SeqNet(nn.Module):
    def __init__(self, cell: str = "LSTM", hidden: int = 8, layers: int = 1, bidirectional: bool = False) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(2, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class BasicBlock(nn.Module):
    """torchvision-like: relu(x + bn2(conv2(relu(bn1(conv1(x))))))."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.blocks = nn.Sequential(BasicBlock(), BasicBlock())
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class FunctionalMLP(nn.Module):
    """Not a Sequential, and its activations are functional."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.sigmoid(self.fc1(x)))


def mlp_batch(n: int = 64, d: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, 10, (n,), generator=g)


def seq_batch(n: int = 8, t: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, t, 2, generator=g), torch.randn(n, 1, generator=g)


def img_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def broken_mlp() -> nn.Module:
    model = sigmoid_mlp(4, 16)
    with torch.no_grad():
        next(m for m in model.modules() if isinstance(m, nn.Linear)).weight[0, 0] = float("inf")  # inf: torch.equal(nan, nan) is False
    return model


def small_gain_bn() -> nn.Module:
    """A BatchNorm MLP whose norm gains start at 0.02 (transformers' EfficientNet draws them so)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    nn.init.constant_(model[1].weight, 0.02)
    return model


# id -> (model builder, batch, kwargs): a model on which the remedy changes something.
CASES: dict[str, tuple[Callable[[], nn.Module], Any, dict[str, Any]]] = {
    **{rid: (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}) for rid in MODEL_REMEDIES if rid.startswith("activation:")},
    "init:kaiming": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}),
    "init:xavier": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}),
    "init:orthogonal": (lambda: SeqNet("GRU"), seq_batch(), {}),
    "init:lsuv": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}),
    "init:forget_gate_bias": (lambda: SeqNet("LSTM"), seq_batch(), {}),
    "init:chrono": (lambda: SeqNet("LSTM"), seq_batch(), {}),
    "init:zero_residual": (ResNetLike, img_batch(), {}),
    "init:reset_bias": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}),
    "init:reset_nonfinite": (broken_mlp, mlp_batch(), {}),
    "init:reset_norm": (small_gain_bn, mlp_batch(), {}),
    "norm:batch": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}),
    "norm:layer": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}),
    "norm:rms": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}),
    "residual": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}),
    "residual:rezero": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {}),
    "arch:gated_rnn": (lambda: SeqNet("RNN"), seq_batch(), {}),
    "guard:domain": (NanNet, mlp_batch(d=64), {}),
    "arch:shallower": (lambda: sigmoid_mlp(6, 16), mlp_batch(), {"depth": 3}),
    "pretrain:layerwise": (lambda: sigmoid_mlp(4, 16), mlp_batch(), {"steps": 5}),
}


def snapshot(model: nn.Module) -> tuple[str, dict[str, torch.Tensor]]:
    return repr(model), {k: v.clone() for k, v in model.state_dict().items()}


def same(model: nn.Module, snap: tuple[str, dict[str, torch.Tensor]]) -> bool:
    text, state = snap
    now = model.state_dict()
    return repr(model) == text and now.keys() == state.keys() and all(torch.equal(now[k], v) for k, v in state.items())


def grad_ratio(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """||dL/dW_first|| / ||dL/dW_last|| with plain autograd."""
    model.train()
    model.zero_grad()
    with torch.enable_grad():
        F.cross_entropy(model(x), y).backward()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return float(linears[0].weight.grad.norm() / linears[-1].weight.grad.norm())


# -- the registry ---------------------------------------------------------------------
def test_every_model_remedy_has_a_case() -> None:
    assert set(CASES) == set(MODEL_REMEDIES)


@pytest.mark.parametrize("rid", sorted(MODEL_REMEDIES))
def test_remedy_changes_a_copy_keeps_shape_and_is_idempotent(rid: str) -> None:
    build, batch, kw = CASES[rid]
    model = build()
    before = snapshot(model)
    out_before = model.eval()(batch[0])
    result = apply_remedy(rid, model, batch=batch, **kw)
    assert result and result.id == rid and all(isinstance(c, Change) for c in result.changes)
    assert same(model, before), "inplace=False must leave the original untouched"
    assert not same(result.model, before)
    assert result.model.eval()(batch[0]).shape == out_before.shape
    again = apply_remedy(rid, result.model, batch=batch, **kw)
    assert not again and again.changes == []


@pytest.mark.parametrize("rid", sorted(MODEL_REMEDIES))
def test_dtype_and_device_are_kept(rid: str) -> None:
    """float64 stays float64; new modules land on the model's device (GRADVET_TEST_DEVICE=cuda to run on a GPU)."""
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("GRADVET_TEST_DEVICE=cuda but CUDA is not available")
    build, batch, kw = CASES[rid]
    model = build().to(DEVICE, torch.float64)
    x = batch[0].to(DEVICE, torch.float64)
    treated = apply_remedy(rid, model, batch=(x, batch[1]), **kw).model
    tensors = [t for t in (*treated.parameters(), *treated.buffers()) if t.is_floating_point()]
    assert all(t.dtype == torch.float64 and t.device.type == DEVICE.type for t in tensors)
    out = treated.eval()(x)
    assert out.dtype == torch.float64 and out.device.type == DEVICE.type


def test_inplace_edits_the_model_itself() -> None:
    model = sigmoid_mlp(4, 16)
    result = apply_remedy("activation:relu", model, inplace=True)
    assert result.model is model and isinstance(model[1], nn.ReLU)
    assert [c.module for c in result.changes] == ["1", "3", "5"]


def test_unknown_id_lists_the_valid_ids() -> None:
    with pytest.raises(GradvetUsageError, match="unknown remedy id 'init:magic'") as e:
        apply_remedy("init:magic", sigmoid_mlp(3, 8))
    assert all(rid in str(e.value) for rid in MODEL_REMEDIES)


@pytest.mark.parametrize("rid", ["clip:norm", "lr:lower", "optim:adam", "data:normalize", "optim:param_groups",
                                 "skip_nonfinite"])
def test_prescription_only_id_shows_the_snippet(rid: str) -> None:
    with pytest.raises(GradvetUsageError, match="training-loop change|architecture change") as e:
        apply_remedy(rid, sigmoid_mlp(3, 8))
    assert CATALOGUE[rid][1].splitlines()[0] in str(e.value)


def test_applicable_reports_without_modifying() -> None:
    model = sigmoid_mlp(4, 16)
    before, rng = snapshot(model), torch.get_rng_state()
    assert applicable("init:kaiming", model)[0]
    ok, why = applicable("init:forget_gate_bias", model)
    assert not ok and "LSTM" in why
    assert applicable("init:lsuv", model) == (False, "init:lsuv needs batch=(inputs, targets)")
    assert applicable("init:lsuv", model, batch=mlp_batch())[0]
    assert same(model, before) and torch.equal(torch.get_rng_state(), rng)
    treated = apply_remedy("activation:relu", model).model
    ok, why = applicable("activation:relu", treated)
    assert not ok and "applied already" in why


def test_not_a_module_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="instantiate it first"):
        apply_remedy("init:kaiming", nn.Linear)  # type: ignore[arg-type]


# -- activations ----------------------------------------------------------------------
def test_create_act_accepts_names_classes_and_factories() -> None:
    assert isinstance(create_act("relu"), nn.ReLU)
    assert isinstance(create_act("swish"), nn.SiLU)
    assert isinstance(create_act(nn.GELU), nn.GELU)
    leaky = create_act(partial(nn.LeakyReLU, 0.2))
    assert isinstance(leaky, nn.LeakyReLU) and leaky.negative_slope == 0.2
    assert isinstance(create_act(lambda: nn.ELU(alpha=0.5)), nn.ELU)
    assert create_act("gelu") is not create_act("gelu")


@pytest.mark.parametrize("junk", [42, None, 1.5, nn.ReLU(), int, lambda: 3, partial(nn.Linear)])
def test_create_act_rejects_junk(junk: Any) -> None:
    with pytest.raises(TypeError):
        create_act(junk)


def test_create_act_unknown_name() -> None:
    with pytest.raises(GradvetUsageError, match="'softmaxx'.*relu"):
        create_act("softmaxx")


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.blocks = nn.ModuleDict({"a": nn.Sequential(nn.Linear(6, 6), nn.Sigmoid()),
                                     "b": nn.ModuleList([nn.Linear(6, 6), nn.Tanh(), nn.ReLU()])})
        self.out_act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks["a"](self.fc(x))
        for m in self.blocks["b"]:
            x = m(x)
        return self.out_act(x)


def test_swap_finds_nested_modules_and_leaves_others() -> None:
    model = Nested()
    fc, relu, lin_b = model.fc, model.blocks["b"][2], model.blocks["b"][0]
    x = torch.randn(5, 6)
    changes = swap_activations(model, "relu")
    assert [(c.module, c.old, c.new) for c in changes] == [
        ("out_act", "Sigmoid()", "ReLU()"), ("blocks.a.1", "Sigmoid()", "ReLU()"), ("blocks.b.1", "Tanh()", "ReLU()")]
    assert model.fc is fc and model.blocks["b"][2] is relu and model.blocks["b"][0] is lin_b
    # the model now computes relu everywhere: recompute by hand with the same weights
    a = model.blocks["a"][0]
    expect = F.relu(F.relu(lin_b(F.relu(a(fc(x))))))
    torch.testing.assert_close(model(x), expect)


def test_swap_again_replaces_the_earlier_choice_only() -> None:
    model = sigmoid_mlp(3, 8, act=nn.Tanh)
    swap_activations(model, "relu")
    assert swap_activations(model, "relu") == []
    changes = swap_activations(model, partial(nn.LeakyReLU, 0.1))
    assert [(c.old, c.new) for c in changes] == [("ReLU()", "LeakyReLU(negative_slope=0.1)")] * 2


def test_swap_refuses_functional_activations() -> None:
    with pytest.raises(RemedyNotApplicable, match="torch.sigmoid"):
        swap_activations(FunctionalMLP())
    with pytest.raises(RemedyNotApplicable, match="RNN"):
        apply_remedy("activation:relu", SeqNet("RNN"))


# -- variance-scaling init ------------------------------------------------------------
def test_kaiming_fan_in_relu() -> None:
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    changes = init_kaiming(model)
    w = model[0].weight.detach()
    assert abs(float(w.std()) / math.sqrt(2 / 512) - 1) < 0.05
    assert abs(float(w.mean())) < 0.01 * math.sqrt(2 / 512) * 10
    assert float(model[0].bias.abs().max()) == 0.0
    assert changes[0].new.endswith("(kaiming fan_in, relu)")
    # the output layer is followed by nothing: gain 1, std = 1/sqrt(fan_in)
    assert abs(float(model[2].weight.std()) / math.sqrt(1 / 512) - 1) < 0.05


def test_kaiming_fan_out() -> None:
    model = nn.Sequential(nn.Linear(1024, 256), nn.ReLU())
    init_kaiming(model, mode="fan_out")
    assert abs(float(model[0].weight.std()) / math.sqrt(2 / 256) - 1) < 0.05


def test_kaiming_leaky_slope_and_conv() -> None:
    model = nn.Sequential(nn.Linear(512, 512), nn.LeakyReLU(0.2), nn.Conv2d(64, 64, 3), nn.Dropout(0.1), nn.Tanh())
    changes = init_kaiming(model)
    leaky_std = math.sqrt(2 / (1 + 0.2 ** 2)) / math.sqrt(512)
    assert abs(float(model[0].weight.std()) / leaky_std - 1) < 0.05
    tanh_std = (5 / 3) / math.sqrt(64 * 9)  # dropout between the conv and its tanh is skipped
    assert abs(float(model[2].weight.std()) / tanh_std - 1) < 0.05
    assert "leaky_relu(0.2)" in changes[0].new and "tanh" in changes[1].new


def test_kaiming_explicit_nonlinearity_and_bad_mode() -> None:
    model = nn.Sequential(nn.Linear(512, 512), nn.Sigmoid())
    init_kaiming(model, nonlinearity="relu")
    assert abs(float(model[0].weight.std()) / math.sqrt(2 / 512) - 1) < 0.05
    with pytest.raises(GradvetUsageError, match="fan_in"):
        init_kaiming(model, mode="fan_avg")
    with pytest.raises(GradvetUsageError, match="nonlinearity"):
        init_kaiming(model, nonlinearity="swish")


def test_init_marker_makes_it_idempotent_and_force_redoes() -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU())
    assert len(init_kaiming(model)) == 1
    w = model[0].weight.clone()
    assert init_kaiming(model) == []
    assert torch.equal(model[0].weight, w)
    assert len(init_kaiming(model, mode="fan_out")) == 1  # another setting re-initialises
    assert len(init_kaiming(model, mode="fan_out", force=True)) == 1


def test_xavier_uniform_bounds_and_normal_std() -> None:
    model = nn.Sequential(nn.Linear(300, 500), nn.Tanh())
    init_xavier(model)
    bound = (5 / 3) * math.sqrt(6 / (300 + 500))
    w = model[0].weight.detach()
    assert float(w.abs().max()) <= bound
    assert abs(float(w.std()) / (bound / math.sqrt(3)) - 1) < 0.05
    model = nn.Sequential(nn.Linear(300, 500))
    init_xavier(model, distribution="normal", gain=2.0)
    assert abs(float(model[0].weight.std()) / (2.0 * math.sqrt(2 / 800)) - 1) < 0.05


def test_orthogonal_linear_conv_and_gain() -> None:
    model = nn.Sequential(nn.Linear(128, 64), nn.Conv2d(8, 16, 3), nn.ReLU())
    init_orthogonal(model)
    w = model[0].weight.detach()
    torch.testing.assert_close(w @ w.T, torch.eye(64), atol=1e-4, rtol=0)
    c = model[1].weight.reshape(16, -1)  # flattened; followed by ReLU: gain sqrt(2)
    torch.testing.assert_close(c @ c.T, 2 * torch.eye(16), atol=1e-4, rtol=0)


def test_orthogonal_rnn_weight_hh_per_gate() -> None:
    model = SeqNet("LSTM", hidden=16, layers=2, bidirectional=True)
    ih, bias = model.rnn.weight_ih_l0.clone(), model.rnn.bias_hh_l1.clone()
    init_orthogonal(model)
    for name in ("weight_hh_l0", "weight_hh_l1", "weight_hh_l0_reverse", "weight_hh_l1_reverse"):
        blocks = getattr(model.rnn, name).chunk(4)
        for b in blocks:
            torch.testing.assert_close(b @ b.T, torch.eye(16), atol=1e-4, rtol=0)
        whole = getattr(model.rnn, name)
        assert not torch.allclose(whole.T @ whole, torch.eye(16), atol=1e-2)  # per gate, not the stack
    assert torch.equal(model.rnn.weight_ih_l0, ih) and torch.equal(model.rnn.bias_hh_l1, bias)


def test_reset_biases() -> None:
    model = sigmoid_mlp(4, 8, act=nn.ReLU)
    with torch.no_grad():
        model[2].bias.fill_(-5.0)
    keep = model[0].bias.clone()
    changes = reset_biases(model, layers=["2"])
    assert [(c.module, c.what, c.new) for c in changes] == [("2", "bias", "bias=0")]
    assert "mean=-5.000" in changes[0].old
    assert float(model[2].bias.abs().max()) == 0.0 and torch.equal(model[0].bias, keep)
    assert reset_biases(model, layers=["2"]) == []
    with pytest.raises(GradvetUsageError, match="no module named"):
        reset_biases(model, layers=["fc9"])
    with pytest.raises(RemedyNotApplicable, match="bias"):
        reset_biases(nn.Sequential(nn.Linear(3, 3, bias=False)))


# -- LSUV -----------------------------------------------------------------------------
def test_lsuv_unit_output_variance_per_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)).eval()
    x = 3 * torch.randn(128, 16) + 1
    changes = lsuv_init(model, (x, None), tol=0.05)
    assert [c.module for c in changes] == ["0", "2", "4"]
    assert not model.training
    outs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o.var())) for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert all(abs(float(v) - 1) < 0.05 for v in outs), outs


def test_lsuv_restores_buffers_and_modes() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4))
    model[1].eval()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    lsuv_init(model, mlp_batch())
    assert model.training and not model[1].training
    assert all(torch.equal(v, dict(model.named_buffers())[k]) for k, v in buffers.items())


def test_lsuv_needs_a_batch_with_varied_finite_outputs() -> None:
    with pytest.raises(RemedyNotApplicable, match="batch="):
        apply_remedy("init:lsuv", sigmoid_mlp(3, 8))
    with pytest.raises(RemedyNotApplicable, match="constant"):
        lsuv_init(sigmoid_mlp(3, 8), torch.zeros(4, 8))
    with pytest.raises(RemedyNotApplicable, match="non-finite"):
        lsuv_init(sigmoid_mlp(3, 8), torch.full((4, 8), float("nan")))


# -- gate biases ----------------------------------------------------------------------
def test_forget_gate_bias_lstm() -> None:
    model = SeqNet("LSTM", hidden=8, layers=2, bidirectional=True)
    before = {n: p.clone() for n, p in model.rnn.named_parameters()}
    changes = init_forget_gate_bias(model, value=1.5)
    assert [(c.module, c.what) for c in changes] == [("rnn", "bias")]
    h = 8
    for sfx in ("_l0", "_l1", "_l0_reverse", "_l1_reverse"):
        ih, hh = getattr(model.rnn, "bias_ih" + sfx), getattr(model.rnn, "bias_hh" + sfx)
        torch.testing.assert_close(ih[h:2 * h] + hh[h:2 * h], torch.full((h,), 1.5))
        for rest in (slice(0, h), slice(2 * h, 4 * h)):  # input, cell and output gates untouched
            assert torch.equal(ih[rest], before["bias_ih" + sfx][rest])
            assert torch.equal(hh[rest], before["bias_hh" + sfx][rest])
    assert init_forget_gate_bias(model, value=1.5) == []


def test_forget_gate_bias_gru_update_gate() -> None:
    model = SeqNet("GRU", hidden=8)
    r, n = model.rnn.bias_ih_l0[:8].clone(), model.rnn.bias_hh_l0[16:].clone()
    init_forget_gate_bias(model)
    z = model.rnn.bias_ih_l0[8:16] + model.rnn.bias_hh_l0[8:16]
    torch.testing.assert_close(z, torch.ones(8))
    assert torch.equal(model.rnn.bias_ih_l0[:8], r) and torch.equal(model.rnn.bias_hh_l0[16:], n)
    # z -> sigmoid(1) > 1/2: with zero inputs and state the GRU keeps more of h than it writes
    zgate = torch.sigmoid(model.rnn.bias_ih_l0[8:16] + model.rnn.bias_hh_l0[8:16])
    assert bool((zgate > 0.73).all())


def test_gate_remedies_refuse_models_without_lstm_gru() -> None:
    with pytest.raises(RemedyNotApplicable, match="LSTM"):
        init_forget_gate_bias(sigmoid_mlp(3, 8))
    with pytest.raises(RemedyNotApplicable, match="arch:gated_rnn"):
        apply_remedy("init:forget_gate_bias", SeqNet("RNN"))


def test_chrono_lstm_ranges() -> None:
    torch.manual_seed(0)
    model = SeqNet("LSTM", hidden=64)
    chrono_init(model, t_max=50)
    h, ih, hh = 64, model.rnn.bias_ih_l0, model.rnn.bias_hh_l0
    forget, inp = (ih + hh)[h:2 * h], (ih + hh)[:h]
    assert float(forget.min()) >= 0.0 and float(forget.max()) <= math.log(49) + 1e-6
    assert float(forget.max() - forget.min()) > 1.0  # spread over the range, not a constant
    torch.testing.assert_close(inp, -forget)
    assert float(hh[:2 * h].abs().max()) == 0.0


def test_chrono_gru_and_t_max_from_batch() -> None:
    model = SeqNet("GRU", hidden=32)
    changes = apply_remedy("init:chrono", model, inplace=True, batch=seq_batch(t=20)).changes
    assert "log(U(1, 19))" in changes[0].new
    z = (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0)[32:64]
    assert float(z.min()) >= 0.0 and float(z.max()) <= math.log(19) + 1e-6
    with pytest.raises(RemedyNotApplicable, match="t_max"):
        chrono_init(SeqNet("LSTM"))
    with pytest.raises(GradvetUsageError, match="t_max >= 3"):
        chrono_init(SeqNet("LSTM"), t_max=2)


# -- residual: zero init --------------------------------------------------------------
def test_zero_init_residual_torchvision_block_is_identity_plus_relu() -> None:
    model = ResNetLike().eval()
    changes = zero_init_residual(model)
    assert [(c.module, c.what) for c in changes] == [("blocks.0.bn2", "init"), ("blocks.1.bn2", "init")]
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(model.blocks[0](x), F.relu(x))
    assert zero_init_residual(model) == []


def test_zero_init_residual_gradvet_wrapper_and_transformer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Residual(nn.Sequential(nn.ReLU(), nn.Linear(8, 8))), nn.Linear(8, 2))
    zero_init_residual(model)
    x = torch.randn(3, 8)
    torch.testing.assert_close(model[0](x), x)
    # pre-activation branch: identity at init, and the zeroed layer still gets a gradient (plain autograd)
    with torch.enable_grad():
        model(x).sum().backward()
    assert float(model[0].fn[1].weight.grad.norm()) > 0
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
    names = [c.module for c in zero_init_residual(layer)]
    assert names == ["self_attn.out_proj", "linear2"]
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(layer(x), x)


def test_zero_init_residual_refuses_branches_that_end_in_relu() -> None:
    """Zeroing Linear in x + relu(Linear(x)) leaves relu at 0 with gradient 0: the branch would never learn."""
    torch.manual_seed(0)
    model = nn.Sequential(Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU())), nn.Linear(8, 2))
    with pytest.raises(RemedyNotApplicable, match="never learn"):
        zero_init_residual(model)
    # the reason, in plain autograd: zero the layer by hand and its gradient is exactly 0
    with torch.no_grad():
        model[0].fn[0].weight.zero_()
        model[0].fn[0].bias.zero_()
    with torch.enable_grad():
        model(torch.randn(3, 8)).sum().backward()
    assert float(model[0].fn[0].weight.grad.abs().max()) == 0.0


def test_zero_init_residual_by_name_and_refusal() -> None:
    model = sigmoid_mlp(4, 8, act=nn.ReLU)
    with pytest.raises(RemedyNotApplicable, match="blocks="):
        zero_init_residual(model)
    assert [c.module for c in zero_init_residual(nn.ModuleDict({"b": model}), blocks=["b"])] == ["b.6"]


# -- normalisation --------------------------------------------------------------------
def test_insert_batch_norm_structure_and_statistics() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Sequential(nn.Linear(32, 32), nn.ReLU()), nn.Linear(32, 3))
    changes = insert_norm(model, "batch")
    assert [(c.module, c.what) for c in changes] == [("0", "insert"), ("2.0", "insert")]
    assert "'1'" in changes[0].new and "'3.1'" in changes[1].new
    assert [type(m).__name__ for m in model] == ["Linear", "BatchNorm1d", "Tanh", "Sequential", "Linear"]
    assert isinstance(model[3][1], nn.BatchNorm1d) and model[3][1].num_features == 32
    # in train mode the norm's output has zero mean and unit variance per feature
    seen: list[torch.Tensor] = []
    model[1].register_forward_hook(lambda _m, _i, o: seen.append(o))
    model.train()(5 * torch.randn(256, 16) + 3)
    torch.testing.assert_close(seen[0].mean(0), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(seen[0].var(0, unbiased=False), torch.ones(32), atol=1e-3, rtol=0)
    assert insert_norm(model, "batch") == [] and insert_norm(model, "layer") == []


def test_insert_norm_conv_and_named_keys() -> None:
    from collections import OrderedDict

    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 4, 3, padding=1), act=nn.ReLU(), flat=nn.Flatten(),
                                      head=nn.Linear(36 * 4, 3)))
    changes = insert_norm(model, "layer")
    assert list(model._modules) == ["conv", "conv_1", "act", "flat", "head"]
    assert isinstance(model.conv_1, nn.GroupNorm) and model.conv_1.num_groups == 1
    assert "GroupNorm" in changes[0].new and "layer norm" in changes[0].new
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    insert_norm(bn, "batch")
    assert isinstance(bn[1], nn.BatchNorm2d) and bn[1].num_features == 4


def test_insert_rms_norm_linear_only() -> None:
    model = sigmoid_mlp(3, 8)
    insert_norm(model, "rms")
    assert isinstance(model[1], nn.RMSNorm)
    with pytest.warns(UserWarning, match="RMSNorm"), pytest.raises(RemedyNotApplicable, match="norm:layer"):
        insert_norm(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), "rms")


def test_insert_norm_refuses_non_sequential() -> None:
    with pytest.raises(RemedyNotApplicable, match="Sequential"):
        apply_remedy("norm:batch", FunctionalMLP())
    with pytest.raises(GradvetUsageError, match="kind"):
        insert_norm(sigmoid_mlp(3, 8), "weight")


# -- residual wrapping ----------------------------------------------------------------
def test_add_residual_computes_x_plus_f_x_in_pre_activation_order() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 2))
    w = copy.deepcopy(model)
    changes = add_residual(model, branch_init="keep")
    assert [(c.module, c.what) for c in changes] == [("1", "wrap"), ("3", "wrap")]
    assert "'2'" in changes[1].new and "zeroed" not in changes[1].new
    assert [type(m).__name__ for m in model] == ["Linear", "Residual", "Residual", "ReLU", "Linear"]
    assert set(model.state_dict()) == {"0.weight", "0.bias", "1.fn.1.weight", "1.fn.1.bias", "2.fn.1.weight",
                                       "2.fn.1.bias", "4.weight", "4.bias"}
    x = torch.randn(4, 8)
    h = w[0](x)
    h = h + w[2](F.relu(h))
    h = h + w[4](torch.tanh(h))
    torch.testing.assert_close(model(x), w[6](F.relu(h)))
    assert add_residual(model) == []


def test_add_residual_zero_init_starts_as_identity_and_the_zeroed_layers_still_learn() -> None:
    torch.manual_seed(0)
    model = sigmoid_mlp(6, 16, act=nn.ReLU)
    w = copy.deepcopy(model)
    changes = add_residual(model)
    assert all("zeroed" in c.new for c in changes) and len(changes) == 4
    x = torch.randn(5, 16)
    # every block is the identity: the net is the first layer, the last activation and the head
    torch.testing.assert_close(model(x), w[10](F.relu(w[0](x))))
    with torch.enable_grad():
        model(x).sum().backward()
    for block in model[1:5]:
        assert float(block.fn[1].weight.abs().max()) == 0.0
        assert float(block.fn[1].weight.grad.norm()) > 0, "a zeroed branch end still gets a gradient"
    assert zero_init_residual(model) == [], "the branch ends are zero already"


def test_add_residual_only_wraps_equal_width_runs() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Linear(16, 16), nn.ReLU(), nn.Conv1d(1, 1, 1))
    changes = add_residual(model)
    assert [c.module for c in changes] == ["1", "4"]
    assert [type(m).__name__ for m in model] == ["Linear", "Residual", "Residual", "ReLU", "Conv1d"]
    assert [type(m).__name__ for m in model[1].fn] == ["ReLU", "Linear", "BatchNorm1d"]
    assert float(model[1].fn[2].weight.abs().max()) == 0.0, "a branch ending in a norm starts with its scale at 0"
    assert float(model[1].fn[1].weight.abs().max()) > 0
    conv = nn.Sequential(*[m for _ in range(3) for m in (nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())],
                         nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU())
    assert [c.module for c in add_residual(conv)] == ["1", "3"]
    assert conv(torch.randn(1, 4, 6, 6)).shape == (1, 4, 3, 3)


def test_add_residual_refuses_without_a_run() -> None:
    with pytest.raises(RemedyNotApplicable, match="x = x \\+ block"):
        add_residual(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)))


# -- the effect in numbers: gradient ratio first/last layer ---------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_remedies_repair_vanishing_gradients(seed: int) -> None:
    x, y = mlp_batch(n=64, d=64, seed=100 + seed)
    model = sigmoid_mlp(10, 64, seed=seed)
    before = grad_ratio(model, x, y)
    assert before < 1e-3
    relu = apply_remedy("init:kaiming", apply_remedy("activation:relu", model).model).model
    assert 0.1 <= grad_ratio(relu, x, y) <= 10
    assert grad_ratio(apply_remedy("norm:batch", model).model, x, y) > 1e4 * before
    assert grad_ratio(apply_remedy("residual", model).model, x, y) > 1e4 * before


@pytest.mark.parametrize("name", ["_activations", "_domain", "_init", "_gates", "_lsuv", "_norm", "_residual",
                                  "_registry"])
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(f"gradvet.remedies.{name}")
    with torch.enable_grad():
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# -- ReZero ---------------------------------------------------------------------------
def test_rezero_block_is_identity_at_init_and_its_gate_learns_first() -> None:
    torch.manual_seed(0)
    fn = nn.Sequential(nn.ReLU(), nn.Linear(8, 8))
    block = Residual(fn, rezero=True)
    x = torch.randn(5, 8)
    assert torch.equal(block(x), x) and float(block.alpha) == 0.0
    with torch.enable_grad():
        g = torch.randn(5, 8)
        (block(x) * g).sum().backward()
    # plain autograd reference: d/dalpha <g, x + alpha f(x)> = <g, f(x)>; the branch gets alpha * ... = 0
    torch.testing.assert_close(block.alpha.grad, (g * fn(x)).sum())
    assert float(fn[1].weight.grad.abs().max()) == 0.0
    assert "rezero=True" in repr(block)
    with torch.no_grad():
        block.alpha.fill_(0.5)
    torch.testing.assert_close(block(x), x + 0.5 * fn(x))


def test_add_residual_rezero_and_zero_init_of_its_gates() -> None:
    torch.manual_seed(0)
    model = sigmoid_mlp(6, 16, act=nn.ReLU)
    weights = [m.weight.clone() for m in model if isinstance(m, nn.Linear)]
    changes = apply_remedy("residual:rezero", model).changes
    treated = apply_remedy("residual:rezero", model).model
    assert len(changes) == 4 and all("alpha = 0" in c.new for c in changes)
    gates = [m.alpha for m in treated.modules() if isinstance(m, Residual)]
    assert len(gates) == 4 and all(float(a) == 0.0 for a in gates)
    kept = [m.weight for m in treated.modules() if isinstance(m, nn.Linear)]
    assert all(torch.equal(a, b) for a, b in zip(kept, weights)), "ReZero keeps the branch weights"
    with torch.no_grad():
        gates[0].fill_(0.3)
    changes = zero_init_residual(treated)
    assert [(c.module, c.new) for c in changes] == [("1", "alpha=0 (ReZero gate)")]
    assert all(torch.equal(a, b) for a, b in zip(kept, weights)), "the gate is zeroed, not the branch"
    with pytest.raises(ValueError, match="branch_init"):
        add_residual(sigmoid_mlp(4, 8), branch_init="half")


def test_a_rezero_net_is_healthy_at_init() -> None:
    """The branches get exactly no gradient while alpha = 0: blocked by design, not vanished."""
    import gradvet
    from gradvet.zoo import digits

    torch.manual_seed(0)
    model = apply_remedy("residual:rezero", sigmoid_mlp(24, 64, act=nn.ReLU)).model
    with torch.enable_grad():
        report = gradvet.check(model, digits(256), F.cross_entropy)
    assert report.healthy, [(f.kind, f.layers[:3]) for f in report.findings]
