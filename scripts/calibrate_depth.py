"""Reproduce the depth calibration table of docs/diagnosis.md.

    python scripts/calibrate_depth.py

For each MLP: att = log10(signal at the first layer / signal at the head) from
gradvet.check at init, then the loss before and after 100 full-batch SGD steps
(lr 0.1) on 512 standardised digits.
"""

import numpy as np
import torch
import torch.nn.functional as F

import gradvet
from gradvet.zoo import digits, mlp


def att(model, X, y):
    rep = gradvet.check(model, (X, y), F.cross_entropy)
    lin = [layer for layer in rep.layers if layer.type == "Linear"]
    return float(np.log10(lin[0].signal_norm / lin[-1].signal_norm))


def train(model, X, y, steps=100, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    return first, loss.item()


def main():
    X, y = digits(512)
    for act, init, norm in [("sigmoid", "default", None), ("sigmoid", "xavier", None), ("tanh", "xavier", None),
                            ("tanh", "default", None), ("relu", "default", None), ("relu", "xavier", None),
                            ("relu", "he", None), ("sigmoid", "default", "batch"), ("sigmoid", "default", "layer")]:
        for depth in (3, 5, 10, 20):
            torch.manual_seed(0)
            model = mlp(depth, act, 64, init=init, norm=norm)
            a = att(model, X, y)
            l0, l1 = train(model, X, y)
            print(f"{act:8s} {init:8s} {str(norm):6s} depth={depth:2d} att={a:7.2f} loss {l0:.3f} -> {l1:.3f}")


if __name__ == "__main__":
    main()
