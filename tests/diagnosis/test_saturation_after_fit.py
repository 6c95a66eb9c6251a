"""Units that saturate only after the net fit its batch are ``info``; saturation from the start stays a warning.

Found on torchvision's MaxViT-T under the full profile (AdamW 1e-3, 40 steps on its corpus batch; the
heavy-case sweep of docs/diagnosis.md): the tanh before its last Linear (``classifier.4``) read 0% saturated
while the loss fell 2.65 -> 0.035 and 88% from step 11 on, at a loss of 7e-4. Re-diagnosing every saved
sweep record (609 runs) changed that one finding and nothing else. Here the same shape on a small net whose
tanh pre-logits are pushed into their tails by memorising 16 samples, against one fed inputs scaled by 20,
saturated from step 0 (Glorot & Bengio, 2010).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import gradvet


def _train(scale: float) -> tuple[list[float], list[float], gradvet.Report]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4))
    x, y = torch.randn(16, 8) * scale, torch.arange(16) % 4
    opt = torch.optim.Adam(model.parameters(), lr=0.2)
    losses, sat = [], []
    with gradvet.Monitor(model, optimizer=opt, profile="full") as mon:
        for _ in range(80):
            opt.zero_grad()
            h = model[1](model[0](x))
            loss = F.cross_entropy(model[2](h), y)
            loss.backward()
            mon.step(loss)
            opt.step()
            losses.append(float(loss.detach()))
            # plain PyTorch: tanh'(a) = 1 - h^2 below 10% of its maximum (1)
            sat.append(float((1 - h.detach() ** 2 < 0.1).float().mean()))
    return losses, sat, mon.report()


def test_saturation_that_comes_after_the_fit_is_info() -> None:
    losses, sat, report = _train(1.0)
    crossed = next(i for i, v in enumerate(sat) if v >= 0.5)
    assert losses[crossed] <= 0.5 * losses[0] and max(sat[:3]) < 0.5 and sat[-1] >= 0.5
    found = [f for f in report.findings if f.kind == "saturated_units"]
    assert [f.severity for f in found] == ["info"] and found[0].data.get("after_fit") is True
    assert found[0].layers and "1" in found[0].layers
    assert report.healthy


def test_saturation_from_the_start_stays_a_warning() -> None:
    losses, sat, report = _train(20.0)
    assert sat[0] >= 0.5 and losses[-1] <= 0.5 * losses[0]  # saturated from step 0, and it still fits
    found = [f for f in report.findings if f.kind == "saturated_units"]
    assert found and found[0].severity in ("warning", "error") and not found[0].data.get("after_fit")
