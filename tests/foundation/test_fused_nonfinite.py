"""Device-path non-finite counts (one fused pass per chunk of gradients) against a plain count."""

from __future__ import annotations

import pytest
import torch

from gradvet.stats import _params
from gradvet.stats._batch import foreach_grad_sums


def _grads(dtype: torch.dtype) -> list[torch.Tensor]:
    torch.manual_seed(0)
    gs = [torch.randn(7), torch.randn(3, 5), torch.zeros(0), torch.randn(4000), torch.randn(2, 2)]
    gs[1][0, 1], gs[1][2, 4] = float("nan"), float("inf")
    gs[3][:3001] = float("-inf")  # more than a half-precision count holds exactly (2048)
    gs[4].fill_(float("nan"))
    return [g.to(dtype) for g in gs]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("chunk", [1, 64, 1 << 26])
def test_fused_nonfinite_counts_match_isfinite(dtype: torch.dtype, chunk: int, monkeypatch) -> None:
    monkeypatch.setattr(_params, "_COUNT_CHUNK", chunk)  # 1: every gradient a chunk of its own
    gs = _grads(dtype)
    got = _params._fused_nonfinite(gs)
    want = [float((~torch.isfinite(g)).sum()) for g in gs]
    assert got.dtype == torch.float32
    assert got.tolist() == want == [0.0, 2.0, 0.0, 3001.0, 4.0]


def test_param_stats_device_path_counts() -> None:
    # the branch a GPU takes (norms not on the CPU: no host read of them), with CPU gradients
    gs = _grads(torch.float32)
    l2 = torch.stack([torch.linalg.vector_norm(g) for g in gs]).to("meta")
    counts = _params._count_nonfinite(gs, l2)
    assert counts.tolist() == [float((~torch.isfinite(g)).sum()) for g in gs]


def test_held_grad_counts_on_the_device_path(monkeypatch) -> None:
    from gradvet.stats import _layer

    monkeypatch.setattr(_layer, "CPU_SHORTCUTS", False)
    gs = _grads(torch.float16)
    _, counts = foreach_grad_sums(gs, torch.device("cpu"), torch.float16)
    assert [float(c) for c in counts] == [float((~torch.isfinite(g)).sum()) for g in gs]
