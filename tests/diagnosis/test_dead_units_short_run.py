"""Units that die during a short run are found by the default profile.

The default profile measures layers at steps 0, 50, 100, ...; the dead rule read the median of the last
three layer steps, so a run of 51-100 steps had [init, step 50] and read their mean: torchvision's
SqueezeNet 1.1 under AdamW lr 1e-3 (0% of its class-map ReLUs dead at init, 80% at step 50, for every
fresh input too) read 40% and was missed, as were MobileBERT's FFN ReLUs and VGG-11. The rule now leaves
the init out of the window once a later layer step exists (dying is sticky; Lu et al., 2019). Here the
same shape on a small net: a ReLU before the logits of 8 classes, trained on a batch that holds 2 of them,
turns the 6 other class units off for every input; a batch that holds all 8 keeps them alive. Under the
full profile a unit off at one step of the last three is still a transient.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvet

STEPS = 60  # layer steps 0 and 50 under the default profile


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU())


def _batch(classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 16, generator=g), torch.arange(32) % classes


def _dead(out: torch.Tensor) -> float:
    """Plain PyTorch: the fraction of units whose output is 0 for every sample."""
    return float((out == 0).all(dim=0).float().mean())


def _train(classes: int, profile: str = "default", steps: int = STEPS, off_at: int = -1):
    """Train under a Monitor; per step, the plain dead fraction of the ReLU's output on the batch.
    ``off_at``: the one step at which the ReLU's input is shifted to -100 (every unit off once)."""
    model, (x, y) = _net(), _batch(classes)
    seen: list[torch.Tensor] = []
    model[3].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    shift = {"at": off_at}
    model[2].register_forward_hook(lambda _m, _i, out: out - 100.0 if len(seen) == shift["at"] else None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with gradvet.Monitor(model, optimizer=opt, profile=profile) as mon:
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            mon.step(loss)
            opt.step()
    dead = [_dead(o) for o in seen]
    with torch.no_grad():  # fresh inputs: the units are off for the data, not just for the batch
        seen.clear()
        model(torch.randn(256, 16, generator=torch.Generator().manual_seed(1)))
    return mon, dead, _dead(seen[0])


def _dead_findings(report: gradvet.Report) -> list[gradvet.Finding]:
    return [f for f in report.findings if f.kind == "dead_units" and f.severity in ("warning", "error")]


def test_units_that_die_in_a_short_run_are_found_by_the_default_profile() -> None:
    mon, dead, fresh = _train(classes=2)
    assert dead[0] == 0.0 and dead[50] == pytest.approx(0.75) and fresh == pytest.approx(0.75)
    run = mon.load()
    s = run.get("layer/dead_frac")
    relu = next(layer for layer in run.ordered_layers() if layer["name"] == "3")
    assert [int(t) for t in s.steps] == [0, 50]
    assert s.values[:, relu["index"]].tolist() == pytest.approx([dead[0], dead[50]])
    found = _dead_findings(mon.report())
    assert len(found) == 1 and "3" in found[0].layers
    assert found[0].data["dead_frac"]["3"] == pytest.approx(dead[50])  # the old window read (0 + 0.75) / 2


def test_units_that_stay_alive_get_no_finding() -> None:
    mon, dead, fresh = _train(classes=8)
    assert max(dead) < 0.5 and fresh < 0.5
    assert not _dead_findings(mon.report())


def test_units_off_at_one_step_of_three_are_a_transient_under_the_full_profile() -> None:
    mon, dead, _ = _train(classes=8, profile="full", steps=20, off_at=18)
    assert dead[18] == 1.0 and max(dead[:18] + dead[19:]) < 0.5
    assert not _dead_findings(mon.report())
