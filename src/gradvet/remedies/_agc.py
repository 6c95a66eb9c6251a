"""Adaptive gradient clipping (AGC): each unit's gradient is capped relative to its weights.

Brock, De, Smith & Simonyan, 2021, "High-Performance Large-Scale Image Recognition Without
Normalization" (NFNets), section 4. The cap is applied with ``torch.where``, never a Python
``if`` on a tensor, so the step does not sync.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import Tensor

from gradvet.errors import GradvetUsageError
from gradvet.remedies._transform_base import GradientTransform, check_positive, counter, sum_on


# -- functional core ------------------------------------------------------------------
def unit_norms(t: Tensor) -> Tensor:
    """L2 norm of each output unit: over all dims but 0 for ``ndim >= 2`` (shape
    ``[out, 1, ...]``, broadcastable against ``t``), of the whole tensor for a 0-d/1-d one
    (bias, gain). Half precision is accumulated in float32."""
    acc = torch.promote_types(t.dtype, torch.float32)
    if t.ndim <= 1:
        return torch.linalg.vector_norm(t, 2, dtype=acc)
    return torch.linalg.vector_norm(t, 2, dim=tuple(range(1, t.ndim)), keepdim=True, dtype=acc)


def unit_count(t: Tensor) -> int:
    """How many units :func:`unit_norms` sees in ``t`` (known on the host)."""
    return 1 if t.ndim <= 1 else t.shape[0]


def agc_(param: Tensor, grad: Tensor, clipping: float, eps: float) -> Tensor:
    """Clip ``grad`` in place unit-wise; returns how many units were clipped (0-d tensor).

    ``limit_i = clipping * max(||W_i||, eps)``; where ``||G_i|| > limit_i``,
    ``G_i <- G_i * limit_i / ||G_i||``; other units are left exactly as they were.
    """
    limit = clipping * unit_norms(param.detach()).clamp_min(eps)
    g = unit_norms(grad)
    over = g > limit  # False for NaN: a NaN unit is left alone, not zeroed
    # divide by 1 where not clipping, so a zero gradient never produces 0/0
    scale = torch.where(over, limit / torch.where(over, g, torch.ones_like(g)), torch.ones_like(g))
    grad.mul_(scale.to(grad.dtype))
    return over.sum()


# -- transform ------------------------------------------------------------------------
@dataclass(frozen=True)
class AGCState:
    """State of :func:`adaptive_clip`; 0-d device tensors."""

    steps: Tensor  # calls with at least one gradient
    clipped: Tensor  # units clipped, summed over all steps
    units: Tensor  # units examined, summed over all steps (clipped / units = clipped fraction)
    last_clipped: Tensor  # units clipped at the last step


class AdaptiveClip(GradientTransform):
    """The transform :func:`adaptive_clip` returns."""

    state: AGCState

    def __init__(self, clipping: float = 0.01, eps: float = 1e-3) -> None:
        self.clipping = check_positive(clipping, "clipping", "adaptive_clip")
        self.eps = check_positive(eps, "eps", "adaptive_clip")
        super().__init__()

    def init_state(self, device: torch.device) -> AGCState:
        return AGCState(
            steps=counter(device), clipped=counter(device), units=counter(device), last_clipped=counter(device)
        )

    def apply(self, params: list[Tensor], norms: Optional[list[Tensor]]) -> Tensor:
        grads: list[Tensor] = [p.grad for p in params]  # type: ignore[misc]
        if any(g.is_sparse for g in grads):  # checked first: no gradient is half-clipped
            raise GradvetUsageError(
                "adaptive_clip needs dense gradients; leave out parameters with sparse gradients "
                "(nn.Embedding(sparse=True)), e.g. [p for p in model.parameters() if p is not emb.weight]"
            )
        counts = [agc_(p, g, self.clipping, self.eps) for p, g in zip(params, grads)]
        state = self.state
        n = sum_on(counts, state.steps.device)
        units = sum(unit_count(p) for p in params)
        self.state = replace(
            state, steps=state.steps + 1, clipped=state.clipped + n, units=state.units + units, last_clipped=n
        )
        return n

    @property
    def clipped_fraction(self) -> Tensor:
        """Fraction of units clipped over all steps so far (0-d device tensor; NaN before a step)."""
        return self.state.clipped / self.state.units

    def __repr__(self) -> str:
        return f"adaptive_clip(clipping={self.clipping}, eps={self.eps})"


def adaptive_clip(clipping: float = 0.01, eps: float = 1e-3) -> AdaptiveClip:
    """Adaptive gradient clipping (AGC), unit-wise, relative to the weights.

    For each output unit ``i`` of a parameter (row ``W_i`` of a Linear weight, output
    channel of a Conv kernel: dim 0; a bias or gain is one unit):
    ``limit_i = clipping * max(||W_i||, eps)``, and where ``||G_i|| > limit_i`` the unit's
    gradient becomes ``G_i * limit_i / ||G_i||`` (Brock, De, Smith & Simonyan, 2021,
    "High-Performance Large-Scale Image Recognition Without Normalization"). Units below
    the limit are untouched. ``eps`` keeps zero-initialised weights from freezing.

    Brock et al. leave the final classifier unclipped: pass the parameters you want clipped.
    For ``ConvTranspose`` kernels dim 0 holds input channels, so units are input channels.
    Non-finite gradients are not fixed (a NaN unit stays NaN, an inf unit becomes 0/NaN);
    use :func:`skip_nonfinite` for those. ``norms=`` is accepted and ignored: AGC needs
    per-unit norms, not per-parameter ones.

    Args:
        clipping: the largest gradient-to-weight norm ratio per unit (> 0); 0.01 to 0.16 in
            the paper, smaller for larger batches.
        eps: floor on the weight norm (> 0).

    Returns:
        An :class:`AdaptiveClip`; calling it returns the number of units clipped this step.
        State: ``steps``, ``clipped`` and ``units`` (summed over steps), ``last_clipped``;
        ``clip.clipped_fraction`` is ``clipped / units``.

    Raises:
        GradvetUsageError: ``clipping`` or ``eps`` is not a finite positive number, or a
            parameter has a sparse gradient.

    Example:
        >>> import torch
        >>> from gradvet.remedies import adaptive_clip
        >>> layer = torch.nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
        >>> layer.weight.grad = torch.tensor([[0.3, 0.4], [0.001, 0.0]])
        >>> agc = adaptive_clip(clipping=0.01)
        >>> int(agc([layer.weight]))
        1
        >>> layer.weight.grad  # row 0 capped to 0.01 * 5; row 1 is under 0.01 * 1
        tensor([[0.0300, 0.0400],
                [0.0010, 0.0000]])
    """
    return AdaptiveClip(clipping, eps)
