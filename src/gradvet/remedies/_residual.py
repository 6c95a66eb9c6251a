"""Residual connections: wrap equal-width blocks as ``x + f(x)``, and zero-init residual branches.

With ``y = x + f(x)`` the Jacobian is ``I + df/dx``: the identity carries the gradient
past every block however small ``df/dx`` is. He, Zhang, Ren & Sun (2016), "Deep
residual learning for image recognition"; plain stacks much deeper than ~20 layers
train worse than shallower ones even with good init (their "degradation" problem).
Starting each branch at zero makes every block the identity at init: Goyal et al.
(2017); Zhang, Dauphin & Ma (2019), "Fixup"; De & Smith (2020), "SkipInit".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Optional

import torch
from torch import nn

from gradvet.errors import GradvetUsageError
from gradvet.remedies._layout import (
    ACTIVATIONS,
    NORMS,
    PASS_THROUGH,
    WEIGHTED,
    qualified,
    rebuild,
    sequentials,
)
from gradvet.remedies._result import Change, RemedyNotApplicable

RESIDUAL_MARK = "_gradvet_residual"


class Residual(nn.Module):
    """``y = x + fn(x)``, or with ``rezero=True`` ``y = x + alpha * fn(x)`` with a learnable scalar
    ``alpha`` that starts at 0 (ReZero: Bachlechner et al., 2020); ``fn`` must keep the shape of
    its input.

    Example:
        >>> block = Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU()))
        >>> block(torch.zeros(2, 8)).shape
        torch.Size([2, 8])
        >>> x = torch.randn(2, 8)
        >>> bool(torch.equal(Residual(nn.Linear(8, 8), rezero=True)(x), x))
        True
    """

    _gradvet_residual = True

    def __init__(self, fn: nn.Module, rezero: bool = False) -> None:
        super().__init__()
        self.fn = fn
        self.alpha: Optional[nn.Parameter] = None
        if rezero:
            ref = next((t for t in (*fn.parameters(), *fn.buffers()) if t.is_floating_point()), None)
            alpha = torch.zeros(()) if ref is None else torch.zeros((), device=ref.device, dtype=ref.dtype)
            self.alpha = nn.Parameter(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.alpha is None:
            return x + self.fn(x)
        return x + self.alpha * self.fn(x)

    def extra_repr(self) -> str:
        return "rezero=True" if self.alpha is not None else ""


def _same_shape(layer: nn.Module) -> Optional[int]:
    """The width of a layer whose output has its input's shape (else None)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features if layer.in_features == layer.out_features else None
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and layer.in_channels == layer.out_channels:
        if any(s != 1 for s in layer.stride):
            return None
        if layer.padding == "same":
            return layer.in_channels
        sizes: list[tuple[int, int, int]] = list(zip(layer.padding, layer.dilation, layer.kernel_size))  # type: ignore[arg-type]
        return layer.in_channels if all(2 * p == d * (k - 1) for p, d, k in sizes) else None
    return None


def _block_at(kids: list[nn.Module], i: int) -> Optional[tuple[int, int]]:
    """``(end, width)`` of a pre-activation block ``activation [dropout...] layer [norm/dropout...]`` at ``i``.

    In a plain stack ``L0 A L1 A L2 ... A Ln`` the blocks are ``(A, L1)``, ``(A, L2)``, ...: the
    branch ends in its layer (or that layer's norm), never in an activation, so zeroing its
    end makes the block the identity while the layer still gets a gradient.
    """
    if not isinstance(kids[i], ACTIVATIONS):
        return None
    j = i + 1
    while j < len(kids) and isinstance(kids[j], PASS_THROUGH) and not isinstance(kids[j], NORMS):
        j += 1
    if j >= len(kids):
        return None
    width = _same_shape(kids[j])
    if width is None:
        return None
    j += 1
    while j < len(kids) and isinstance(kids[j], PASS_THROUGH):
        j += 1
    return j, width


def _runs(kids: list[nn.Module], min_blocks: int) -> list[list[tuple[int, int]]]:
    """Runs of consecutive same-width blocks, as ``[(start, end), ...]``, each at least ``min_blocks`` long."""
    runs: list[list[tuple[int, int]]] = []
    cur: list[tuple[int, int]] = []
    cur_w: Optional[int] = None
    i = 0
    while i < len(kids):
        found = _block_at(kids, i)
        if found is None or (cur and found[1] != cur_w):
            runs.append(cur)
            cur, cur_w = [], None
        if found is None:
            i += 1
            continue
        cur.append((i, found[0]))
        cur_w, i = found[1], found[0]
    runs.append(cur)
    return [r for r in runs if len(r) >= min_blocks]


def add_residual(model: nn.Module, min_blocks: int = 2, branch_init: str = "zero") -> list[Change]:
    """Wrap each block of a run of equal-width blocks in a :class:`Residual`, in place.

    In every ``nn.Sequential`` (not inside a gradvet ``Residual``), a block is in
    pre-activation order (He, Zhang, Ren & Sun, 2016b, "Identity mappings in deep residual
    networks"): an activation, optional dropout, a shape-preserving layer (``Linear(n, n)``,
    or a Conv with ``in == out`` channels, stride 1 and size-preserving padding), optional
    norms/dropout. So a plain stack ``L0 A L1 A L2 A L3`` becomes
    ``L0, x + L1(A(x)), x + L2(A(x)), A, L3``. Runs of at least ``min_blocks`` consecutive
    blocks of one width are wrapped.

    Every block should start as the identity, or the variance of the residual stream doubles
    per block. ``branch_init="zero"`` (the default) zeroes each branch's end (its norm's
    scale, else its layer's weight and bias): SkipInit (De & Smith, 2020), Fixup (Zhang,
    Dauphin & Ma, 2019), Goyal et al. (2017); the zeroed layers still get a gradient (their
    input is the activation, not zero) and move on the first step. ``"rezero"`` keeps the
    branch's weights and multiplies it by a learnable scalar that starts at 0 (ReZero,
    Bachlechner et al., 2020); ``"keep"`` leaves the branch as it is.

    The Sequential is renumbered, so module names and ``state_dict`` keys change (``'3.weight'``
    becomes ``'1.fn.1.weight'``); each :class:`Change` names the block's first module as it
    was called *before* the edit and says the new name.

    Args:
        model: edited in place.
        min_blocks: the shortest run to wrap.
        branch_init: ``"zero"``, ``"rezero"`` or ``"keep"`` (above).

    Returns:
        One :class:`Change` per wrapped block (empty if all are wrapped already).

    Raises:
        RemedyNotApplicable: no run of equal-width blocks and no earlier wrapping.

    Example:
        >>> model = nn.Sequential(*[m for _ in range(3) for m in (nn.Linear(8, 8), nn.Tanh())], nn.Linear(8, 2))
        >>> [c.new for c in add_residual(model)]
        ["Residual around 1..2 as '1', branch end 1.fn.1 zeroed", "Residual around 3..4 as '2', branch end 2.fn.1 zeroed"]
    """
    if min_blocks < 1:
        raise GradvetUsageError(f"min_blocks must be >= 1, got {min_blocks}")
    if branch_init not in ("zero", "rezero", "keep"):
        raise GradvetUsageError(f"branch_init must be 'zero', 'rezero' or 'keep', got {branch_init!r}")
    inside = {id(m) for r in model.modules() if isinstance(r, Residual) for m in r.modules()}
    wrapped: list[tuple[str, str, str, nn.Module]] = []
    for prefix, seq in list(sequentials(model)):  # names as they were before any edit
        if id(seq) not in inside:
            wrapped += _wrap_runs(prefix, seq, min_blocks, branch_init == "rezero")
    final = {id(m): n for n, m in model.named_modules()}
    changes = []
    for name, _old, new, res in wrapped:
        where = final[id(res)]
        text = f"{new} as {where!r}"
        if branch_init == "zero":
            ends = [qualified(where, rel) for rel in _branch_end(res)]
            _zero(res, _branch_end(res))
            text += f", branch end {', '.join(ends)} zeroed"
        elif branch_init == "rezero":
            text += ", x + alpha * f(x) with alpha = 0 (learnable)"
        changes.append(Change(name, "wrap", _old, text))
    if not changes and not inside:
        raise RemedyNotApplicable(
            f"no nn.Sequential in {type(model).__name__} holds {min_blocks}+ consecutive shape-preserving blocks "
            "(an activation, then Linear(n, n) or a stride-1 'same'-padded Conv with in == out channels); add "
            "skip connections in forward() yourself: x = x + block(x)"
        )
    return changes


def _zero(block: nn.Module, rels: list[str]) -> None:
    """Zero the weight (and a Linear/Conv's bias) of each module ``rels`` of ``block``."""
    with torch.no_grad():
        for rel in rels:
            m = block.get_submodule(rel)
            for p in (getattr(m, "weight", None), getattr(m, "bias", None) if isinstance(m, WEIGHTED) else None):
                if isinstance(p, torch.Tensor):
                    p.zero_()


def _wrap_runs(prefix: str, seq: nn.Sequential, min_blocks: int,
               rezero: bool = False) -> list[tuple[str, str, str, nn.Module]]:
    """Wrap the runs in ``seq``; ``(old name, old modules, description, Residual)`` per block."""
    kids = list(seq.named_children())
    starts = {s: e for run in _runs([m for _, m in kids], min_blocks) for s, e in run}
    if not starts:
        return []
    items: list[tuple[Optional[str], nn.Module]] = []
    out: list[tuple[str, str, str, nn.Module]] = []
    i = 0
    while i < len(kids):
        if i not in starts:
            items.append(kids[i])
            i += 1
            continue
        end = starts[i]
        res = Residual(nn.Sequential(*[m for _, m in kids[i:end]]), rezero=rezero).train(seq.training)
        items.append((kids[i][0], res))
        out.append((qualified(prefix, kids[i][0]), ", ".join(type(m).__name__ for _, m in kids[i:end]),
                    f"Residual around {kids[i][0]}..{kids[end - 1][0]}", res))
        i = end
    rebuild(seq, items)
    return out


# -- zero-init of residual branches ---------------------------------------------------
#: Blocks whose branch ends are known by name: one registration per class.
KNOWN_BRANCH_ENDS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.TransformerEncoderLayer: ("self_attn.out_proj", "linear2"),
    nn.TransformerDecoderLayer: ("self_attn.out_proj", "multihead_attn.out_proj", "linear2"),
}
_BLOCK_NAME = re.compile(r"Res.*Block|BasicBlock|Bottleneck")
_SHORTCUT = ("downsample", "shortcut", "skip", "proj_skip", "identity")


def _is_block(m: nn.Module) -> bool:
    if getattr(m, RESIDUAL_MARK, False) is True or getattr(m, "residual", False) is True:
        return True
    if isinstance(m, tuple(KNOWN_BRANCH_ENDS)):
        return True
    tv_like = hasattr(m, "bn3") or (hasattr(m, "bn2") and hasattr(m, "conv2"))
    return tv_like or bool(_BLOCK_NAME.search(type(m).__name__))


def _branch_end(block: nn.Module) -> list[str]:
    """Relative names of the modules to zero: the first norm after the branch's last Linear/Conv, else that layer."""
    for cls, ends in KNOWN_BRANCH_ENDS.items():
        if isinstance(block, cls):
            return list(ends)
    mods = [(n, m) for n, m in block.named_modules() if n and not any(
        part in _SHORTCUT for part in n.split("."))]
    last = max((i for i, (_, m) in enumerate(mods) if isinstance(m, WEIGHTED)), default=None)
    if last is None:
        return []
    for n, m in mods[last + 1:]:
        if isinstance(m, NORMS) and getattr(m, "weight", None) is not None:
            return [n]
    return [mods[last][0]]


def _zero_kills(block: nn.Module, rel: str) -> bool:
    """Whether zeroing ``rel`` would leave a ReLU of ``block``'s branch at 0, where its gradient is 0.

    Known only for gradvet's :class:`Residual`, whose branch is a Sequential run in order;
    other blocks register modules in an order that need not be their forward order.
    """
    if not isinstance(block, Residual) or not isinstance(block.fn, nn.Sequential):
        return False
    names = [n for n, _ in block.named_modules()]
    after = names[names.index(rel) + 1:] if rel in names else []
    return any(isinstance(block.get_submodule(n), (nn.ReLU, nn.ReLU6)) for n in after)


def _find_blocks(model: nn.Module, blocks: Optional[Iterable[str]]) -> list[tuple[str, nn.Module]]:
    named = dict(model.named_modules())
    if blocks is not None:
        missing = [b for b in blocks if b not in named]
        if missing:
            raise GradvetUsageError(f"no module named {missing} in the model; names look like {list(named)[1:6]}")
        return [(b, named[b]) for b in blocks]
    found = [(n, m) for n, m in named.items() if _is_block(m)]
    # keep the innermost: a stage holding blocks is not itself the branch
    return [(n, m) for n, m in found if not any(o is not m and _contains(m, o) for _, o in found)]


def _contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def zero_init_residual(model: nn.Module, blocks: Optional[Iterable[str]] = None) -> list[Change]:
    """Zero the last layer of every residual branch so each block starts as the identity, in place.

    For a branch ending in a norm (``conv -> bn`` as in ResNets) the norm's scale ``gamma``
    is zeroed, else the weight and bias of the branch's last Linear/Conv; the block then
    computes ``x + 0`` at init; a gradvet :class:`Residual` with a ReZero gate gets its gate
    ``alpha`` zeroed instead (zeroing the branch too would leave the gate without a
    gradient). A gradvet :class:`Residual` whose branch ends in a ReLU after
    that layer is skipped: the ReLU would sit at 0, where its gradient is 0, and the
    branch could never learn (pre-activation order, ``x + W relu(x)``, avoids this). Residual blocks cannot be recognised from
    ``forward`` statically, so a block is: a name in ``blocks``, a gradvet
    :class:`Residual`, a module with ``residual = True``, a torchvision-like block (``bn3``, or
    ``bn2`` and ``conv2``), a class named ``*Res*Block*``, ``BasicBlock`` or ``Bottleneck``,
    or a Transformer encoder/decoder layer (its attention ``out_proj`` and ``linear2`` are
    zeroed). Shortcut submodules (``downsample``, ``shortcut``) are left alone.
    Goyal et al. (2017), "Accurate, large minibatch SGD"; Zhang, Dauphin & Ma (2019).

    Args:
        model: edited in place.
        blocks: qualified names of the residual blocks; None detects them as above.

    Returns:
        One :class:`Change` per zeroed module (empty if all were zero already).

    Raises:
        RemedyNotApplicable: no residual block found.

    Example:
        >>> model = nn.Sequential(Residual(nn.Sequential(nn.ReLU(), nn.Linear(8, 8))), nn.Linear(8, 2))
        >>> [c.module for c in zero_init_residual(model)]
        ['0.fn.1']
    """
    found = _find_blocks(model, blocks)
    targets: list[tuple[str, nn.Module]] = []
    stuck: list[tuple[str, nn.Module]] = []
    gates: list[tuple[str, nn.Parameter]] = []
    for bn, block in found:
        if isinstance(block, Residual) and block.alpha is not None:
            gates.append((bn, block.alpha))  # ReZero: the gate starts at 0, the branch keeps its weights
            continue
        for rel in _branch_end(block):
            (stuck if _zero_kills(block, rel) else targets).append((qualified(bn, rel), block.get_submodule(rel)))
    if not targets and not gates:
        if stuck:
            raise RemedyNotApplicable(
                f"the branches {[n for n, _ in stuck]} end in a ReLU after their last layer: zeroing that layer "
                "would leave the ReLU at 0, where its gradient is 0, and the branch would never learn. Zero-init "
                "needs branches that end in the layer (pre-activation order, x + W relu(x): He et al., 2016b)"
            )
        raise RemedyNotApplicable(
            f"no residual blocks recognised in {type(model).__name__}; pass their names with "
            "blocks=['layer1.0', ...], set `residual = True` on the block modules, or add skip connections "
            "first (remedy 'residual')"
        )
    changes = []
    with torch.no_grad():
        for name, alpha in gates:
            if float(alpha) != 0.0:
                changes.append(Change(name, "init", f"alpha={float(alpha):.3g}", "alpha=0 (ReZero gate)"))
                alpha.zero_()
        for name, m in targets:
            params = [p for p in (getattr(m, "weight", None), getattr(m, "bias", None) if isinstance(m, WEIGHTED)
                                  else None) if isinstance(p, torch.Tensor)]
            if all(bool((p == 0).all()) for p in params):
                continue
            old = f"weight std={float(params[0].float().std()):.3f}" if isinstance(m, WEIGHTED) else \
                f"gamma mean={float(params[0].float().mean()):.3f}"
            for p in params:
                p.zero_()
            changes.append(Change(name, "init", old, "weight=0" + (", bias=0" if len(params) > 1 else "")
                                  + (" (gamma: branch output starts at beta)" if not isinstance(m, WEIGHTED) else "")))
    return changes
