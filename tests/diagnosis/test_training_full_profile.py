"""The ``full`` profile (per-layer taps every step) on the training sweep's cases, each finding checked against
plain PyTorch (``bench/train_sweep.py --profile full --optimizer adamw --steps 40``, docs/diagnosis.md,
"Full-profile and mixed-precision sweeps"): 132 healthy cases, 2 findings, both true, kept here so that no rule
change makes them disappear.

- torchvision SqueezeNet 1.1: dead units (warning) in the last Fire module's squeeze layer and in the class
  convolution's ReLU. Its classifier puts a ReLU on the class maps; AdamW at lr 1e-3 drives 8 of the 10 class
  channels below zero for every input (fresh images too), and a class channel that is off passes no gradient.
  With every class in the batch (20 images, 2 per class) 80% of the class channels die as well and the loss
  stays at 2.3: the units are dead, not idle on the corpus batch's two classes.
- MobileBERT: dead units (warning) in the feed-forward ReLUs of both layers, 73-85% (docs/diagnosis.md found it
  under ``business``; the default profile's median of two readings misses it). 6% of ``ffn.0``'s units are off
  on the batch at init, 85% after 40 steps, and 84% on 1024 fresh tokens.
"""

from __future__ import annotations

import pytest
import torch

from gradvet.corpus import call, images, tokens

from ._training import adamw, build, train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SQUEEZE, CLASSES = "features.9.squeeze_activation", "classifier.2"


def _dead(out: torch.Tensor) -> float:
    """Fraction of channels (dim 1) that are exactly 0 for every sample and position."""
    return float((out.detach().transpose(0, 1).reshape(out.shape[1], -1) == 0).all(dim=1).float().mean())


def test_squeezenet_dead_class_units_under_full_profile_are_true() -> None:
    acts: dict[str, torch.Tensor] = {}
    hooks: list = []
    dead_at: dict[str, list[float]] = {SQUEEZE: [], CLASSES: []}

    def measure(step: int, model: torch.nn.Module, loss: torch.Tensor) -> None:
        if not hooks:  # the forward of step 0 ran before this: hook from step 1 on, the reading is per step
            mods = dict(model.named_modules())
            hooks.extend(mods[n].register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in dead_at)
            return
        for n in dead_at:
            dead_at[n].append(_dead(acts[n]))

    model, losses, mon = train("torchvision/squeezenet1_1", adamw, 40, profile="full", after_backward=measure)
    report = mon.report()
    # plain PyTorch: the loss fits the batch, and on the last steps most class channels and more than half
    # the squeeze units output 0 for every sample of the batch
    assert losses[-1] < 1e-3 * losses[0]
    assert min(dead_at[CLASSES][-3:]) >= 0.7 and min(dead_at[SQUEEZE][-3:]) >= 0.5
    # ... and for 64 fresh images too: dead, not idle on the batch
    with torch.no_grad():
        model(images(1, n=64, size=64)[0])
    assert _dead(acts[CLASSES]) >= 0.7 and _dead(acts[SQUEEZE]) >= 0.5
    for h in hooks:
        h.remove()
    f = next(f for f in report.findings if f.kind == "dead_units")
    assert f.severity == "warning"
    assert {SQUEEZE, CLASSES} <= set(f.layers)
    assert [x.kind for x in report.findings if x.severity in ("warning", "error")] == ["dead_units"]


def test_mobilebert_dead_feed_forward_units_under_full_profile_are_true() -> None:
    name = "mobilebert.encoder.layer.0.ffn.0.intermediate.intermediate_act_fn"
    acts: dict[str, torch.Tensor] = {}
    fracs: list[float] = []

    def dead_units(out: torch.Tensor) -> float:  # units (last dim) that are 0 for every token of the batch
        return float((out.detach().reshape(-1, out.shape[-1]) == 0).all(dim=0).float().mean())

    def measure(step: int, model: torch.nn.Module, loss: torch.Tensor) -> None:
        if step == 0:
            dict(model.named_modules())[name].register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
        else:
            fracs.append(dead_units(acts["a"]))

    model, losses, mon = train("transformers/mobilebert", adamw, 40, profile="full", after_backward=measure)
    report = mon.report()
    # plain PyTorch: few units off on the batch at init, most after training
    init, (x, _), _ = build("transformers/mobilebert")
    dict(init.named_modules())[name].register_forward_hook(lambda m, i, o: acts.__setitem__("init", o))
    with torch.no_grad():
        call(init, x)
    assert dead_units(acts["init"]) < 0.2 and fracs[-1] >= 0.7
    model.eval()
    with torch.no_grad():
        model(input_ids=tokens(1, model.config.vocab_size, n=32, T=32))
    assert dead_units(acts["a"]) >= 0.7  # off on fresh tokens too: dead
    f = next(f for f in report.findings if f.kind == "dead_units")
    assert f.severity == "warning" and name in f.layers
