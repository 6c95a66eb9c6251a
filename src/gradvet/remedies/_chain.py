"""Compose gradient transforms, as optax's ``chain`` does."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

import torch
from torch import Tensor

from gradvet.errors import GradvetUsageError
from gradvet.remedies._transform_base import GradientTransform, NormsLike, param_list, select_norms


class Chain(GradientTransform):
    """The transform :func:`chain` returns."""

    def __init__(self, *transforms: GradientTransform) -> None:
        for i, t in enumerate(transforms):
            if isinstance(t, type) and issubclass(t, GradientTransform):
                raise GradvetUsageError(
                    f"chain() argument {i} is the class {t.__name__}, not a transform; instantiate it, "
                    "e.g. chain(skip_nonfinite(), clip_by_global_norm(1.0))"
                )
            if not isinstance(t, GradientTransform):
                raise GradvetUsageError(
                    f"chain() argument {i} is a {type(t).__name__}, not a gradient transform; pass "
                    "objects such as clip_by_global_norm(1.0) or adaptive_clip(0.01)"
                )
        self.transforms: tuple[GradientTransform, ...] = tuple(transforms)

    @property  # type: ignore[override]
    def state(self) -> tuple[Any, ...]:
        """The children's states, in order."""
        return tuple(t.state for t in self.transforms)

    @torch.no_grad()
    def __call__(self, params: Iterable[Tensor], norms: Optional[NormsLike] = None) -> Optional[Tensor]:
        """Apply each transform in order; ``norms`` go to the first one only.

        Returns:
            What the last transform returned (None for an empty chain).
        """
        plist = param_list(params, "chain")  # a generator can be read once: list it here
        if norms is not None:  # fail on a mismatch before any transform edits a gradient
            select_norms(norms, plist, [i for i, p in enumerate(plist) if p.grad is not None], "chain")
        out: Optional[Tensor] = None
        for i, t in enumerate(self.transforms):
            out = t(plist, norms if i == 0 else None)
        return out

    def reset(self) -> None:
        """Reset every transform in the chain."""
        for t in self.transforms:
            t.reset()

    def __repr__(self) -> str:
        return f"chain({', '.join(repr(t) for t in self.transforms)})"


def chain(*transforms: GradientTransform) -> Chain:
    """Apply gradient transforms one after the other: ``chain(a, b)(params) == b(a(params))``.

    ``.state`` is the tuple of the children's states (optax's ``chain`` state is the same
    tuple). Precomputed ``norms=`` are handed to the first transform only: once it has
    changed the gradients, the norms no longer describe them, so later transforms compute
    their own (Pascanu-style clipping after AGC, say, measures the AGC-clipped gradients).
    Order matters: ``chain(skip_nonfinite(), clip_by_global_norm(1.0))`` zeroes a NaN step
    and then leaves the zeros alone, while clipping first would spread the NaN.

    Args:
        *transforms: gradient transforms (instances, not classes).

    Returns:
        A :class:`Chain`; calling it returns what the last transform returned.

    Raises:
        GradvetUsageError: an argument is not a gradient transform.

    Example:
        >>> import torch
        >>> from gradvet.remedies import chain, clip_by_global_norm, clip_by_value
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> w.grad = torch.tensor([3.0, 0.5])
        >>> t = chain(clip_by_value(1.0), clip_by_global_norm(1.0))
        >>> _ = t([w])  # [1.0, 0.5], then scaled to norm 1
        >>> w.grad
        tensor([0.8944, 0.4472])
        >>> int(t.state[0].clipped), int(t.state[1].clipped)
        (1, 1)
    """
    return Chain(*transforms)
