"""The healthy twin for `gradvet check examples/healthy.py:factory`: ReLU with He init."""

import torch
from torch import nn


def factory():
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    layers = []
    for _ in range(9):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(64, 10))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return {"model": model, "batch": (X[:256], torch.tensor(y[:256])), "loss_fn": nn.functional.cross_entropy}
