"""Healthy corpus architectures trained under the default profile (AdamW lr 1e-3, 60 steps on their
batch, ``bench/train_sweep.py``) that got a warning before, each checked against plain PyTorch:

- SqueezeBERT's pooler and XLNet's ``mask_emb`` never get a gradient (the loss does not use them):
  unused, not stalled (an ``info`` names them);
- torchvision Swin-V2's ``features.5.3`` gets exactly no gradient on step 0 (stochastic depth drops
  its branch for the whole batch), which was one of the economy profile's two update readings;
- torchvision's ViT reads a vanishing trunk only once its loss has fallen: its zero-initialised head
  gives no reading at step 0, the trunk is flat at step 1, and the drop grows as the net fits its batch;
- the DCGAN discriminator's output sigmoid is saturated because the net fits its labels (loss 1e-7).

MobileBERT's stalled attention is true and stays reported: its query/key gradients sit below Adam's eps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradvet
from gradvet.corpus import call

from ._training import adamw, build, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _train(case_id: str, steps: int = 60, each=None):
    """AdamW (lr 1e-3) under a default-profile Monitor; ``each(step, model, loss)`` runs after backward."""
    model, losses, mon = train(case_id, adamw, steps, after_backward=each)
    return model, losses, mon.report()


@pytest.mark.parametrize("case_id, unused", [
    ("transformers/squeezebert", "transformer.pooler.dense"),
    ("transformers/xlnet", "transformer.mask_emb"),
])
def test_parameters_the_loss_never_uses_are_not_stalled(case_id: str, unused: str) -> None:
    got = []

    def each(step, model, loss):
        got.extend(p.grad is not None and bool(p.grad.abs().sum() > 0)
                   for n, p in model.named_parameters() if n.startswith(unused))

    _, losses, report = _train(case_id, each=each)
    assert got and not any(got)  # plain PyTorch: never a non-zero gradient, at any step
    assert losses[-1] < 0.5 * losses[0]  # and the net learns
    assert "stalled_layers" not in report.kinds()
    (info,) = [f for f in report.findings if f.kind == "stalled_layers"]
    assert info.severity == "info" and any(n.startswith(unused) for n in info.data["unused"])


def test_swin_v2_block_without_gradient_on_a_measured_step_is_not_stalled() -> None:
    zero_at = {}

    def each(step, model, loss):
        if step in (0, 50):  # the economy profile's update steps
            g = model.features[5][3].norm1.weight.grad
            zero_at[step] = bool(g is not None and g.abs().max() == 0)

    _, losses, report = _train("torchvision/swin_v2_t", each=each)
    # stochastic depth dropped the block's branch for both samples on step 0: no gradient asked it to move
    assert zero_at == {0: True, 50: False}
    assert "stalled_layers" not in report.kinds()


def _vit_signal(state: dict, x, y, loss_fn) -> float:
    """log10 of ||dL/dx * x|| at the input of the first block's ln_1 over that at the head's input, for a
    fresh ViT holding ``state`` (plain autograd, no Monitor)."""
    model, _, _ = build("torchvision/vit_tiny")
    model.load_state_dict(state)
    seen = {}

    def keep(name):
        def hook(_m, inputs):
            inputs[0].retain_grad()
            seen[name] = inputs[0]
        return hook

    model.encoder.layers[0].ln_1.register_forward_pre_hook(keep("first"))
    model.heads.head.register_forward_pre_hook(keep("head"))
    loss_fn(model(x), y).backward()
    s = {k: float((v.grad * v).norm()) for k, v in seen.items()}
    return float(np.log10(s["first"] / s["head"]))


def test_vit_fitting_its_batch_is_not_vanishing() -> None:
    model, (x, y), loss_fn = build("torchvision/vit_tiny")
    assert float(model.heads.head.weight.abs().max()) == 0.0  # zero head: no trunk reading at step 0
    states = {}

    def each(step, model, loss):
        if step in (1, 50):  # before opt.step(): the weights this step's forward read
            states[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    _, losses, report = _train("torchvision/vit_tiny", each=each)
    signal = {k: _vit_signal(v, x, y, loss_fn) for k, v in states.items()}
    # plain autograd: flat early, 1/100 of the head's only late, when the loss has fallen 3x
    assert signal[1] > -1.0 and signal[50] < -2.0
    assert losses[50] < 0.5 * losses[0]
    assert "vanishing_gradients" not in report.kinds()


def test_fit_discriminator_output_sigmoid_is_not_saturated() -> None:
    model, losses, report = _train("torch/dcgan_discriminator")
    _, (x, _), _ = build("torch/dcgan_discriminator")
    with torch.no_grad():
        p = model(x).flatten()  # the Monitor's hooks are gone
    assert float((p * (1 - p) < 0.1 * 0.25).float().mean()) >= 0.5  # saturated: sigmoid' < 10% of its max
    assert losses[-1] < 1e-3 * losses[0]  # because the net fits its labels
    assert "saturated_units" not in report.kinds()
    (info,) = [f for f in report.findings if f.kind == "saturated_units"]
    assert info.severity == "info" and info.data.get("output") and "main.12" in info.layers


def test_mobilebert_stalled_attention_is_true_and_reported() -> None:
    grads, ratios, moved = [], [], []
    model, (x, y), loss_fn = build("transformers/mobilebert")
    q = model.mobilebert.encoder.layer[0].attention.self.query.weight
    v = model.mobilebert.encoder.layer[0].attention.self.value.weight
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with gradvet.Monitor(model, optimizer=opt) as mon:
        for _ in range(60):
            opt.zero_grad()
            loss = loss_fn(call(model, x), y)
            loss.backward()
            mon.step(loss)
            before, v0 = q.detach().clone(), v.detach().clone()
            grads.append(float(q.grad.abs().max()))
            opt.step()
            ratios.append(float((q.detach() - before).norm() / before.norm()))
            moved.append(float((v.detach() - v0).norm() / v0.norm()))
    report = mon.report()
    # plain PyTorch: the query's gradient stays below Adam's eps (1e-8), so its update is little more than
    # the weight decay (lr * weight_decay = 1e-5 of its norm), while the value beside it moves 1e-3..5e-2
    assert max(grads) < 1e-9
    assert max(ratios) < 4e-5 and min(ratios) > 0.9e-5
    assert np.median(moved) > 100 * np.median(ratios)
    f = report.finding("stalled_layers")
    assert f is not None and f.severity == "warning"
    assert "mobilebert.encoder.layer.0.attention.self.key" in f.layers
