"""Dead units, on models other people wrote (held-out sweep: timm's NFNet got `dead_units (error)` at
its own init). Two causes, each against a plain-PyTorch reference:

- the unit axis of an activation fed through a parameter-free module (timm's SE holds
  ``bn = nn.Identity()`` between its 1x1 conv and the ReLU) was read from that module and came out as the
  last axis, so the 64 channels of a ``[B, 64, 1, 1]`` map counted as one unit;
- units whose producer outputs exactly zero although its weights are not zero get no input at all (NFNet
  zero-initialises the last conv of each block, so its SE sees zeros until that conv learns): they are
  not dead. A producer with zero weights is dead, and still reported.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet


class SE(nn.Module):
    def __init__(self, c: int, r: int, zero_last: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.last = nn.Conv2d(c, c, 1)
        if zero_last:
            nn.init.zeros_(self.last.weight)
            nn.init.zeros_(self.last.bias)
        self.fc1, self.bn, self.act = nn.Conv2d(c, r, 1), nn.Identity(), nn.ReLU(inplace=True)
        nn.init.zeros_(self.fc1.bias)
        self.fc2, self.gate = nn.Conv2d(r, c, 1), nn.Sigmoid()
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        h = self.last(torch.relu(self.conv(x)))
        s = self.gate(self.fc2(self.act(self.bn(self.fc1(h.mean((2, 3), keepdim=True))))))
        return self.head((h * s + self.conv(x)).mean((2, 3)))


def _batch(n: int):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def _monitor(model: nn.Module, batch):
    x, y = batch
    with gradvet.Monitor(model, profile="full") as mon:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        mon.step(loss)
    return mon


def test_units_behind_an_identity_are_the_channels() -> None:
    torch.manual_seed(0)
    model = SE(16, 8, zero_last=False)
    batch = _batch(32)
    mon = _monitor(model, batch)
    run = mon.load()
    act = next(x for x in run.ordered_layers() if x["name"] == "act")
    assert act["graph"]["per_unit"] == 32  # one value per sample for each of the 8 channels
    # reference: the dead fraction over the 8 channels, by plain autograd-free recomputation
    with torch.no_grad():
        h = model.last(torch.relu(model.conv(batch[0])))
        a = torch.relu(model.fc1(h.mean((2, 3), keepdim=True)))
    want = float((a.amax(dim=(0, 2, 3)) == 0).float().mean())
    got = float(run.get("layer/dead_frac").values[0, act["index"]])
    assert got == pytest.approx(want)


def test_a_silent_input_from_a_zero_initialised_layer_is_not_dead() -> None:
    torch.manual_seed(0)
    model = SE(16, 8, zero_last=True)
    batch = _batch(32)
    with torch.no_grad():  # reference: every unit of the SE is off on every sample, because its input is 0
        h = model.last(torch.relu(model.conv(batch[0])))
        assert (h == 0).all()
        assert (torch.relu(model.fc1(h.mean((2, 3), keepdim=True))) == 0).all()
    assert model.fc1.weight.norm() > 0
    report = _monitor(model, batch).report()
    assert "dead_units" not in report.kinds()


def test_a_zero_weight_producer_is_still_dead() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 4, (64,), generator=g)
    with gradvet.Monitor(model, profile="full") as mon:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        mon.step(loss)
    (f,) = [f for f in mon.report().findings if f.kind == "dead_units"]
    assert f.severity == "error" and f.data["dead_frac"]["3"] == 1.0


def test_timm_nfnet_at_its_own_init_has_no_dead_units() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("nfnet_l0", pretrained=False, num_classes=10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    report = gradvet.check(model, (x, y), F.cross_entropy)
    assert report.healthy, [(f.kind, f.evidence[:200]) for f in report.findings]
