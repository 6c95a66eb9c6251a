"""Code shared by the distributed tests: the model, the data, and the per-rank worker.

Kept out of the test module so that ``torch.multiprocessing.spawn`` children import
only this file (and gradvet), not pytest's collection.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import gradvet

GLOBAL_BATCH = 8
STEPS = 4


class Net(nn.Module):
    """GRU (time profile) -> Linear -> ReLU (some units dead) -> Linear -> Tanh -> Linear(1)."""

    def __init__(self, rnn: bool) -> None:
        super().__init__()
        self.rnn = nn.GRU(5, 6, batch_first=True) if rnn else None
        self.fc1 = nn.Linear(6, 16)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(16, 16)
        self.act2 = nn.Tanh()
        self.head = nn.Linear(16, 1)  # dim 0 of size 1: FSDP2 leaves rank 1 an empty shard
        with torch.no_grad():
            self.fc1.bias[:4] = -50.0  # four ReLU units dead on every sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rnn is not None:
            x = self.rnn(x)[0][:, -1]
        return self.head(self.act2(self.fc2(self.act1(self.fc1(x)))))


def make_model(rnn: bool) -> nn.Module:
    torch.manual_seed(0)
    return Net(rnn)


def make_data(rnn: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    shape = (GLOBAL_BATCH, 7, 5) if rnn else (GLOBAL_BATCH, 6)
    return [(torch.randn(shape, generator=g), torch.randn(GLOBAL_BATCH, 1, generator=g)) for _ in range(STEPS)]


def train(monitor: gradvet.Monitor, model: nn.Module, opt: torch.optim.Optimizer, data: list, part: slice) -> None:
    with monitor:
        for x, y in data:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x[part]), y[part])
            loss.backward()
            monitor.step(loss)
            opt.step()


def _count_collectives(counts: dict[str, int]) -> None:
    """Count gradvet's collectives (DDP/FSDP issue theirs from C++, not through these)."""
    import torch.distributed as dist

    names = ("all_reduce", "all_gather_single", "all_gather_into_tensor", "all_gather", "broadcast")
    for name in [n for n in names if hasattr(dist, n)]:
        fn = getattr(dist, name)

        def wrapped(*a: Any, _fn: Any = fn, _name: str = name, **k: Any) -> Any:
            counts[_name] = counts.get(_name, 0) + 1
            return _fn(*a, **k)

        setattr(dist, name, wrapped)


def worker(rank: int, world: int, port: int, mode: str, rnn: bool, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    caught = warnings.catch_warnings(record=True)
    seen = caught.__enter__()
    warnings.simplefilter("always")
    try:
        torch.set_num_threads(1)
        model: nn.Module = make_model(rnn)
        if mode == "ddp":
            wrapped: nn.Module = nn.parallel.DistributedDataParallel(model)
        else:
            from torch.distributed.fsdp import fully_shard

            for m in (model.fc1, model.fc2, model.head):
                fully_shard(m)
            wrapped = fully_shard(model)
        opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
        record = Path(out) / "run.gradvet"
        monitor = gradvet.Monitor(wrapped, optimizer=opt, record=record, profile="full", layer_every=2)
        per_step: list[dict[str, int]] = []
        counts: dict[str, int] = {}
        _count_collectives(counts)
        n = GLOBAL_BATCH // world
        with monitor:
            for x, y in make_data(rnn):
                opt.zero_grad()
                loss = nn.functional.mse_loss(wrapped(x[rank * n : (rank + 1) * n]), y[rank * n : (rank + 1) * n])
                loss.backward()
                counts.clear()
                monitor.step(loss)
                opt.step()
                per_step.append(dict(counts))
            if rank != 0:
                assert monitor._writer is None, "only rank 0 may write the record"
        info = {
            "rank": rank,
            "collectives": per_step,
            "param_names": monitor.param_names,
            "gradvet_warnings": [str(w.message) for w in seen if "gradvet" in str(w.message)],
        }
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(info))
    finally:
        caught.__exit__(None, None, None)
        dist.destroy_process_group()
    # Everything is written. Skip the interpreter's teardown: with torch 2.13 on gloo it aborted
    # (SIGABRT) or hung after destroy_process_group in about 1 run in 8 here, in c10d's threads.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
