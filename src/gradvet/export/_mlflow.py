"""Export a run to MLflow (a tracking server, or a local ``file:`` store)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Optional

from gradvet.export._source import RunLike, as_run, scalar_series

# MLflow metric names allow alphanumerics, _ - . space : and /.
_BAD = re.compile(r"[^\w\-. :/]")
_BATCH = 1000  # MLflow's limit of metrics per log_batch


def mlflow_key(tag: str) -> str:
    """A tag as an MLflow metric name (other characters become ``_``): ``(root)`` -> ``_root_``."""
    return _BAD.sub("_", tag)


@contextmanager
def _file_store_allowed(tracking_uri: Optional[str]) -> Iterator[None]:
    """MLflow >= 3.7 refuses ``file:`` stores unless MLFLOW_ALLOW_FILE_STORE is set; the
    caller asked for one explicitly, so allow it for the duration of the export only."""
    if not (tracking_uri or "").startswith("file:") or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def export(
    run_or_path: RunLike,
    tracking_uri: Optional[str] = None,
    *,
    experiment: str = "gradvet",
    run_name: Optional[str] = None,
    metrics: Optional[Sequence[str]] = None,
) -> str:
    """Log every scalar of a run into a new MLflow run.

    Args:
        run_or_path: a :class:`gradvet.Run`, a Monitor or a record path.
        tracking_uri: e.g. ``"file:./mlruns"`` or ``"http://host:5000"``; None: MLflow's
            default (``MLFLOW_TRACKING_URI``).
        experiment: experiment name (created if missing).
        run_name: MLflow run name.
        metrics: metric names or prefixes (see :func:`gradvet.export.scalar_series`).
            Metric names are tags with characters MLflow refuses replaced by ``_``.

    Returns:
        The MLflow run id (read back with ``MlflowClient(uri).get_metric_history(id, key)``;
        reading a ``file:`` store with MLflow >= 3.7 needs ``MLFLOW_ALLOW_FILE_STORE=true``).

    Raises:
        ImportError: mlflow is not installed.

    Example:
        >>> gradvet.export.mlflow("runs/exp1.gradvet", tracking_uri="file:./mlruns")  # doctest: +SKIP
    """
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ImportError("gradvet.export.mlflow needs mlflow: pip install 'gradvet[mlflow]'") from None
    run = as_run(run_or_path)
    now = int(time.time() * 1000)
    points = [
        Metric(key=mlflow_key(tag), value=v, timestamp=now, step=s)
        for tag, steps, values in scalar_series(run, metrics)
        for s, v in zip(steps.tolist(), values.tolist())
    ]
    with _file_store_allowed(tracking_uri):
        client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
        mrun = client.create_run(exp_id, run_name=run_name, tags={"gradvet.model": str(run.meta.get("model"))})
        run_id = mrun.info.run_id
        try:
            for i in range(0, len(points), _BATCH):
                client.log_batch(run_id, metrics=points[i : i + _BATCH])
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id)
    return run_id
