"""What every gradient transform shares: the call protocol, input checks, device-side state.

A gradient transform edits ``p.grad`` of a list of parameters in place, between
``loss.backward()`` and ``optimizer.step()``, like an optax ``GradientTransformation``
acting on PyTorch's gradient buffers. Its state is a small frozen dataclass of 0-d device
tensors (step and event counts, the last norm), replaced, never mutated, on each call: the
counters are updated on the device, so a transform adds no host-device sync to a step.
Read them with ``int(t.state.clipped)`` when you log, not every step.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor

from gradvet.errors import GradvetUsageError

#: What a transform accepts as ``norms=``: 0-d tensors, or one 1-d tensor.
NormsLike = Union[Sequence[Tensor], Tensor]


class GradientTransform:
    """Base class: a callable ``t(params, norms=None)`` that edits ``p.grad`` in place.

    Subclasses implement :meth:`init_state` (the state on a device) and :meth:`apply` (one
    step on the parameters that have a gradient). Parameters whose ``grad`` is None are
    skipped; when none has a gradient the call does nothing, state included, and returns None.

    Attributes:
        state: a frozen dataclass of 0-d device tensors; see each transform.

    Example:
        >>> import torch, gradvet.remedies as R
        >>> model = torch.nn.Linear(3, 2)
        >>> clip = R.chain(R.skip_nonfinite(), R.clip_by_global_norm(1.0))
        >>> model(torch.randn(4, 3)).sum().backward()
        >>> _ = clip(model.parameters())
        >>> int(clip.state[1].steps)
        1
    """

    state: Any

    def __init__(self) -> None:
        self._calls = 0
        self.state = self.init_state(torch.device("cpu"))

    # -- to implement -----------------------------------------------------------------
    def init_state(self, device: torch.device) -> Any:
        """A fresh state with its tensors on ``device``."""
        raise NotImplementedError

    def apply(self, params: list[Tensor], norms: Optional[list[Tensor]]) -> Optional[Tensor]:
        """Transform ``p.grad`` of ``params`` (all have one) in place; update ``self.state``.

        ``norms`` is None, or the L2 norms of those gradients, aligned with ``params``.
        """
        raise NotImplementedError

    # -- protocol ---------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, params: Iterable[Tensor], norms: Optional[NormsLike] = None) -> Optional[Tensor]:
        """Apply the transform to ``p.grad`` of ``params`` in place.

        Args:
            params: the parameters (``model.parameters()``, a list, or one tensor).
            norms: optional per-parameter gradient L2 norms that were already computed,
                e.g. ``monitor.last_grad_norms`` with ``params=monitor.parameters``; aligned
                with ``params`` or with the parameters that have a gradient. Transforms that
                need no norms ignore them (after checking their length).

        Returns:
            A 0-d device tensor each transform documents, or None when no gradient was present.

        Raises:
            GradvetUsageError: ``params`` holds something other than tensors, or ``norms``
                does not line up with ``params``.
        """
        name = type(self).__name__
        plist = param_list(params, name)
        with_grad = [i for i, p in enumerate(plist) if p.grad is not None]
        selected = select_norms(norms, plist, with_grad, name) if norms is not None else None
        if not with_grad:
            return None
        live = [plist[i] for i in with_grad]
        self._to_device(live[0].grad.device)  # type: ignore[union-attr]
        self._calls += 1
        return self.apply(live, selected)

    def reset(self) -> None:
        """Forget all steps: a fresh state on the device the state is on now."""
        self.state = self.init_state(state_device(self.state))
        self._calls = 0

    def _to_device(self, device: torch.device) -> None:
        if state_device(self.state) == device:
            return
        if self._calls == 0:  # nothing recorded yet: build it there, no copy at all
            self.state = self.init_state(device)
        else:  # the model moved; non_blocking, so a CPU->GPU move does not block the host
            self.state = state_to(self.state, device)


def state_device(state: Any) -> torch.device:
    """The device of the first tensor field of a state dataclass (CPU if it has none)."""
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")


def state_to(state: Any, device: torch.device) -> Any:
    """A copy of a state dataclass with every tensor field moved to ``device``."""
    moved = {
        f.name: getattr(state, f.name).to(device, non_blocking=True)
        for f in dataclasses.fields(state)
        if isinstance(getattr(state, f.name), Tensor)
    }
    return dataclasses.replace(state, **moved)


def counter(device: torch.device) -> Tensor:
    """A 0-d int64 zero on ``device``: a step or event count."""
    return torch.zeros((), dtype=torch.int64, device=device)


def param_list(params: Any, who: str) -> list[Tensor]:
    """``params`` as a list of tensors, with a message that says what to pass otherwise."""
    if isinstance(params, Tensor):
        return [params]
    if isinstance(params, torch.nn.Module):
        raise GradvetUsageError(
            f"{who} received a module ({type(params).__name__}); pass its parameters: "
            "t(model.parameters()) or t(monitor.parameters)"
        )
    try:
        plist = list(params)
    except TypeError:
        raise GradvetUsageError(
            f"{who} needs an iterable of parameter tensors, got {type(params).__name__}; "
            "pass model.parameters() or a list of tensors"
        ) from None
    for i, p in enumerate(plist):
        if not isinstance(p, Tensor):
            raise GradvetUsageError(
                f"{who}: params[{i}] is a {type(p).__name__}, not a tensor; pass model.parameters() "
                "(for named_parameters(), pass [p for _, p in model.named_parameters()])"
            )
    return plist


def select_norms(norms: NormsLike, plist: list[Tensor], with_grad: list[int], who: str) -> list[Tensor]:
    """The given norms of the parameters that have a gradient, aligned with them.

    ``norms`` may line up with all of ``plist`` (as ``monitor.last_grad_norms`` lines up with
    ``monitor.parameters``, NaN where a gradient is missing) or with its gradients only.
    """
    if isinstance(norms, Tensor):
        if norms.ndim != 1:
            raise GradvetUsageError(
                f"{who}: norms= must be a 1-d tensor or a list of 0-d tensors, got shape "
                f"{tuple(norms.shape)}; pass monitor.last_grad_norms"
            )
        items: list[Any] = list(norms.unbind(0))
    else:
        items = list(norms)
    for i, n in enumerate(items):
        if not isinstance(n, Tensor) or n.numel() != 1:
            got = f"shape {tuple(n.shape)}" if isinstance(n, Tensor) else type(n).__name__
            raise GradvetUsageError(
                f"{who}: norms[{i}] must be a 0-d tensor (a gradient L2 norm), got {got}; "
                "pass monitor.last_grad_norms"
            )
    if len(items) == len(plist):
        return [items[i].reshape(()) for i in with_grad]
    if len(items) == len(with_grad):
        return [n.reshape(()) for n in items]
    raise GradvetUsageError(
        f"{who}: norms= has {len(items)} entries but params has {len(plist)} tensors, "
        f"{len(with_grad)} of them with a gradient; pass norms aligned with params, e.g. "
        "t(monitor.parameters, norms=monitor.last_grad_norms)"
    )


def check_positive(value: Any, name: str, who: str) -> float:
    """``value`` as a float, or an error unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise GradvetUsageError(
            f"{who}({name}=...) needs a positive float, got {type(value).__name__}; "
            f"pass a number, e.g. {who}({name}=1.0)"
        )
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise GradvetUsageError(f"{who}({name}={value!r}): {name} must be a finite number > 0")
    return v


def groups(tensors: Sequence[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[int]]:
    """Indices of the dense tensors grouped by (device, dtype), as fused foreach kernels need."""
    out: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        if not t.is_sparse:
            out[(t.device, t.dtype)].append(i)
    return out


def sum_on(values: Sequence[Tensor], device: torch.device) -> Tensor:
    """The sum of 0-d tensors that may live on several devices, on ``device``."""
    return torch.stack([v.to(device) for v in values]).sum()
