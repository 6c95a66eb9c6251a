"""Reduced depth: drop middle blocks of a plain stack, so the gradient's path to the input is shorter.

The gradient reaching layer ``l`` of a plain stack is a product of one Jacobian per layer
above it, so its size changes geometrically with depth (Bengio, Simard & Frasconi, 1994;
Glorot & Bengio, 2010). When the depth itself is the cause, a shallower net is the
direct cure, and often loses nothing: He et al. (2016, fig. 1) found a plain 56-layer net
trained *worse* than a plain 20-layer one, on the training set too. Only blocks that map a
width to the same width are dropped, so the stack's input and output shapes stay as they
were; the first and last blocks always stay.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from gradvet.errors import GradvetUsageError
from gradvet.remedies._result import Change, RemedyNotApplicable
from gradvet.remedies._stack import Block, Stack, blocks_of, find_stack

#: Set on a stack this remedy shortened, so that a second call with the default depth changes nothing.
SHALLOW_MARK = "_gradvet_shallower"


def middle_out(blocks: list[Block], n_drop: int) -> list[Block]:
    """The ``n_drop`` removable blocks nearest the middle of the stack (never the first or the last).

    Example:
        >>> bs = [Block(i, i + 1, 8, 8) for i in range(6)]
        >>> [b.start for b in middle_out(bs, 2)]
        [2, 3]
    """
    inner = [(i, b) for i, b in enumerate(blocks[1:-1], start=1) if b.square]
    centre = (len(blocks) - 1) / 2
    ranked = sorted(inner, key=lambda ib: (abs(ib[0] - centre), ib[0]))
    return sorted((b for _, b in ranked[:n_drop]), key=lambda b: b.start)


def _target(n: int, depth: Optional[int], stack: Stack) -> Optional[int]:
    """How many blocks to keep, or None when nothing should change."""
    if depth is None:
        return None if getattr(stack, SHALLOW_MARK, False) else max(2, (n + 1) // 2)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 2:
        raise GradvetUsageError(f"shallower: depth must be an int >= 2 (blocks kept, the first and the last "
                                f"included), got {depth!r}")
    return depth if depth < n else None


def shallower(model: nn.Module, depth: Optional[int] = None, *, stack: Optional[str] = None) -> list[Change]:
    """Drop middle blocks of a plain stack in place until it has ``depth`` blocks.

    A block is a Linear layer and everything up to the next one (its activation, norm,
    dropout); for an ``nn.ModuleList`` of blocks, each element. Blocks are dropped from the
    middle outward, and only those whose output width equals their input width. The
    dropped blocks' parameters go with them: retrain (or fine-tune) the shortened net.

    Args:
        model: an ``nn.Sequential`` stack, or a model holding one (name it with ``stack``).
        depth: blocks to keep; None halves the stack (rounded up, at least 2) the first time
            and changes nothing on a stack this function already shortened.
        stack: dotted name of the ``nn.Sequential``/``nn.ModuleList`` inside ``model``.

    Returns:
        One ``'remove'`` :class:`Change` per dropped block (its child indices before the edit
        and what it held); empty when the stack is at ``depth`` already.

    Raises:
        RemedyNotApplicable: not a plain stack, fewer than 3 blocks, or no block in the
            middle maps a width to the same width.
        GradvetUsageError: a bad ``depth``.

    Example:
        >>> model = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(8, 8), nn.Sigmoid())], nn.Linear(8, 2))
        >>> [str(c) for c in shallower(model, depth=3)][:1]
        ['<root>: remove 2: Linear(in_features=8, out_features=8, bias=True), 3: Sigmoid() -> (dropped)']
        >>> sum(isinstance(m, nn.Linear) for m in model), shallower(model, depth=3)
        (3, [])
    """
    name, seq = find_stack(model, stack, "shallower")
    _, blocks = blocks_of(seq)
    if len(blocks) < 3:
        raise RemedyNotApplicable(f"shallower: the stack has {len(blocks)} Linear-led block(s); it needs at least 3 "
                                  "(the first and the last always stay)")
    keep = _target(len(blocks), depth, seq)
    if keep is None:
        return []
    drop = middle_out(blocks, len(blocks) - keep)
    if not drop:
        raise RemedyNotApplicable("shallower: no block between the first and the last maps a width to the same "
                                  "width, so none can be dropped without changing a layer's shape")
    children = list(seq)
    changes = [Change(name, "remove", ", ".join(f"{i}: {children[i]!r}".replace("\n", " ")
                                                for i in range(b.start, b.stop)), "(dropped)")
               for b in drop]
    gone = {i for b in drop for i in range(b.start, b.stop)}
    for i in sorted(gone, reverse=True):
        del seq[i]  # Sequential and ModuleList renumber the children after a deletion
    setattr(seq, SHALLOW_MARK, True)
    return changes
