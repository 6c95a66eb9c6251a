"""A plain stack read as blocks: each block starts at a Linear layer and runs to the next one.

Both depth remedies work on this view. Layer-wise pretraining trains the blocks one at a
time; the reduced-depth edit drops whole blocks from the middle. The view is exact for an
``nn.Sequential`` (its forward is its child order) and for an ``nn.ModuleList`` iterated in
order by its parent's forward (``for block in self.blocks: x = block(x)``), which is what
"plain stack" means here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from torch import nn

from gradvet.remedies._result import RemedyNotApplicable

Stack = Union[nn.Sequential, nn.ModuleList]


@dataclass(frozen=True)
class Block:
    """Children ``start .. stop - 1`` of a stack: one Linear-led block.

    Attributes:
        start, stop: child indices, ``stop`` exclusive.
        d_in, d_out: ``in_features`` of the block's first Linear, ``out_features`` of its last.
    """

    start: int
    stop: int
    d_in: int
    d_out: int

    @property
    def square(self) -> bool:
        """Whether the block maps width ``w`` to ``w`` (it can be removed without a shape change)."""
        return self.d_in == self.d_out


def _linears(m: nn.Module) -> list[nn.Linear]:
    return [x for x in m.modules() if isinstance(x, nn.Linear)]


def blocks_of(stack: Stack) -> tuple[int, list[Block]]:
    """``(prefix, blocks)``: children before the first Linear-holding child, then the blocks.

    A child that holds a Linear starts a block; parameter-free children (activations, dropout)
    and norm layers join the block before them.

    Example:
        >>> seq = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> blocks_of(seq)
        (1, [Block(start=1, stop=3, d_in=4, d_out=8), Block(start=3, stop=4, d_in=8, d_out=2)])
    """
    children = list(stack)
    starts = [i for i, c in enumerate(children) if _linears(c)]
    if not starts:
        return len(children), []
    ends = starts[1:] + [len(children)]
    blocks = []
    for a, b in zip(starts, ends):
        lin = [x for c in children[a:b] for x in _linears(c)]
        blocks.append(Block(a, b, lin[0].in_features, lin[-1].out_features))
    return starts[0], blocks


def find_stack(model: nn.Module, stack: Optional[str], who: str) -> tuple[str, Stack]:
    """The stack a depth remedy edits: ``model`` itself when it is an ``nn.Sequential``, else ``stack``.

    Raises:
        RemedyNotApplicable: no such submodule, or it is not an ``nn.Sequential``/``nn.ModuleList``.
    """
    if stack is None:
        if isinstance(model, nn.Sequential):
            return "", model
        lists = [n for n, m in model.named_modules() if isinstance(m, (nn.Sequential, nn.ModuleList)) and n]
        raise RemedyNotApplicable(
            f"{who} edits a plain stack: {type(model).__name__} is not an nn.Sequential; name the stack of "
            f"blocks its forward runs in order, e.g. stack={lists[0]!r}" if lists else
            f"{who} edits a plain stack: {type(model).__name__} is not an nn.Sequential and holds no "
            "nn.Sequential/nn.ModuleList of blocks; build the model as nn.Sequential(...)"
        )
    try:
        found = model.get_submodule(stack)
    except AttributeError as e:
        raise RemedyNotApplicable(f"{who}: {type(model).__name__} has no submodule {stack!r} ({e})") from None
    if not isinstance(found, (nn.Sequential, nn.ModuleList)):
        raise RemedyNotApplicable(
            f"{who}: {stack!r} is a {type(found).__name__}, not an nn.Sequential or nn.ModuleList of blocks"
        )
    return stack, found
