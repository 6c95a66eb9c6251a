"""One object owns every hook handle gradvet registers (fastai/BackPACK style)."""

from __future__ import annotations

from collections import OrderedDict
from types import TracebackType
from typing import Any, Optional


class HookSet:
    """Owns removable hook handles; ``remove()`` is idempotent.

    Example:
        >>> import torch
        >>> hooks = HookSet()
        >>> lin = torch.nn.Linear(2, 2)
        >>> hooks.add(lin.register_forward_hook(lambda m, i, o: None))
        >>> len(lin._forward_hooks)
        1
        >>> hooks.remove(); hooks.remove()
        >>> len(lin._forward_hooks)
        0
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []

    def add(self, handle: Any) -> None:
        """Take ownership of a handle with a ``remove()`` method."""
        self._handles.append(handle)

    def remove(self) -> None:
        """Remove every owned hook; safe to call more than once."""
        while self._handles:
            self._handles.pop().remove()

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> HookSet:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.remove()


# The key of gradvet's hook in a tensor's hook dict: RemovableHandle ids count up from 0, so a
# negative key never collides with a hook the user adds to the same tensor later.
_TENSOR_HOOK_KEY = -1


def add_grad_hook(t: Any, hook: Any) -> None:
    """``t.register_hook(hook)`` without the handle, for hooks never removed (they die with ``t``).

    ``Tensor.register_hook`` allocates a ``RemovableHandle`` and a weak reference per call; a tap
    registers one per layer output per measured step, and those allocations alone tipped a
    ResNet-50-shaped model's step over the garbage collector's threshold (a collection per step,
    and a full collection, ~130 ms here, every ~200 steps). Where ``t`` has no hook yet and has a
    ``grad_fn`` this does what ``register_hook`` does there (a new hook dict, given to the node);
    anywhere else it calls ``register_hook``.

    Example:
        >>> import torch
        >>> x = torch.ones(2, requires_grad=True)
        >>> y = x * 3
        >>> seen = []
        >>> add_grad_hook(y, lambda g: seen.append(g.sum().item()))
        >>> y.sum().backward(); seen
        [2.0]
    """
    if t._backward_hooks is None and t.grad_fn is not None:
        hooks: OrderedDict[int, Any] = OrderedDict()
        t._backward_hooks = hooks
        t.grad_fn._register_hook_dict(t)
        hooks[_TENSOR_HOOK_KEY] = hook
    else:
        t.register_hook(hook)
