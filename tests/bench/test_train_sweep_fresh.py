"""bench/train_sweep.py --fresh: ``redraw`` gives a new batch of the same structure every step.

Shapes, dtypes and nesting kept; floats at the tensor's own mean and std (binary floats stay in {0, 1});
integers in the tensor's own [min, max]; detection targets and bool tensors kept; new values each step,
the same values for the same (seed, step).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

SWEEP = Path(__file__).resolve().parents[2] / "bench" / "train_sweep.py"


def _sweep_module():
    spec = importlib.util.spec_from_file_location("gradvet_bench_train_sweep", SWEEP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 250, (2, 16), generator=g)
    x = {"input_ids": ids, "attention_mask": torch.ones(2, 16, dtype=torch.long),
         "pixel_values": torch.randn(2, 3, 32, 32, generator=g) * 2.0 + 0.5,
         "half": torch.randn(4, 8, generator=g).to(torch.float16),
         "keep": torch.tensor([True, False]), "parts": [torch.randn(3, generator=g), (ids, 7, "text")]}
    y = (torch.randint(0, 10, (64,), generator=g), torch.tensor([1.0, 0.0, 1.0, 0.0]),
         [{"boxes": torch.rand(3, 4), "labels": torch.tensor([1, 2, 3])}])
    return x, y


def _tensors(b):
    if isinstance(b, torch.Tensor):
        return [b]
    if isinstance(b, dict):
        return [t for v in b.values() for t in _tensors(v)]
    if isinstance(b, (tuple, list)):
        return [t for v in b for t in _tensors(v)]
    return []


def test_structure_shapes_dtypes_and_ranges_are_kept():
    sweep = _sweep_module()
    x, y = _batch()
    nx, ny = sweep.redraw((x, y), seed=0, step=1)
    assert set(nx) == set(x) and isinstance(ny, tuple) and isinstance(nx["parts"], list)
    assert nx["parts"][1][1:] == (7, "text")
    for old, new in zip(_tensors((x, y)), _tensors((nx, ny))):
        assert new.shape == old.shape and new.dtype == old.dtype
        if not old.is_floating_point():
            assert int(new.min()) >= int(old.min()) and int(new.max()) <= int(old.max())
    assert torch.equal(nx["attention_mask"], x["attention_mask"])  # min == max: all ones still
    assert nx["keep"] is x["keep"]  # bool: kept
    assert ny[2][0] is y[2][0]  # a detection target: kept
    assert set(ny[1].tolist()) <= {0.0, 1.0}  # binary float targets stay binary
    assert nx["parts"][1][0] is nx["input_ids"]  # one tensor met twice: one new tensor
    assert int(ny[0].min()) < 5 < int(ny[0].max())  # 64 labels in 0..9 spread over the range
    pv = nx["pixel_values"]
    assert abs(float(pv.mean()) - float(x["pixel_values"].mean())) < 0.15
    assert abs(float(pv.std()) / float(x["pixel_values"].std()) - 1) < 0.1


def test_new_values_each_step_same_values_for_the_same_seed():
    sweep = _sweep_module()
    batch = _batch()
    a, b, a2 = (sweep.redraw(batch, seed=0, step=s) for s in (0, 1, 0))
    other_seed = sweep.redraw(batch, seed=1, step=0)
    for ta, tb, ta2, tc, old in zip(_tensors(a), _tensors(b), _tensors(a2), _tensors(other_seed), _tensors(batch)):
        assert torch.equal(ta, ta2)
        if old.dtype == torch.bool or bool((old == old.flatten()[0]).all()) or old is batch[1][2][0]["boxes"] \
                or old is batch[1][2][0]["labels"]:
            continue  # kept as is, or a constant tensor (nothing to vary)
        assert not torch.equal(ta, tb) and not torch.equal(ta, tc)
        assert not torch.equal(ta, old)
