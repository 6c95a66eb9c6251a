"""DDP and FSDP2 on 2 CPU processes (gloo) record what one process records on the global batch."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gradvet
from gradvet import _distributed as D

sys.path.insert(0, str(Path(__file__).parent))  # spawned workers import the same module
import _dist_worker  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference(rnn: bool) -> gradvet.Run:
    model = _dist_worker.make_model(rnn)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = gradvet.Monitor(model, optimizer=opt, profile="full", layer_every=2)
    _dist_worker.train(monitor, model, opt, _dist_worker.make_data(rnn), slice(None))
    assert monitor.run is not None
    return monitor.run


def _spawn(mode: str, rnn: bool, out: Path) -> gradvet.Run:
    torch.multiprocessing.spawn(
        _dist_worker.worker, args=(WORLD, _free_port(), mode, rnn, str(out)), nprocs=WORLD, join=True
    )
    return gradvet.load(out / "run.gradvet")


def _compare(run: gradvet.Run, ref: gradvet.Run) -> None:
    assert run.param_names() == ref.param_names()
    names = [la["name"] for la in run.layers]
    ref_names = [la["name"] for la in ref.layers]
    # FSDP2 renames the root's class (FSDPNet), so a custom root may not be tapped there
    assert set(ref_names) - set(names) <= {""} and set(names) <= set(ref_names)
    cols = [ref_names.index(n) for n in names]
    assert set(run.metrics) == set(ref.metrics)
    for metric in ref.metrics:
        a, b = run.series(metric), ref.series(metric)
        expected = b.values[:, cols] if metric.startswith("layer/") else b.values
        np.testing.assert_array_equal(a.steps, b.steps, err_msg=metric)
        np.testing.assert_allclose(a.values, expected, rtol=2e-5, atol=1e-7, equal_nan=True, err_msg=metric)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode,rnn", [("ddp", True), ("fsdp", False)])
def test_distributed_matches_single_process(tmp_path: Path, mode: str, rnn: bool) -> None:
    ref = _reference(rnn)
    run = _spawn(mode, rnn, tmp_path)
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert not info[0]["gradvet_warnings"] and not info[1]["gradvet_warnings"]
    _compare(run, ref)
    assert run.meta["distributed"]["mode"] == mode and run.meta["distributed"]["world_size"] == WORLD
    # the dead ReLU units are found on the global batch (OR of the ranks' alive masks)
    dead = run.series("layer/dead_frac").values[:, [la["name"] for la in run.layers].index("act1")]
    assert np.all(dead >= 4 / 16)
    if rnn:
        assert run.get("time/rnn") is not None

    assert info[0]["param_names"] == run.param_names()  # DDP's "module." prefix is gone
    gather_name = "all_gather_single" if hasattr(torch.distributed, "all_gather_single") else "all_gather_into_tensor"
    for step, counts in enumerate(info[0]["collectives"]):
        layer_step = step % 2 == 0
        expected = {"all_reduce": 1 + layer_step}  # the loss (async); alive masks + time on layer steps
        gathers = layer_step + (mode == "fsdp") * 2  # layer rows; FSDP: [P,4] stats + [P,2] update norms
        if gathers:
            expected[gather_name] = gathers
        assert counts == expected, (step, counts)


def test_combine_param_stats_sums_squares_not_norms() -> None:
    # a 2-element gradient split over two ranks: [3] and [4]; its norm is 5, not 7
    gathered = torch.tensor([[[3.0, 3.0, 0.0, 1.0]], [[4.0, 4.0, 1.0, 2.0]]])
    out = D.combine_param_stats(gathered, torch.ones(1), count_nonfinite=True)
    torch.testing.assert_close(out, torch.tensor([[5.0, 4.0, 1.0, 5.0**0.5]]))
    # replicated on both ranks (weight 1/2): counted once
    out = D.combine_param_stats(torch.tensor([[[3.0, 3.0, 2.0, 1.0]]] * 2), torch.tensor([0.5]), True)
    torch.testing.assert_close(out, torch.tensor([[3.0, 3.0, 2.0, 1.0]]))


def test_combine_layer_gather_and_vectors_roundtrip() -> None:
    rows = torch.zeros(2, 2, 10, dtype=torch.float64)
    rows[0, 0, :8] = torch.tensor([8.0, 4, 1, 2, 3, 4, 1, 0])
    rows[1, 0, :8] = torch.tensor([8.0, 4, 0, 2, 3, 4, 0, 1])
    rows[0, :, 8:] = torch.tensor([[3.0, -1], [-1, 5]])
    rows[1, :, 8:] = torch.tensor([[3.0, -1], [-1, 2]])
    acc, alive_len, time_len = D.combine_layer_gather(rows, grad_divisor=2.0)
    assert acc[0].tolist() == [4.0, 8, 1, 4, 6, 8, 1, 1]  # squares / W^2, the rest summed
    assert alive_len.tolist() == [3, -1] and time_len.tolist() == [-1, 5]
    vecs = [torch.tensor([1.0, 0, 1]), None]
    flat = D.pack_vectors(vecs, alive_len, torch.device("cpu"))
    back = D.unpack_vectors(flat, alive_len)
    assert back[1] is None and back[0] is not None and back[0].tolist() == [1.0, 0, 1]
    short = D.pack_vectors([None, torch.tensor([1.0, 2.0])], time_len, torch.device("cpu"))
    assert short.tolist() == [1.0, 2.0, 0.0, 0.0, 0.0]  # padded to the longest rank's length


def test_local_param_stats_handles_empty_shards() -> None:
    p = [torch.zeros(0, 3), torch.ones(2)]
    g = [torch.zeros(0, 3), torch.full((2,), 2.0)]
    out = D.local_param_stats(p, g, count_nonfinite=True, device=torch.device("cpu"))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 0.0, 0.0], [8**0.5, 2.0, 0.0, 2**0.5]]))


def test_single_process_is_not_distributed() -> None:
    model = torch.nn.Linear(2, 1)
    assert gradvet.Monitor(model)._dist is None
    with pytest.raises(ValueError, match="init_process_group"):
        gradvet.Monitor(model, distributed="on")
    with pytest.raises(ValueError, match="'auto', 'on', 'off'"):
        gradvet.Monitor(model, distributed="sometimes")

