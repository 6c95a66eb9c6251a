"""Activation modules of Hugging Face transformers and timm are read as the torch kind they compute
(issue 14, fault 7: "This model has no activation layers" on a GPT-2 full of GELU modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet
from gradvet.html import write_report
from gradvet.stats._activations import activation_kind

transformers = pytest.importorskip("transformers")
acts = pytest.importorskip("transformers.activations")


@pytest.mark.parametrize("module, kind", [
    (lambda: acts.NewGELUActivation(), "gelu"),
    (lambda: acts.GELUActivation(), "gelu"),
    (lambda: acts.FastGELUActivation(), "gelu"),
    (lambda: acts.SiLUActivation(), "silu"),
    (lambda: acts.ReLUSquaredActivation(), "relu"),
    (lambda: acts.LinearActivation(), None),
])
def test_transformers_activation_classes(module, kind) -> None:
    k = activation_kind(module())
    assert (k.name if k else None) == kind


def test_timm_activation_classes() -> None:
    timm_acts = pytest.importorskip("timm.layers.activations")
    assert activation_kind(timm_acts.GELU()).name == "gelu"
    sig = activation_kind(timm_acts.Sigmoid())
    assert sig.name == "sigmoid" and sig.saturated is not None  # saturation is read for timm's Sigmoid too


def test_a_user_class_with_the_same_name_is_not_taken_for_one() -> None:
    NewGELUActivation = type("NewGELUActivation", (nn.Module,), {"forward": lambda self, x: x * 2})
    assert activation_kind(NewGELUActivation()) is None


def test_gpt2_mlp_gelus_are_measured_and_the_report_says_they_cannot_saturate(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    grads: dict[str, torch.Tensor] = {}  # reference: dL/d output of each GELU module, by tensor hook

    def keep(i: int):
        def hook(module, args, out) -> None:  # returns None: the output is left as it is
            out.register_hook(lambda g: grads.__setitem__(i, g.detach().clone()))
        return hook

    hooks = [model.transformer.h[i].mlp.act.register_forward_hook(keep(i)) for i in range(2)]
    path = tmp_path / "gpt2.gradvet"
    with gradvet.Monitor(model, record=path, profile="full") as mon:
        loss = F.cross_entropy(model(input_ids=ids).logits.flatten(0, 1), ids.flatten())
        loss.backward()
        mon.step(loss)
    for h in hooks:
        h.remove()
    run = gradvet.load(path)
    layers = {x["name"]: x for x in run.ordered_layers()}
    for i in range(2):
        layer = layers[f"transformer.h.{i}.mlp.act"]
        assert layer["activation"] == "gelu"
        recorded = run.get("layer/grad_norm").values[0, layer["index"]]
        np.testing.assert_allclose(recorded, grads[i].norm().item(), rtol=1e-5)
    out = write_report(path, tmp_path / "gpt2.html").read_text()
    assert "found no activation" not in out
    assert "activations, GELU (×2), neither saturate nor die" in out


def test_the_gradient_flow_caption_states_the_span_of_its_own_chart(tmp_path: Path) -> None:
    """The caption said healthy nets stay "within about one decade" next to a healthy GPT-2 spanning three."""
    import re

    from gradvet.html._data import signal_layers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    path = tmp_path / "gpt2.gradvet"
    with gradvet.Monitor(model, record=path, profile="full") as mon:
        loss = F.cross_entropy(model(input_ids=ids).logits.flatten(0, 1), ids.flatten())
        loss.backward()
        mon.step(loss)
    run = gradvet.load(path)
    idx = [x["index"] for x in signal_layers(run)]
    rms = run.get("layer/grad_rms").values[0, idx].astype(np.float64)
    span = np.log10(rms.max() / rms.min())
    assert span > 1.0  # a healthy transformer spans more than a decade
    out = write_report(path, tmp_path / "gpt2.html").read_text()
    assert "within about one decade" not in out
    (shown,) = re.findall(r"this one spans ([0-9.]+) decades", out)
    assert float(shown) == pytest.approx(span, abs=0.051)
