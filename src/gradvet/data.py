"""Small, seeded datasets for the demo and the lab: no downloads.

- :func:`digits`: scikit-learn's 8x8 handwritten digits (1,797 images shipped inside
  scikit-learn), standardised, with a fixed stratified train/test split.
- :func:`adding_problem`: Hochreiter & Schmidhuber (1997), "Long Short-Term Memory",
  experiment 4: a sequence of (value, marker) pairs; the target is the sum of the two
  marked values, so a model must carry information across the whole sequence.
- :func:`temporal_order`: Hochreiter & Schmidhuber (1997), experiment 6 (simplified):
  classify the order of two marked symbols placed far apart in noise.

Every generator takes a ``seed`` and uses its own ``torch.Generator``, so results do
not depend on (or disturb) the global RNG.

Example:
    >>> from gradvet.data import digits, adding_problem, ADDING_BASELINE_MSE
    >>> d = digits()
    >>> tuple(d.x_train.shape), d.n_classes
    ((1437, 64), 10)
    >>> x, y = adding_problem(4, 20, seed=0)
    >>> tuple(x.shape), tuple(y.shape)
    ((4, 20, 2), (4, 1))
    >>> round(ADDING_BASELINE_MSE, 4)
    0.1667
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

#: MSE of always predicting the mean target (1.0) on the adding problem: the target
#: is the sum of two independent U(0, 1) values, whose variance is 2 * 1/12 = 1/6.
ADDING_BASELINE_MSE = 2.0 / 12.0


@dataclass(frozen=True)
class Split:
    """A classification dataset split into train and test tensors.

    Attributes:
        x_train: ``[n_train, features]`` float32, standardised with train statistics.
        y_train: ``[n_train]`` int64 class labels.
        x_test: ``[n_test, features]`` float32, standardised with train statistics.
        y_test: ``[n_test]`` int64 class labels.
        n_classes: number of classes.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int

    def batch(self, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A random training batch of ``size`` examples drawn with ``generator``."""
        idx = torch.randint(0, len(self.x_train), (size,), generator=generator)
        return self.x_train[idx], self.y_train[idx]


@lru_cache(maxsize=4)
def _digits_arrays(test_fraction: float, seed: int) -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    x_tr_t, x_te_t = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(x_te, dtype=torch.float32)
    # Pixels that are constant in the training images (the border) have std 0: divide
    # those by 1, not by ~0, or a rare non-zero test pixel becomes a huge input.
    mean, std = x_tr_t.mean(0), x_tr_t.std(0)
    std = torch.where(std > 1e-3, std, torch.ones_like(std))
    return Split(
        x_train=(x_tr_t - mean) / std,
        y_train=torch.tensor(y_tr, dtype=torch.int64),
        x_test=(x_te_t - mean) / std,
        y_test=torch.tensor(y_te, dtype=torch.int64),
        n_classes=10,
    )


def digits(test_fraction: float = 0.2, seed: int = 0) -> Split:
    """scikit-learn's digits as standardised float tensors with a fixed, stratified split.

    Args:
        test_fraction: share of the 1,797 images held out for testing.
        seed: seed of the split (the default gives the same split everywhere).

    Returns:
        A :class:`Split` (64 features, 10 classes).

    Raises:
        ValueError: ``test_fraction`` is not in (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits: test_fraction must lie in (0, 1), got {test_fraction!r}")
    return _digits_arrays(float(test_fraction), int(seed))


def _check_sizes(fn: str, n: int, length: int, minimum: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{fn}: n must be an int >= 1, got {n!r}")
    if not isinstance(length, int) or length < minimum:
        raise ValueError(f"{fn}: length must be an int >= {minimum}, got {length!r}")


def adding_problem(n: int, length: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The adding problem of Hochreiter & Schmidhuber (1997).

    Each sequence has ``length`` steps of ``(value, marker)``: values are U(0, 1); the
    marker is 1 at exactly two steps, one in the first half and one in the second half,
    and 0 elsewhere. The target is the sum of the two marked values, so the first marked
    value must be remembered for up to ``length`` steps. Predicting the mean target
    scores :data:`ADDING_BASELINE_MSE` (1/6).

    Args:
        n: number of sequences.
        length: sequence length T (>= 2).
        seed: seed of this draw.

    Returns:
        ``(inputs [n, T, 2], targets [n, 1])`` float32, batch first.

    Raises:
        ValueError: ``n < 1`` or ``length < 2``.
    """
    _check_sizes("adding_problem", n, length, 2)
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, length, generator=g)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=g)
    second = torch.randint(half, length, (n,), generator=g)
    marks = torch.zeros(n, length)
    rows = torch.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    return torch.stack([values, marks], dim=-1), (values * marks).sum(1, keepdim=True)


def temporal_order(n: int, length: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A simplified temporal-order problem (Hochreiter & Schmidhuber, 1997, experiment 6).

    Each sequence is ``length`` one-hot symbols over an alphabet of 6: four noise
    symbols, and two informative symbols X and Y written at one position in the first
    10% and one in the second half. The class (0..3) is the ordered pair of informative
    symbols (XX, XY, YX, YY); chance accuracy is 25%.

    Args:
        n: number of sequences.
        length: sequence length T (>= 10).
        seed: seed of this draw.

    Returns:
        ``(inputs [n, T, 6] float32, classes [n] int64)``.

    Raises:
        ValueError: ``n < 1`` or ``length < 10``.
    """
    _check_sizes("temporal_order", n, length, 10)
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(2, 6, (n, length), generator=g)
    first = torch.randint(0, max(1, length // 10), (n,), generator=g)
    second = torch.randint(length // 2, length, (n,), generator=g)
    a = torch.randint(0, 2, (n,), generator=g)
    b = torch.randint(0, 2, (n,), generator=g)
    rows = torch.arange(n)
    symbols[rows, first] = a
    symbols[rows, second] = b
    return torch.nn.functional.one_hot(symbols, 6).float(), 2 * a + b
