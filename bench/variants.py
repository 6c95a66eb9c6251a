"""What is timed: the plain loop, gradvet's profiles, and the peer tools.

Each variant is a context manager ``(workload, tmpdir) -> after_backward``: set-up
and tear-down (creating a monitor, ``wandb.init``, opening a SummaryWriter) run
outside the timed region; ``after_backward(loss)`` runs inside it, once per step,
between ``loss.backward()`` and ``optimizer.step()``. A variant whose tool is not
importable raises :class:`Unavailable` with the reason, and the table says so.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from models import Workload
from torch import Tensor

AfterBackward = Optional[Callable[[Tensor], None]]


class Unavailable(Exception):
    """The variant's tool is missing; the message says what to install."""


@contextlib.contextmanager
def plain(wl: Workload, tmp: Path, record: bool) -> Iterator[AfterBackward]:
    yield None


def _monitor(wl: Workload, tmp: Path, record: bool, profile: str) -> Any:
    import gradvet

    path = tmp / f"{profile}.gradvet" if record else None
    # variants and rounds share the bench's temp folder: each run replaces the last one's record
    return gradvet.Monitor(wl.model, optimizer=wl.optimizer, record=path, profile=profile, overwrite=True)


@contextlib.contextmanager
def gradvet_default(wl: Workload, tmp: Path, record: bool) -> Iterator[AfterBackward]:
    with _monitor(wl, tmp, record, "economy") as monitor:
        yield monitor.step


@contextlib.contextmanager
def gradvet_full(wl: Workload, tmp: Path, record: bool) -> Iterator[AfterBackward]:
    with _monitor(wl, tmp, record, "full") as monitor:
        yield monitor.step


@contextlib.contextmanager
def item_norms(wl: Workload, tmp: Path, record: bool) -> Iterator[AfterBackward]:
    """The common hand-written snippet: one host sync per parameter per step."""
    params = [p for p in wl.model.parameters() if p.requires_grad]

    def after(loss: Tensor) -> None:
        [p.grad.norm().item() for p in params if p.grad is not None]

    yield after


@contextlib.contextmanager
def lightning_grad_norm(wl: Workload, tmp: Path, record: bool) -> Iterator[AfterBackward]:
    try:
        from lightning.pytorch.utilities import grad_norm
    except ImportError as e:
        raise Unavailable(f"lightning not importable ({e}); pip install lightning") from None
    yield lambda loss: grad_norm(wl.model, norm_type=2)


@contextlib.contextmanager
def wandb_watch(wl: Workload, tmp: Path, record: bool) -> Iterator[AfterBackward]:
    """``wandb.watch(log="gradients", log_freq=1)``, offline; ``wandb.log`` commits each step."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        import wandb
    except ImportError as e:
        raise Unavailable(f"wandb not importable ({e}); pip install wandb") from None
    run = wandb.init(
        mode="offline", dir=str(tmp), project="gradvet-bench", reinit="finish_previous"
    )
    wandb.watch(wl.model, log="gradients", log_freq=1)
    step = [0]

    def after(loss: Tensor) -> None:
        # watch's hooks log with commit=False; a training loop's own wandb.log commits
        # the row. An int is logged so that no loss.item() sync is added.
        step[0] += 1
        run.log({"bench/step": step[0]})

    try:
        yield after
    finally:
        wandb.unwatch(wl.model)
        run.finish()


@contextlib.contextmanager
def tensorboard_histograms(wl: Workload, tmp: Path, record: bool) -> Iterator[AfterBackward]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise Unavailable(f"tensorboard not importable ({e}); pip install tensorboard") from None
    writer = SummaryWriter(str(tmp / "tb"))
    named = [(n, p) for n, p in wl.model.named_parameters() if p.requires_grad]
    step = [0]

    def after(loss: Tensor) -> None:
        for n, p in named:
            if p.grad is not None:
                writer.add_histogram(f"grad/{n}", p.grad, step[0])
        step[0] += 1

    try:
        yield after
    finally:
        writer.close()


@contextlib.contextmanager
def clip_grad_norm(wl: Workload, tmp: Path, record: bool) -> Iterator[AfterBackward]:
    params = [p for p in wl.model.parameters() if p.requires_grad]
    yield lambda loss: torch.nn.utils.clip_grad_norm_(params, 1.0)


def find_norm_clipper() -> Callable[..., Any]:
    """gradvet's global-norm clipper that takes ``norms=monitor.last_grad_norms``.

    Returns a class (instantiated with ``max_norm=1.0``), a factory of such clippers
    (``clip_by_global_norm(max_norm)``, optax style) or a function taking ``norms=``.
    """
    try:
        import gradvet.remedies as remedies
    except ImportError as e:
        raise Unavailable(f"gradvet.remedies not importable ({e})") from None
    factory = getattr(remedies, "clip_by_global_norm", None)
    if factory is not None:
        with contextlib.suppress(TypeError, ValueError):
            if "norms" in inspect.signature(factory(max_norm=1.0).__call__).parameters:
                return factory  # type: ignore[no-any-return]
    for name in sorted(dir(remedies)):
        obj = getattr(remedies, name)
        if "clip" not in name.lower() or not callable(obj):
            continue
        target = obj.__call__ if inspect.isclass(obj) else obj
        with contextlib.suppress(TypeError, ValueError):
            if "norms" in inspect.signature(target).parameters:
                return obj
    raise Unavailable(
        "gradvet.remedies has no global-norm clipper taking norms=monitor.last_grad_norms"
    )


@contextlib.contextmanager
def gradvet_clip(wl: Workload, tmp: Path, record: bool) -> Iterator[AfterBackward]:
    """gradvet default profile, then clipping that reuses the norms gradvet measured."""
    clipper = find_norm_clipper()
    with _monitor(wl, tmp, record, "economy") as monitor:
        takes_norms = "norms" in inspect.signature(clipper).parameters
        clip = None if takes_norms and not inspect.isclass(clipper) else clipper(max_norm=1.0)

        def after(loss: Tensor) -> None:
            monitor.step(loss)
            norms = monitor.last_grad_norms
            if clip is not None:
                clip(monitor.parameters, norms=norms)
            else:
                clipper(monitor.parameters, 1.0, norms=norms)

        yield after


#: Variants in the order one round runs them; the first is the baseline.
VARIANTS: dict[str, Callable[[Workload, Path, bool], contextlib.AbstractContextManager]] = {
    "plain": plain,
    "gradvet default": gradvet_default,
    "gradvet full": gradvet_full,
    ".item() norms": item_norms,
    "lightning grad_norm": lightning_grad_norm,
    "wandb.watch gradients": wandb_watch,
    "tensorboard histograms": tensorboard_histograms,
    "clip_grad_norm_": clip_grad_norm,
    "gradvet default + clip": gradvet_clip,
}
