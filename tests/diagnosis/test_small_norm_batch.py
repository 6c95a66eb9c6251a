"""A check batch too small for BatchNorm: the growth it reads is partly the batch's, and the finding says so.

Found on transformers' LeViT (tests/diagnosis/test_levit_growth.py): with 2 images at 64 px its last
BatchNorms normalise 2 values per channel and the gradient norm at init is 1.5e13; with 8 images, 242.
The taps record, on the structure step, how many values per channel each BatchNorm's batch statistics
rest on (``graph.batch_values``); the trunk rule's exploding finding puts ``small_batch`` first among
its causes when some rest on fewer than 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import gradvet
from gradvet.diagnosis._trunk import SMALL_NORM_BATCH


def _resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


def _batch(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, 32, 32, generator=gen), torch.randint(0, 10, (b,), generator=gen)


def test_values_per_channel_match_a_plain_count(tmp_path) -> None:
    model = _resnet18()
    x, y = _batch(2)
    want: dict[str, int] = {}

    def count(name: str):
        def hook(m: nn.Module, a: object, out: torch.Tensor) -> None:
            want[name] = min(want.get(name, 1 << 62), out.numel() // out.shape[1])
        return hook

    hooks = [m.register_forward_hook(count(n)) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    model(x)
    for h in hooks:
        h.remove()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with gradvet.Monitor(model, optimizer=opt, profile="full", record=tmp_path / "r.gvrec") as mon:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        mon.step(loss)
    run = gradvet.record.load(tmp_path / "r.gvrec")
    got = {layer["name"]: layer["graph"]["batch_values"] for layer in run.layers
           if "batch_values" in (layer.get("graph") or {})}
    assert got == want
    assert want["layer4.1.bn2"] == 2 and want["bn1"] == 2 * 16 * 16  # a 1x1 map at the end, 16x16 at the stem


def test_small_batch_leads_the_causes_and_a_larger_batch_reads_no_growth() -> None:
    small = gradvet.check(_resnet18(), _batch(2), F.cross_entropy)
    grow = [f for f in small.findings if f.kind == "exploding_gradients"]
    assert len(grow) == 1 and grow[0].severity == "info"
    cause = grow[0].causes[0]
    assert cause.id == "small_batch"
    assert "2 at 'layer4." in cause.reason and f"fewer than {SMALL_NORM_BATCH}" in cause.reason
    large = gradvet.check(_resnet18(), _batch(16), F.cross_entropy)
    assert not [c for f in large.findings for c in f.causes if c.id == "small_batch"]
    assert not [f for f in large.findings if f.kind == "exploding_gradients"]


def test_running_statistics_are_not_counted() -> None:
    model = _resnet18().eval()  # running statistics: the batch does not enter the normalisation
    x, y = _batch(2)
    with gradvet.Monitor(model, profile="full") as mon:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        mon.step(loss)
    assert not [layer for layer in mon.run.layers if "batch_values" in (layer.get("graph") or {})]
