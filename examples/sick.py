"""A sick model for `gradvet check examples/sick.py:factory`: a 10-layer sigmoid MLP at PyTorch's default init."""

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
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(64, 10))
    return model, (X[:256], torch.tensor(y[:256])), nn.functional.cross_entropy
