"""A run: static tables (parameters, layers) and metric series, as numpy arrays.

Metric names:

- ``loss``, ``loss_scale`` - one value per optimizer step;
- ``input_nonfinite`` - NaN/Inf values in the model's inputs, per step (NaN where not checked);
- ``param/<stat>`` - ``[steps, P]`` for the statistics in ``gradvet.stats.PARAM_STATS``
  and ``param/update_ratio`` (on update steps only);
- ``layer/<stat>`` - ``[layer steps, L]`` for ``gradvet.stats.LAYER_STATS``;
- ``graph/in_sens``, ``graph/in_grad`` - ``[layer steps, L]``: ||dL/dx * x|| and ||dL/dx|| of
  the input of each layer whose input is on the trunk (NaN for the others; ``gradvet._graph``);
- ``time/<layer name>`` - ``[layer steps, T]``: ||dL/d x_t|| for each time step t of a
  recurrent layer's input.

The same class holds a live Monitor's data and a record read back from disk, so
reports and diagnosis are plain functions of a :class:`Run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class Series:
    """Steps and values of one metric; ``values`` has one row per step."""

    steps: np.ndarray
    values: np.ndarray


def _concat(blocks: list[tuple[np.ndarray, np.ndarray]]) -> Series:
    width = max((v.shape[1] if v.ndim == 2 else 0) for _, v in blocks)
    rows = []
    for _, v in blocks:
        if v.ndim == 2 and v.shape[1] < width:
            pad = np.full((v.shape[0], width - v.shape[1]), np.nan, dtype=np.float32)
            v = np.concatenate([v, pad], axis=1)
        rows.append(v)
    return Series(np.concatenate([s for s, _ in blocks]), np.concatenate(rows))


@dataclass
class Run:
    """Everything recorded about one training run (or one ``check``).

    Attributes:
        meta: free-form metadata (gradvet version, model class, profile, status).
        params: one dict per monitored parameter: name, layer, shape, numel, sparse.
        layers: one dict per tapped layer: name, type, role, activation, params, order.
    """

    meta: dict[str, Any] = field(default_factory=dict)
    params: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    _blocks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    _cache: dict[str, Series] = field(default_factory=dict)
    _ordered: Optional[tuple[list, int, list[dict[str, Any]]]] = field(default=None, repr=False, compare=False)

    def add(self, metric: str, steps: np.ndarray, values: np.ndarray) -> None:
        """Append a block of rows to a metric."""
        self._blocks.setdefault(metric, []).append(
            (np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float32))
        )
        self._cache.pop(metric, None)

    @property
    def metrics(self) -> list[str]:
        """Names of the recorded metrics."""
        return sorted(self._blocks)

    def series(self, metric: str) -> Series:
        """Steps and values of ``metric``.

        Raises:
            KeyError: if the metric was never recorded (the message lists those that were).
        """
        if metric not in self._cache:
            blocks = self._blocks.get(metric)
            if not blocks:
                raise KeyError(f"metric {metric!r} not in this run; recorded: {self.metrics}")
            self._cache[metric] = _concat(blocks)
        return self._cache[metric]

    def get(self, metric: str) -> Optional[Series]:
        """Like :meth:`series` but None when absent."""
        return self.series(metric) if metric in self._blocks else None

    # -- convenience views ----------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        """Optimizer step indices that were recorded."""
        s = self.get("loss")
        return s.steps if s is not None else np.zeros(0, dtype=np.int64)

    @property
    def loss(self) -> np.ndarray:
        """Loss per step (NaN where no loss was passed to ``step``)."""
        s = self.get("loss")
        return s.values if s is not None else np.zeros(0, dtype=np.float32)

    @property
    def skipped(self) -> np.ndarray:
        """Boolean per step: the AMP grad scaler skipped this optimizer step.

        GradScaler lowers its scale exactly on the steps it skips (inf/NaN gradients),
        so a step is skipped when the next recorded scale is lower.
        """
        s = self.get("loss_scale")
        if s is None:
            return np.zeros(len(self.steps), dtype=bool)
        scale = s.values.astype(np.float64)
        final = self.meta.get("final_loss_scale")
        nxt = np.append(scale[1:], float(final) if final is not None else scale[-1:])
        return nxt < scale

    @property
    def layer_names(self) -> list[str]:
        """Layer names, input side first."""
        return [layer["name"] for layer in self.ordered_layers()]

    def ordered_layers(self) -> list[dict[str, Any]]:
        """Layers sorted input side first (execution order, unexecuted last).

        The rules ask for this list dozens of times per report: it is built once per layer table
        (a new list each call; the dicts are shared and read-only by convention).
        """
        cached = self._ordered
        if cached is None or cached[0] is not self.layers or cached[1] != len(self.layers):
            big = 1 << 30
            keyed = sorted(
                enumerate(self.layers), key=lambda t: (t[1].get("order", -1) < 0, t[1].get("order", big), t[0])
            )
            cached = self._ordered = self.layers, len(self.layers), [dict(layer, index=i) for i, layer in keyed]
        return list(cached[2])

    def param_names(self) -> list[str]:
        return [p["name"] for p in self.params]

    def report(self) -> Any:
        """Diagnose this run and return a :class:`gradvet.Report`."""
        from gradvet.report import build_report

        return build_report(self)
