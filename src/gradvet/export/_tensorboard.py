"""Export a run to TensorBoard event files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from gradvet.export._source import PREFIX, RunLike, as_run, scalar_series


def export(
    run_or_path: RunLike, logdir: Any, *, histograms_every: int = 100, metrics: Optional[Sequence[str]] = None
) -> Path:
    """Write scalars per parameter/layer and histograms of per-parameter gradient norms.

    Args:
        run_or_path: a :class:`gradvet.Run`, a Monitor or a record path.
        logdir: the TensorBoard log directory (``tensorboard --logdir <logdir>``).
        histograms_every: every this many steps (steps divisible by it), a histogram of the
            per-parameter gradient norms, tagged ``gradvet/hist/param_grad_norm``; 0: none.
        metrics: metric names or prefixes (see :func:`gradvet.export.scalar_series`).

    Returns:
        ``logdir`` as a Path.

    Raises:
        ImportError: tensorboard is not installed.
        ValueError: ``histograms_every`` is negative.

    Example:
        >>> gradvet.export.tensorboard("runs/exp1.gradvet", "tb/exp1", histograms_every=50)  # doctest: +SKIP
    """
    if not isinstance(histograms_every, int) or histograms_every < 0:
        raise ValueError(f"histograms_every must be an int >= 0 (0: no histograms), got {histograms_every!r}")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("gradvet.export.tensorboard needs tensorboard: pip install 'gradvet[tensorboard]'") from None
    run = as_run(run_or_path)
    writer = SummaryWriter(log_dir=str(logdir))
    try:
        for tag, steps, values in scalar_series(run, metrics):
            for s, v in zip(steps.tolist(), values.tolist()):
                writer.add_scalar(tag, v, global_step=s)
        gn = run.get("param/grad_norm")
        if histograms_every and gn is not None:
            for s, row in zip(gn.steps.tolist(), gn.values):
                row = row[np.isfinite(row)]
                if s % histograms_every == 0 and row.size:
                    writer.add_histogram(f"{PREFIX}/hist/param_grad_norm", row, global_step=s)
    finally:
        writer.close()
    return Path(logdir)
