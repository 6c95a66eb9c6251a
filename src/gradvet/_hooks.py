"""One object owns every hook handle gradvet registers (fastai/BackPACK style)."""

from __future__ import annotations

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
