"""Greedy layer-wise pretraining of a deep plain stack, then the whole stack back for fine-tuning.

Hinton, Osindero & Teh (2006), "A fast learning algorithm for deep belief nets", and Bengio,
Lamblin, Popovici & Larochelle (2007), "Greedy layer-wise training of deep networks": train
the first layer alone on the data, freeze it, train the second on the first's output, and so
on; then fine-tune the whole network with backprop. Each block trains as the hidden layer of
a one-hidden-layer net, which has a short gradient path and learns whatever the depth of the
stack. Bengio et al. (2007) compare two per-layer objectives, both here:

- ``"autoencoder"``: the block and a temporary linear decoder reconstruct the block's input
  (mean squared error on the input standardised per feature);
- ``"aux_head"``: the block and a temporary linear classifier predict the targets
  (cross-entropy), the "supervised greedy" variant.

The head (the stack's last block) is not pretrained: fine-tuning trains it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor, nn

from gradvet.errors import GradvetUsageError
from gradvet.remedies._init import INIT_MARK
from gradvet.remedies._layout import describe_std
from gradvet.remedies._result import Change, RemedyNotApplicable
from gradvet.remedies._stack import blocks_of, find_stack

METHODS = ("autoencoder", "aux_head")


def _check_args(method: str, steps: int, lr: float, batch_size: int, targets: Optional[Tensor]) -> None:
    if method not in METHODS:
        raise GradvetUsageError(f"pretrain_layerwise: method must be one of {METHODS}, got {method!r}")
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise GradvetUsageError(f"pretrain_layerwise: {name} must be a positive int, got {v!r}")
    if not lr > 0:
        raise GradvetUsageError(f"pretrain_layerwise: lr must be > 0, got {lr!r}")
    if method == "aux_head" and (targets is None or targets.dtype not in (torch.int64, torch.int32)):
        raise GradvetUsageError("pretrain_layerwise(method='aux_head') trains a classifier per layer: pass the "
                                "integer class targets, e.g. pretrain_layerwise(model, x, y, method='aux_head')")


def _block_modules(model: nn.Module, stack: Optional[str]) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    """``(prefix, [(name, block), ...])`` for the blocks to pretrain (all but the head)."""
    name, seq = find_stack(model, stack, "pretrain_layerwise")
    prefix_n, blocks = blocks_of(seq)
    children = list(seq)
    if len(blocks) < 2:
        raise RemedyNotApplicable(f"pretrain_layerwise needs at least two Linear layers in the stack, found "
                                  f"{len(blocks)}: there is nothing below the head to pretrain")
    prefix = nn.Sequential(*children[:prefix_n])
    out: list[tuple[str, nn.Module]] = [
        (f"{name}.{b.start}" if name else str(b.start), nn.Sequential(*children[b.start:b.stop])) for b in blocks
    ]
    return prefix, out[:-1] if isinstance(seq, nn.Sequential) else out


def _train_block(block: nn.Module, h: Tensor, y: Optional[Tensor], method: str, steps: int, lr: float,
                 batch_size: int, gen: torch.Generator) -> tuple[float, float]:
    """Train ``block`` with a temporary decoder or classifier; ``(first loss, mean of the last 10)``."""
    with torch.no_grad():
        d_out = block(h[:2]).shape[1]
    n_out = h.shape[1] if method == "autoencoder" else int(y.max()) + 1  # type: ignore[union-attr]
    aux = nn.Linear(d_out, n_out).to(device=h.device, dtype=h.dtype)
    opt = torch.optim.Adam([*block.parameters(), *aux.parameters()], lr=lr)
    # the decoder reconstructs the standardised input: a deep sigmoid layer's output varies little,
    # and a plain MSE would call its near-constant mean a perfect reconstruction
    mean, std = h.mean(0), h.std(0).clamp_min(1e-6)
    losses = []
    with torch.enable_grad():  # it trains, also when the caller applies remedies under torch.no_grad()
        for _ in range(steps):
            idx = torch.randint(0, len(h), (batch_size,), generator=gen).to(h.device)
            out = aux(block(h[idx]))
            if method == "autoencoder":
                loss = nn.functional.mse_loss(out, (h[idx] - mean) / std)
            else:
                loss = nn.functional.cross_entropy(out, y[idx])  # type: ignore[index]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    curve = torch.stack(losses)
    # one host sync per block, after its loop
    return float(curve[0]), float(curve[-10:].mean())


def pretrain_layerwise(model: nn.Module, inputs: Tensor, targets: Optional[Tensor] = None, *,
                       method: str = "autoencoder", steps: int = 100, lr: float = 0.01, batch_size: int = 128,
                       stack: Optional[str] = None, seed: int = 0, force: bool = False) -> list[Change]:
    """Pretrain the blocks of a plain stack greedily, one at a time, in place; the stack is then ready to fine-tune.

    Block ``k`` (a Linear and what follows it up to the next Linear) trains on the output of the
    already pretrained blocks ``0 .. k-1``, which stay fixed, together with a temporary linear
    decoder (``method="autoencoder"``: reconstruct the block's input) or classifier
    (``"aux_head"``: predict ``targets``); the temporary layer is then thrown away. Each block
    trains for ``steps`` Adam steps (Kingma & Ba, 2015: its steps do not depend on the gradient's
    scale, so a deep layer whose input varies little still learns) on batches drawn from
    ``inputs`` with a generator seeded by ``seed`` (the global RNG is not touched). The
    autoencoder reconstructs its input standardised per feature. Hinton et al. (2006); Bengio
    et al. (2007).

    Args:
        model: an ``nn.Sequential`` stack (its last block, the head, is left to fine-tuning), or
            a model holding one: name it with ``stack``.
        inputs: training inputs ``[n, ...]`` for the stack (after any layers before it).
        targets: integer class labels ``[n]``; needed by ``method="aux_head"``.
        method: ``"autoencoder"`` or ``"aux_head"``.
        steps, lr, batch_size: Adam steps per block, their learning rate, examples per step.
        stack: dotted name of an ``nn.Sequential``/``nn.ModuleList`` of blocks inside ``model``
            (``"blocks"``); every block of a ModuleList is pretrained (its head lives outside it).
        seed: seeds the batch draws and the temporary layers; the global RNG is restored after.
        force: pretrain blocks that a previous call already pretrained.

    Returns:
        One :class:`Change` per pretrained block (its first Linear's name, the weight std before
        and after, the per-layer loss from its first step to its last ten); empty when every
        block was pretrained already.

    Raises:
        RemedyNotApplicable: not a plain stack, or fewer than two Linear layers.
        GradvetUsageError: a bad argument (the message says which).

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 2))
        >>> changes = pretrain_layerwise(model, torch.randn(64, 4), steps=20)
        >>> [c.module for c in changes], pretrain_layerwise(model, torch.randn(64, 4), steps=20)
        (['0', '2'], [])
    """
    _check_args(method, steps, lr, batch_size, targets)
    if not isinstance(inputs, Tensor) or len(inputs) < 2:
        raise GradvetUsageError("pretrain_layerwise: inputs must be a tensor of at least 2 examples, got "
                                f"{type(inputs).__name__}")
    prefix, blocks = _block_modules(model, stack)
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    changes: list[Change] = []
    model.train()
    # the temporary decoders/classifiers draw their init (and dropout its masks) from the global RNG:
    # fork it, so that the caller's stream is left as it was and the result depends on ``seed`` only
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            with torch.no_grad():
                h = prefix(inputs).flatten(1)
            for name, block in blocks:
                changes += _pretrain_one(name, block, h, targets, method, steps, lr, batch_size, gen, force)
                with torch.no_grad():
                    h = block(h).flatten(1)
        finally:
            model.train(was)
    return changes


def _pretrain_one(name: str, block: nn.Module, h: Tensor, y: Optional[Tensor], method: str, steps: int,
                  lr: float, batch_size: int, gen: torch.Generator, force: bool) -> list[Change]:
    first = _first_linear(block)
    marker = f"pretrain:{method}"
    if not force and getattr(first, INIT_MARK, None) == marker:
        return []
    old = describe_std(first.weight)
    start, end = _train_block(block, h, y, method, steps, lr, batch_size, gen)
    setattr(first, INIT_MARK, marker)
    what = "reconstruction MSE (standardised)" if method == "autoencoder" else "auxiliary cross-entropy"
    return [Change(name, "init", old, f"{describe_std(first.weight)} (pretrained as {method.replace('_', ' ')}: "
                   f"{steps} steps, {what} {start:.3g} -> {end:.3g})")]


def pretrain_remedy(model: nn.Module, *, batch: Any = None, **kw: Any) -> list[Change]:
    """The registry form of :func:`pretrain_layerwise`: ``batch=(inputs, targets)``."""
    if batch is None or not isinstance(batch, Sequence) or len(batch) != 2:
        raise RemedyNotApplicable("pretrain:layerwise trains each layer on data: pass batch=(inputs, targets), "
                                  "e.g. apply_remedy('pretrain:layerwise', model, batch=(x_train, y_train))")
    return pretrain_layerwise(model, batch[0], batch[1], **kw)


def pretrain_applicable(model: nn.Module, batch: Any) -> tuple[bool, str]:
    """``applicable('pretrain:layerwise', ...)`` without training anything: the stack and the marks only."""
    if batch is None:
        return False, "pretrain:layerwise needs batch=(inputs, targets)"
    try:
        _, blocks = _block_modules(model, None)
    except RemedyNotApplicable as e:
        return False, str(e)
    todo = [n for n, b in blocks if not str(getattr(_first_linear(b), INIT_MARK, "")).startswith("pretrain:")]
    if not todo:
        return False, "pretrain:layerwise was applied already: every block below the head is pretrained"
    return True, f"would pretrain {len(todo)} block(s) one at a time: {', '.join(todo)}"


def _first_linear(block: nn.Module) -> nn.Linear:
    return next(m for m in block.modules() if isinstance(m, nn.Linear))
