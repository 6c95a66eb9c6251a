"""Shared fixtures for the measurement-engine suite.

The recomputation tests run on the device named by ``GRADVET_TEST_DEVICE``
(default ``cpu``), like timm's ``TORCH_DEVICE``: ``GRADVET_TEST_DEVICE=cuda pytest tests/foundation``.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

DEVICE = torch.device(os.environ.get("GRADVET_TEST_DEVICE", "cpu"))

# The tensors here are tiny: intra-op threads only spin against each other (a GRU
# backward takes 160 ms with 2 threads on a busy 2-core runner, 1 ms with one).
torch.set_num_threads(1)


@pytest.fixture
def device() -> torch.device:
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("GRADVET_TEST_DEVICE=cuda but CUDA is not available")
    return DEVICE


@pytest.fixture(autouse=True)
def _seed_and_strict_warnings():
    """Fixed seed per test; a gradvet RuntimeWarning (a tap failed) fails the test."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="gradvet:", category=RuntimeWarning)
        yield
