"""Exporters: a gradvet record to TensorBoard, Weights & Biases or MLflow.

The record is the source of truth (Cockpit's "compute, store, present"): each exporter
reads a :class:`gradvet.Run` (from a path, a Run or a Monitor) and writes its series as
scalars, one per metric and parameter or layer, tagged
``gradvet/<metric>/<parameter or layer name>`` (``gradvet/loss`` for scalar metrics).
NaN entries ("not measured") are left out; infinities are written as they are.

Each backend is imported only when its exporter is called, so it stays optional:
``pip install 'gradvet[tensorboard]'``, ``'gradvet[wandb]'``, ``'gradvet[mlflow]'``.

Example:
    >>> import gradvet.export
    >>> gradvet.export.tensorboard("runs/exp1.gradvet", "tb/exp1")  # doctest: +SKIP
    >>> gradvet.export.mlflow("runs/exp1.gradvet", tracking_uri="file:./mlruns")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from gradvet.export._source import RunLike, as_run, scalar_series, steps_rows

__all__ = ["as_run", "mlflow", "scalar_series", "steps_rows", "tensorboard", "wandb"]


def tensorboard(
    run_or_path: RunLike,
    logdir: Any,
    *,
    histograms_every: int = 100,
    metrics: Optional[Sequence[str]] = None,
) -> Path:
    """Write a run as TensorBoard events. See :func:`gradvet.export._tensorboard.export`."""
    from gradvet.export._tensorboard import export

    return export(run_or_path, logdir, histograms_every=histograms_every, metrics=metrics)


def wandb(
    run_or_path: RunLike,
    project: str = "gradvet",
    *,
    mode: str = "offline",
    metrics: Optional[Sequence[str]] = None,
    **init_kwargs: Any,
) -> Path:
    """Log a run to Weights & Biases. See :func:`gradvet.export._wandb.export`."""
    from gradvet.export._wandb import export

    return export(run_or_path, project, mode=mode, metrics=metrics, **init_kwargs)


def mlflow(
    run_or_path: RunLike,
    tracking_uri: Optional[str] = None,
    *,
    experiment: str = "gradvet",
    run_name: Optional[str] = None,
    metrics: Optional[Sequence[str]] = None,
) -> str:
    """Log a run to MLflow. See :func:`gradvet.export._mlflow.export`."""
    from gradvet.export._mlflow import export

    return export(run_or_path, tracking_uri, experiment=experiment, run_name=run_name, metrics=metrics)
