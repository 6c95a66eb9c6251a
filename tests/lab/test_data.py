"""gradvet.data: digits split and the adding problem, checked against direct recomputation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradvet.data import ADDING_BASELINE_MSE, adding_problem, digits, temporal_order


def test_digits_split_is_fixed_standardised_and_stratified() -> None:
    d = digits()
    assert d.x_train.shape == (1437, 64) and d.x_test.shape == (360, 64)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert torch.equal(d.x_train, digits().x_train)  # same split every call
    varying = d.x_train.std(0) > 1e-3
    assert torch.allclose(d.x_train.mean(0), torch.zeros(64), atol=1e-5)
    assert torch.allclose(d.x_train.std(0)[varying], torch.ones(int(varying.sum())), atol=1e-4)
    assert torch.isfinite(d.x_test).all() and d.x_test.abs().max() < 100  # no divide-by-~0 blow-up
    counts = torch.bincount(d.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 360 / 10 each, +-1


def test_digits_batch_is_seeded() -> None:
    d = digits()
    a = d.batch(16, torch.Generator().manual_seed(3))
    b = d.batch(16, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_adding_problem_structure_and_target() -> None:
    x, y = adding_problem(500, 30, seed=1)
    assert x.shape == (500, 30, 2) and y.shape == (500, 1)
    values, marks = x[..., 0].numpy(), x[..., 1].numpy()
    assert np.all(marks.sum(1) == 2)
    for row in marks:
        first, second = np.nonzero(row)[0]
        assert first < 15 <= second
    expected = (values * marks).sum(1, keepdims=True)
    assert np.allclose(y.numpy(), expected)
    assert torch.equal(x, adding_problem(500, 30, seed=1)[0])
    assert not torch.equal(x, adding_problem(500, 30, seed=2)[0])


def test_adding_baseline_is_one_sixth() -> None:
    _, y = adding_problem(200_000, 10, seed=0)
    empirical = float(((y - y.mean()) ** 2).mean())
    assert pytest.approx(1 / 6) == ADDING_BASELINE_MSE
    assert empirical == pytest.approx(ADDING_BASELINE_MSE, rel=0.02)
    assert float(y.mean()) == pytest.approx(1.0, abs=0.01)


def test_temporal_order() -> None:
    x, c = temporal_order(400, 50, seed=0)
    assert x.shape == (400, 50, 6) and c.shape == (400,)
    assert torch.all(x.sum(-1) == 1)
    sym = x.argmax(-1)
    informative = (sym < 2).sum(1)
    assert torch.all(informative == 2)
    for row, cls in zip(sym, c):
        a, b = row[row < 2].tolist()
        assert 2 * a + b == int(cls)


@pytest.mark.parametrize("call", [lambda: adding_problem(0, 10), lambda: adding_problem(4, 1),
                                  lambda: temporal_order(4, 5), lambda: digits(test_fraction=1.5)])
def test_bad_sizes_raise_value_error(call) -> None:
    with pytest.raises(ValueError, match="must"):
        call()
