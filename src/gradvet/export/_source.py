"""Turn a run into named scalar series: the one thing every exporter writes."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import numpy as np

from gradvet.record import Run, load

RunLike = Union[Run, Any, str, "os.PathLike[str]"]

#: Tag prefix of everything gradvet exports.
PREFIX = "gradvet"


def as_run(run_or_path: RunLike) -> Run:
    """A :class:`gradvet.Run` from a Run, a Monitor (``monitor.load()``) or a record path.

    Raises:
        TypeError: for anything else.
        FileNotFoundError: no record at the path.
    """
    if isinstance(run_or_path, Run):
        return run_or_path
    if isinstance(run_or_path, (str, os.PathLike)):
        return load(run_or_path)
    if callable(getattr(run_or_path, "load", None)):
        return run_or_path.load()
    raise TypeError(
        f"expected a gradvet.Run, a gradvet.Monitor or a record path, got {type(run_or_path).__name__}; "
        "pass the path given to Monitor(record=...)"
    )


def _column_names(run: Run, metric: str, width: int) -> list[str]:
    if metric.startswith("param/"):
        names = run.param_names()
    elif metric.startswith(("layer/", "graph/")):
        names = [layer["name"] or "(root)" for layer in run.layers]
    else:
        names = []
    return names + [str(i) for i in range(len(names), width)]


def _wanted(metric: str, metrics: Optional[Sequence[str]]) -> bool:
    if metrics is None:
        return not metric.startswith("time/")  # per-time-step profiles are not scalars
    return any(metric == m or metric.startswith(m.rstrip("/") + "/") for m in metrics)


def scalar_series(run: Run, metrics: Optional[Sequence[str]] = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(tag, steps, values)`` per scalar series of ``run``, NaN entries dropped.

    Args:
        run: the run.
        metrics: metric names or prefixes to export (``["loss", "layer/"]``); default: all
            but the ``time/`` profiles.

    Example:
        >>> r = Run(params=[{"name": "w"}])
        >>> r.add("param/grad_norm", np.array([0, 1]), np.array([[1.0], [np.nan]]))
        >>> [(t, s.tolist(), v.tolist()) for t, s, v in scalar_series(r)]
        [('gradvet/param/grad_norm/w', [0], [1.0])]
    """
    for metric in run.metrics:
        if not _wanted(metric, metrics):
            continue
        series = run.series(metric)
        values = series.values if series.values.ndim == 2 else series.values[:, None]
        names = [""] if series.values.ndim == 1 else _column_names(run, metric, values.shape[1])
        for j, name in enumerate(names):
            col = values[:, j]
            keep = ~np.isnan(col)
            tag = f"{PREFIX}/{metric}" + (f"/{name}" if name else "")
            yield tag, series.steps[keep], col[keep]


def steps_rows(series: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> list[tuple[int, dict[str, float]]]:
    """Regroup series by step, ascending: ``[(step, {tag: value})]`` (for step-wise loggers)."""
    rows: dict[int, dict[str, float]] = {}
    for tag, steps, values in series:
        for s, v in zip(steps.tolist(), values.tolist()):
            rows.setdefault(int(s), {})[tag] = float(v)
    return sorted(rows.items())
