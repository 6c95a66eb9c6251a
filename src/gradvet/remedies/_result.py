"""What a model-editing remedy returns: the edits it made, and the error when it cannot act."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from gradvet.errors import GradvetUsageError

#: Kinds of edit a :class:`Change` can record.
CHANGE_KINDS = ("activation", "init", "bias", "insert", "wrap", "replace", "remove")


@dataclass(frozen=True)
class Change:
    """One edit a remedy made to a model.

    Attributes:
        module: qualified name as ``model.named_modules()`` gave it *before* the edit
            (``''`` for the root); edits that rename modules say the new name in ``new``.
        what: one of ``'activation' | 'init' | 'bias' | 'insert' | 'wrap' | 'replace' | 'remove'``.
        old: the state before, e.g. ``'Sigmoid()'`` or ``'std=0.010'``.
        new: the state after, e.g. ``'ReLU()'`` or ``'std=0.177 (kaiming fan_in, relu)'``.
    """

    module: str
    what: str
    old: str
    new: str

    def __post_init__(self) -> None:
        if self.what not in CHANGE_KINDS:
            raise GradvetUsageError(f"Change.what must be one of {CHANGE_KINDS}, got {self.what!r}")

    def __str__(self) -> str:
        return f"{self.module or '<root>'}: {self.what} {self.old} -> {self.new}"


@dataclass
class RemedyResult:
    """The outcome of :func:`gradvet.remedies.apply_remedy`.

    Attributes:
        id: the remedy id, e.g. ``'activation:relu'``.
        model: the treated model (a deep copy unless ``inplace=True``).
        changes: every edit made; empty when the model was already in the remedy's
            target state (the result is then falsy).
    """

    id: str
    model: nn.Module = field(repr=False)
    changes: list[Change] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __str__(self) -> str:
        if not self.changes:
            return f"{self.id}: nothing to change"
        return "\n".join([f"{self.id}: {len(self.changes)} change(s)"] + [f"  {c}" for c in self.changes])


class RemedyNotApplicable(GradvetUsageError):
    """The model has nothing this remedy can act on; the message says why and what would make it apply."""
