"""The vocabulary of a diagnosis: findings, their causes and the remedies they prescribe.

These are plain frozen dataclasses so that a finding can be rendered, serialised
to JSON, compared in tests and stored without carrying live model objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: Public vocabulary of finding kinds (stable API).
KINDS = (
    "vanishing_gradients",
    "exploding_gradients",
    "dead_units",
    "saturated_units",
    "nonfinite_gradients",
    "stalled_layers",
)

#: Severities, least to most severe. ``Report.healthy`` is false on warning or error.
SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Cause:
    """A likely cause of a finding, with the measurement or structure that supports it.

    Attributes:
        id: short stable identifier, e.g. ``"saturating_activation"``.
        reason: one sentence that cites the measured numbers.
        score: relative likelihood in [0, 1]; causes are listed highest first.
    """

    id: str
    reason: str
    score: float = 0.5


@dataclass(frozen=True)
class Remedy:
    """A prescription: what to do, why, and how.

    Attributes:
        id: identifier of the gradvet remedy that applies it (see ``gradvet.remedies``),
            e.g. ``"activation:relu"`` or ``"init:kaiming"``.
        explanation: one line on why it helps here.
        snippet: code a user can paste.
        score: relative priority in [0, 1]; remedies are listed highest first.
    """

    id: str
    explanation: str
    snippet: str = ""
    score: float = 0.5


@dataclass(frozen=True)
class Finding:
    """One diagnosed problem.

    Attributes:
        kind: one of :data:`KINDS`.
        severity: one of :data:`SEVERITIES`.
        layers: module names from ``model.named_modules()``, input side first.
        evidence: a sentence with the numbers, and the numbers as data in ``data``.
        causes: ranked causes, most likely first.
        remedies: ranked remedies, most promising first.
        data: machine-readable evidence (JSON-serialisable).
    """

    kind: str
    severity: str
    layers: Sequence[str]
    evidence: str
    causes: Sequence[Cause] = ()
    remedies: Sequence[Remedy] = ()
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Finding.kind must be one of {KINDS}, got {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"Finding.severity must be one of {SEVERITIES}, got {self.severity!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "causes", tuple(sorted(self.causes, key=lambda c: -c.score)))
        object.__setattr__(self, "remedies", tuple(sorted(self.remedies, key=lambda r: -r.score)))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of this finding."""
        out = asdict(self)
        out["layers"] = list(self.layers)
        return out
