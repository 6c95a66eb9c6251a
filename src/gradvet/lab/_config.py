"""Sizes of the lab's experiments: ``quick`` (<= 3 minutes on 2 CPU cores) and ``full``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabConfig:
    """How big each experiment is.

    Attributes:
        depths: MLP depths (Linear layers) of the depth x activation x init grid.
        depth_steps: SGD steps per model of that grid.
        cure_depth: depth of the deep sigmoid net that the cures treat.
        cure_steps: SGD steps per cure.
        explode_steps: SGD steps per exploding-gradient run.
        lengths: adding-problem sequence lengths.
        time_steps: Adam steps per recurrent model.
        time_train: training sequences per length.
        dead_steps: SGD steps per dead-unit run.
        dead_biases: initial biases of the dead-unit experiment (one ReLU and one LeakyReLU run each).
    """

    depths: tuple[int, ...] = (2, 5, 10, 20)  # grid depths
    depth_steps: int = 150  # SGD steps per grid cell
    cure_depth: int = 10  # the deep sigmoid net
    cure_steps: int = 300  # SGD steps per cure
    explode_steps: int = 300  # SGD steps per exploding run
    lengths: tuple[int, ...] = (10, 50)  # adding-problem lengths
    time_steps: int = 800  # Adam steps per recurrent model
    time_train: int = 8192  # training sequences per length
    dead_steps: int = 300  # SGD steps per dead-unit run
    dead_biases: tuple[float, ...] = (-3.0,)  # strongly negative initial biases

    @classmethod
    def quick(cls) -> LabConfig:
        """The default: every experiment, small; about 1-2 minutes on 2 cores."""
        return cls()

    @classmethod
    def full(cls) -> LabConfig:
        """More depths, longer sequences, longer training (tens of minutes on 2 cores)."""
        return cls(
            depths=(2, 3, 5, 8, 10, 15, 20, 30),
            depth_steps=500,
            cure_depth=20,
            cure_steps=1500,
            explode_steps=1000,
            lengths=(10, 50, 100, 200),
            time_steps=3000,
            time_train=16384,
            dead_steps=1000,
            dead_biases=(-1.0, -2.0, -3.0),
        )
