"""Reproduce the layer-wise pretraining and reduced-depth tables of docs/treatment.md.

    python scripts/depth_remedies.py

A 10-layer sigmoid MLP (width 64, PyTorch's default init) on digits: from scratch, after
greedy layer-wise pretraining (gradvet.remedies.pretrain_layerwise, both objectives), and
shortened to 3 Linear layers (gradvet.remedies.shallower). For each: the RMS of
dL/d(first layer output) on 512 training digits by plain autograd, then 300 SGD steps
(momentum 0.9, batch 128, lr 0.02 and 0.1): mean loss of the last 10 steps, test accuracy.
"""

import time

import torch
from torch import nn

from gradvet.data import digits
from gradvet.remedies import pretrain_layerwise, shallower


def stack(depth=10, seed=0):
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth - 1):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def signal(model, x, y):
    out = {}
    h = model[0].register_forward_hook(lambda m, i, o: out.setdefault("o", o).retain_grad())
    nn.functional.cross_entropy(model(x), y).backward()
    h.remove()
    model.zero_grad(set_to_none=True)
    return float(out["o"].grad.pow(2).mean().sqrt())


def fit(model, lr, steps=300):
    d, gen = digits(), torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        x, y = d.batch(128, gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        return sum(losses[-10:]) / 10, float((model(d.x_test).argmax(1) == d.y_test).float().mean())


def variants():
    d = digits()
    yield "from scratch (10 layers)", stack, 0.0
    for method in ("autoencoder", "aux_head"):
        def pre(method=method):
            m = stack()
            pretrain_layerwise(m, d.x_train, d.y_train, method=method)
            return m
        yield f"layer-wise pretraining, {method}", pre, None
    def short():
        m = stack()
        shallower(m, depth=3)
        return m
    yield "shallower (3 layers)", short, 0.0


def main():
    torch.set_num_threads(1)
    d = digits()
    x, y = d.x_train[:512], d.y_train[:512]
    print("| variant | first-layer signal | loss, lr 0.02 | test acc, lr 0.02 | loss, lr 0.1 | test acc, lr 0.1 | "
          "pretraining time |")
    print("|---|---|---|---|---|---|---|")
    for label, make, _ in variants():
        t = time.perf_counter()
        s = signal(make(), x, y)
        t = time.perf_counter() - t
        (l1, a1), (l2, a2) = fit(make(), 0.02), fit(make(), 0.1)
        print(f"| {label} | {s:.1e} | {l1:.3f} | {100 * a1:.0f}% | {l2:.3f} | {100 * a2:.0f}% | "
              f"{t:.1f} s |")


if __name__ == "__main__":
    main()
