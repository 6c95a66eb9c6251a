"""Monitor configuration and the cost-ordered profiles.

Profiles follow Cockpit's ``economy/business/full`` idea: cheap statistics every
step, expensive per-layer taps on a schedule whose period the profile sets.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Union

Schedule = Callable[[int], bool]


@dataclass(frozen=True)
class MonitorConfig:
    """What the Monitor measures and how often.

    Attributes:
        layer_every: measure per-layer signals (dL/d output, activation statistics,
            per-time-step gradients) every this many optimizer steps; step 0 always.
        update_every: measure update-to-weight ratios every this many steps
            (needs a copy of the weights for the duration of ``optimizer.step``).
        param_every: compute max |g| and the parameter norm every this many steps (the
            gradient L2 norm and the non-finite flag are computed every step).
        count_nonfinite: count non-finite gradient entries per parameter every step
            (one extra read of each gradient); otherwise only on layer steps.
        time_profile: record the gradient reaching each time step of recurrent layers.
        saturation_threshold: a unit counts as saturated where its activation's
            derivative is below this fraction of the derivative's maximum.
        flush_every: move device buffers to the host and hand them to the writer
            every this many steps (the only deliberate host sync of the hot path).
        flush_seconds: also flush when this much wall time has passed since the
            last flush (checked on the host only, at ``step``).
    """

    layer_every: int = 50  # per-layer taps period (steps)
    update_every: int = 50  # update/weight ratio period (steps)
    param_every: int = 1  # max |g| and parameter-norm period (steps); the L2 norm is every step
    count_nonfinite: bool = True  # per-parameter non-finite counts every step
    time_profile: bool = True  # per-time-step gradients of RNN/LSTM/GRU inputs
    saturation_threshold: float = 0.1  # fraction of the max derivative
    flush_every: int = 100  # steps between host flushes
    flush_seconds: float = 10.0  # wall-clock bound on record loss after a crash

    def __post_init__(self) -> None:
        for name in ("layer_every", "update_every", "param_every", "flush_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MonitorConfig.{name} must be an int >= 1, got {value!r}")
        if not 0.0 < self.saturation_threshold < 1.0:
            raise ValueError(
                "MonitorConfig.saturation_threshold must lie in (0, 1), "
                f"got {self.saturation_threshold!r}"
            )
        if not self.flush_seconds > 0:
            raise ValueError(f"MonitorConfig.flush_seconds must be > 0, got {self.flush_seconds!r}")

    def replace(self, **changes: object) -> MonitorConfig:
        """Return a copy with ``changes`` applied (validated).

        Raises:
            TypeError: a name in ``changes`` is not a field (the message lists the fields).
        """
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise TypeError(
                f"unknown MonitorConfig field {unknown[0]!r}; the fields are "
                f"{', '.join(self.__dataclass_fields__)}"
            )
        return replace(self, **changes)  # type: ignore[arg-type]


#: Profiles ordered by cost. ``default`` is ``economy``.
PROFILES: dict[str, MonitorConfig] = {
    "economy": MonitorConfig(layer_every=50, update_every=50, param_every=10, count_nonfinite=False),
    "business": MonitorConfig(layer_every=10, update_every=10, count_nonfinite=True),
    "full": MonitorConfig(layer_every=1, update_every=1, count_nonfinite=True),
}
PROFILES["default"] = PROFILES["economy"]

ProfileLike = Union[str, MonitorConfig, None]


def resolve_profile(profile: ProfileLike) -> MonitorConfig:
    """Turn a profile name or config into a :class:`MonitorConfig`.

    Raises:
        ValueError: for an unknown profile name.
        TypeError: for anything that is neither a name nor a MonitorConfig.
    """
    if profile is None:
        return PROFILES["default"]
    if isinstance(profile, MonitorConfig):
        return profile
    if isinstance(profile, str):
        try:
            return PROFILES[profile]
        except KeyError:
            raise ValueError(
                f"unknown profile {profile!r}; choose one of {sorted(PROFILES)} "
                "or pass a gradvet.MonitorConfig(...)"
            ) from None
    raise TypeError(
        f"profile must be a name like 'economy' or a gradvet.MonitorConfig, got {type(profile).__name__}"
    )
