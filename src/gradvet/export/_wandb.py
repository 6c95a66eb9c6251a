"""Export a run to Weights & Biases (works offline: ``mode="offline"``, then ``wandb sync``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from gradvet.export._source import RunLike, as_run, scalar_series, steps_rows


def export(
    run_or_path: RunLike,
    project: str = "gradvet",
    *,
    mode: str = "offline",
    metrics: Optional[Sequence[str]] = None,
    **init_kwargs: Any,
) -> Path:
    """Log every scalar of a run into a new W&B run, one ``wandb.log`` per recorded step.

    Args:
        run_or_path: a :class:`gradvet.Run`, a Monitor or a record path.
        project: the W&B project.
        mode: ``"offline"`` (default: files only; upload later with ``wandb sync``),
            ``"online"`` or ``"disabled"``. ``WANDB_MODE`` in the environment wins, as in wandb.
        metrics: metric names or prefixes (see :func:`gradvet.export.scalar_series`).
        **init_kwargs: more ``wandb.init`` arguments (``name``, ``dir``, ``tags``...).

    Returns:
        The local directory of the W&B run (``.../wandb/offline-run-...``).

    Raises:
        ImportError: wandb is not installed.

    Example:
        >>> gradvet.export.wandb("runs/exp1.gradvet", project="my-project")  # doctest: +SKIP
    """
    try:
        import wandb
    except ImportError:
        raise ImportError("gradvet.export.wandb needs wandb: pip install 'gradvet[wandb]'") from None
    run = as_run(run_or_path)
    rows = steps_rows(list(scalar_series(run, metrics)))
    init_kwargs.setdefault("config", {"gradvet": {k: run.meta.get(k) for k in ("model", "optimizer", "config")}})
    wrun = wandb.init(project=project, mode=mode, **init_kwargs)  # type: ignore[arg-type]
    try:
        run_dir = Path(wrun.dir).parent
        for step, row in rows:
            wrun.log(row, step=step)
    finally:
        wrun.finish()
    return run_dir
