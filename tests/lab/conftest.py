"""Shared fixtures: one short monitored run with every kind of layer, and one quick lab."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import gradvet
from gradvet.data import digits

# Tiny models: intra-op threads only contend on a 2-core runner.
torch.set_num_threads(1)


class Mixed(nn.Module):
    """An LSTM over a sequence next to an MLP over a digit image: recurrent, sigmoid and ReLU layers."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(2, 16, batch_first=True)
        self.fc1, self.act1 = nn.Linear(16 + 64, 64), nn.Sigmoid()
        self.fc2, self.act2 = nn.Linear(64, 64), nn.ReLU()
        self.head = nn.Linear(64, 10)

    def forward(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        img, seq = x
        h = self.rnn(seq)[0][:, -1]
        return self.head(self.act2(self.fc2(self.act1(self.fc1(torch.cat([img, h], 1))))))


def record_mixed(path: Path, steps: int = 12, **monitor_kwargs: object) -> Path:
    """Train :class:`Mixed` for ``steps`` SGD steps under a full-profile Monitor recording to ``path``."""
    torch.manual_seed(0)
    data, gen = digits(), torch.Generator().manual_seed(0)
    model = Mixed()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = {"profile": "full", **monitor_kwargs}
    with gradvet.Monitor(model, optimizer=opt, record=path, **kwargs) as monitor:  # type: ignore[arg-type]
        for _ in range(steps):
            x, y = data.batch(32, gen)
            seq = torch.randn(32, 8, 2, generator=gen)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model((x, seq)), y)
            loss.backward()
            monitor.step(loss)
            opt.step()
    return path


@pytest.fixture(scope="session")
def mixed_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_mixed(tmp_path_factory.mktemp("mixed") / "mixed.gradvet")


@pytest.fixture(scope="session")
def quick_lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    """The whole quick lab, run once: ``(index.html, results, wall seconds)``."""
    from gradvet.lab import run_lab

    out = tmp_path_factory.mktemp("lab")
    started = time.perf_counter()
    index = run_lab(out, quick=True, seed=0)
    wall = time.perf_counter() - started
    return index, json.loads((out / "results.json").read_text()), wall
