"""The record keeps each parameter's optimizer settings (lr, eps, weight decay, momentum, betas), read back
from a record on disk and compared with the optimizer's own param groups."""

from __future__ import annotations

import torch
from torch import nn

import gradvet
from gradvet.record import load


def _train(tmp_path, make_opt):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = make_opt(model)
    path = tmp_path / "run.gvrec"
    with gradvet.Monitor(model, optimizer=opt, record=path) as mon:
        for _ in range(2):
            opt.zero_grad()
            loss = model(torch.randn(5, 4)).square().mean()
            loss.backward()
            mon.step(loss)
            opt.step()
    return model, opt, load(path)


def test_adamw_groups_recorded_per_parameter(tmp_path):
    def make(model):
        return torch.optim.AdamW([
            {"params": model[0].parameters(), "lr": 1e-3, "eps": 1e-6, "weight_decay": 0.1},
            {"params": model[2].parameters(), "lr": 3e-4, "betas": (0.8, 0.95)},
        ])

    model, opt, run = _train(tmp_path, make)
    by_name = {p["name"]: p for p in run.params}
    for group in opt.param_groups:
        for p in group["params"]:
            name = next(n for n, q in model.named_parameters() if q is p)
            rec = by_name[name]
            assert rec["lr"] == group["lr"]
            got = rec["optimizer"]
            assert got["eps"] == group["eps"] and got["weight_decay"] == group["weight_decay"]
            assert (got["beta1"], got["beta2"]) == tuple(group["betas"])
            assert "momentum" not in got  # AdamW has none


def test_sgd_settings_and_a_tensor_lr(tmp_path):
    model, opt, run = _train(tmp_path, lambda m: torch.optim.SGD(m.parameters(), lr=torch.tensor(0.05),
                                                                  momentum=0.9, weight_decay=1e-4))
    for p in run.params:
        assert abs(p["lr"] - 0.05) < 1e-7
        assert p["optimizer"] == {"weight_decay": 1e-4, "momentum": 0.9}


def test_no_optimizer_records_no_settings(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    with gradvet.Monitor(model) as mon:
        model(torch.randn(2, 3)).sum().backward()
        mon.step()
    assert all(p["lr"] is None and p["optimizer"] == {} for p in mon.load().params)
