"""Skip a step whose gradients hold NaN or inf: optax's ``apply_if_finite`` for PyTorch.

The check and the zeroing run on the device (``masked_fill_`` with a 0-d mask); deciding
whether to call ``optimizer.step()`` at all needs the answer on the host, so that one
helper, :meth:`SkipNonfinite.guarded_step`, syncs, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
from torch import Tensor

from gradvet.errors import GradvetUsageError
from gradvet.remedies._transform_base import GradientTransform, counter


# -- functional core ------------------------------------------------------------------
def _stored(g: Tensor) -> Tensor:
    return g._values() if g.is_sparse else g


def all_finite(grads: Sequence[Tensor], device: Optional[torch.device] = None) -> Tensor:
    """0-d bool tensor: True when every entry of every gradient is finite."""
    device = device or grads[0].device
    return torch.stack([torch.isfinite(_stored(g)).all().to(device) for g in grads]).all()


def zero_unless_(grads: Sequence[Tensor], finite: Tensor) -> None:
    """Set every gradient to 0 in place where the 0-d bool ``finite`` is False.

    ``masked_fill_`` rather than multiplying by ``finite``: ``NaN * 0`` is NaN.
    """
    for g in grads:
        _stored(g).masked_fill_(~finite.to(g.device), 0)


# -- transform ------------------------------------------------------------------------
@dataclass(frozen=True)
class FiniteState:
    """State of :func:`skip_nonfinite`; 0-d device tensors."""

    steps: Tensor  # calls with at least one gradient
    skipped: Tensor  # steps whose gradients were zeroed for holding NaN/inf
    finite: Tensor  # bool: were the gradients of the last step all finite (True before any)


class SkipNonfinite(GradientTransform):
    """The transform :func:`skip_nonfinite` returns."""

    state: FiniteState

    def init_state(self, device: torch.device) -> FiniteState:
        return FiniteState(
            steps=counter(device), skipped=counter(device), finite=torch.ones((), dtype=torch.bool, device=device)
        )

    def apply(self, params: list[Tensor], norms: Optional[list[Tensor]]) -> Tensor:
        grads: list[Tensor] = [p.grad for p in params]  # type: ignore[misc]
        state = self.state
        device = state.steps.device
        if norms is not None:  # a NaN/inf entry makes its L2 norm NaN/inf: no pass over the grads
            finite = torch.isfinite(torch.stack([n.to(device) for n in norms])).all()
        else:
            finite = all_finite(grads, device)
        zero_unless_(grads, finite)
        self.state = replace(state, steps=state.steps + 1, skipped=state.skipped + ~finite, finite=finite)
        return finite

    @property
    def finite(self) -> Tensor:
        """0-d bool device tensor: whether the last step's gradients were all finite."""
        return self.state.finite

    def guarded_step(self, optimizer: Any, *args: Any, **kwargs: Any) -> bool:
        """Call ``optimizer.step(*args, **kwargs)`` only if the last gradients were finite.

        Zeroed gradients are not a no-op for optimizers with momentum, Adam's moments or
        decoupled weight decay: they still move the weights. This skips the step entirely.

        Returns:
            True if the optimizer stepped.

        Raises:
            GradvetUsageError: the transform has not seen gradients yet.
            TypeError: ``optimizer`` has no ``step`` method.
        """
        if self._calls == 0:
            raise GradvetUsageError(
                "guarded_step() before any check: call guard(model.parameters()) after "
                "loss.backward(), then guard.guarded_step(optimizer)"
            )
        if not callable(getattr(optimizer, "step", None)):
            raise TypeError(
                f"guarded_step needs a torch.optim.Optimizer (something with .step()), got {type(optimizer).__name__}"
            )
        # note: host sync: whether to step is a host-side decision, made once per step
        if not bool(self.state.finite):
            return False
        optimizer.step(*args, **kwargs)
        return True

    def __repr__(self) -> str:
        return "skip_nonfinite()"


def skip_nonfinite() -> SkipNonfinite:
    """Zero all gradients of a step in which any gradient entry is NaN or inf.

    ``finite = all_i all(isfinite(g_i))``; ``g_i <- where(finite, g_i, 0)`` for every i, and
    ``state.skipped`` counts the steps zeroed: the analogue of optax's ``apply_if_finite``
    (whose state counts non-finite steps the same way). Mixed-precision training with
    ``torch.amp.GradScaler`` already skips such steps in ``scaler.step``; this is for the
    rest.

    With zeroed gradients, ``optimizer.step()`` changes nothing only for plain SGD without
    momentum or weight decay; momentum, Adam's moment estimates and weight decay still
    move the weights. To skip the step itself, use ``guard.guarded_step(optimizer)``, which
    reads ``guard.finite`` on the host (one sync per step), or branch on ``guard.finite``
    yourself. With ``norms=`` (per-parameter L2 norms, e.g. ``monitor.last_grad_norms``)
    the check reads the norms instead of the gradients: a NaN or inf entry makes its norm
    NaN or inf.

    Returns:
        A :class:`SkipNonfinite`; calling it returns ``finite`` (0-d bool device tensor).
        State: ``steps``, ``skipped``, ``finite``.

    Example:
        >>> import torch
        >>> from gradvet.remedies import skip_nonfinite
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)
        >>> guard = skip_nonfinite()
        >>> model(torch.tensor([[float("nan"), 1.0]])).sum().backward()
        >>> bool(guard(model.parameters())), int(guard.state.skipped)
        (False, 1)
        >>> model.weight.grad
        tensor([[0., 0.]])
        >>> guard.guarded_step(opt)  # skipped: weight decay would move the weights
        False
    """
    return SkipNonfinite()
