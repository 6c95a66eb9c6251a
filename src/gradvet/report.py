"""The Report: per-layer measurements and the findings drawn from them.

Built from a :class:`gradvet.record.Run` only (compute, store, present), so a
report can be rebuilt offline from a record file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from gradvet.findings import Finding
from gradvet.record._run import Run


def _f(x: Any) -> Optional[float]:
    """A JSON-friendly float (None for NaN/absent)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


@dataclass
class LayerReport:
    """Measurements of one layer, from the last recorded step that has them.

    Attributes:
        name: module name (``model.named_modules()``).
        type: module class name.
        role: ``"param"``, ``"activation"`` or ``"recurrent"``.
        activation: activation kind applied by or after this layer ("" if none seen).
        grad_norm: L2 norm of the gradients of the layer's own parameters.
        param_norm: L2 norm of the layer's own parameters.
        signal_norm: ||dL/d output|| over the batch.
        signal_rms: ||dL/d output|| / sqrt(numel), the per-element gradient signal.
        update_ratio: ||dW|| / ||W|| of the last measured update.
        act_mean, act_std: output statistics.
        sat_frac: fraction of saturated outputs.
        dead_frac: fraction of dead units (ReLU family).
        time_profile: ||dL/d x_t|| per input time step (recurrent layers).
        tied_to: the module that owns this layer's (shared) parameters, whose ``grad_norm`` counts them.
    """

    name: str
    type: str
    role: str
    activation: str = ""
    grad_norm: Optional[float] = None
    param_norm: Optional[float] = None
    signal_norm: Optional[float] = None
    signal_rms: Optional[float] = None
    update_ratio: Optional[float] = None
    act_mean: Optional[float] = None
    act_std: Optional[float] = None
    sat_frac: Optional[float] = None
    dead_frac: Optional[float] = None
    time_profile: Optional[list[float]] = None
    tied_to: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    """What gradvet found.

    Attributes:
        findings: diagnosed problems, most severe first.
        layers: per-layer measurements, input side first.
        steps: number of optimizer steps measured.
        meta: run metadata.
        loss: the last recorded loss (the last finite one when the run went non-finite).
        nonfinite_from: the first step whose loss or gradients were non-finite (None if none);
            the layer values are then each layer's last finite ones.
    """

    findings: list[Finding] = field(default_factory=list)
    layers: list[LayerReport] = field(default_factory=list)
    steps: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    loss: Optional[float] = None
    nonfinite_from: Optional[int] = None

    @property
    def healthy(self) -> bool:
        """True when no finding is a warning or an error."""
        return not any(f.severity in ("warning", "error") for f in self.findings)

    def kinds(self) -> list[str]:
        """Kinds of the warning/error findings."""
        return [f.kind for f in self.findings if f.severity != "info"]

    def finding(self, kind: str) -> Optional[Finding]:
        """The first finding of ``kind``, or None."""
        return next((f for f in self.findings if f.kind == kind), None)

    def layer(self, name: str) -> LayerReport:
        """The layer called ``name``.

        Raises:
            KeyError: no such layer (the message lists the layers).
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers: {[x.name for x in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "healthy": self.healthy,
            "steps": self.steps,
            "loss": self.loss,
            "findings": [f.to_dict() for f in self.findings],
            "layers": [layer.to_dict() for layer in self.layers],
            "meta": self.meta,
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), default=str, **kwargs)

    def table(self, full: bool = False) -> Any:
        """The per-layer table as a rich renderable; large models are compact (repeated blocks grouped)
        unless ``full``."""
        from gradvet._render import layer_table

        return layer_table(self, full)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from gradvet._render import render_report

        yield from render_report(self)

    def __str__(self) -> str:
        from gradvet._render import report_to_text

        return report_to_text(self)


def _last_row(run: Run, metric: str) -> Optional[np.ndarray]:
    s = run.get(metric)
    if s is None or len(s.steps) == 0:
        return None
    return s.values[-1]


def _last_finite(run: Run, metric: str) -> Optional[np.ndarray]:
    """Per column, the last finite value (profiles may compute a column on some steps only)."""
    s = run.get(metric)
    if s is None or len(s.steps) == 0 or s.values.ndim != 2:
        return None
    v = s.values.astype(np.float64)
    ok = np.isfinite(v)
    last = np.where(ok.any(axis=0), v.shape[0] - 1 - np.argmax(ok[::-1], axis=0), -1)
    out = np.full(v.shape[1], np.nan)
    cols = np.where(last >= 0)[0]
    out[cols] = v[last[cols], cols]
    return out


def _layer_param_norm(row: Optional[list[float]], idx: list[int]) -> Optional[float]:
    """The L2 norm over the parameters ``idx`` of ``row`` (a host list: a layer has a few parameters,
    and numpy's per-call cost was 2.5 ms of a ResNet-50's report), NaN entries left out; None if all are NaN."""
    if row is None or not idx:
        return None
    vals = [row[i] for i in idx if not math.isnan(row[i])]
    if not vals:
        return None
    return math.sqrt(math.fsum(v * v for v in vals))


def _host(row: Optional[np.ndarray]) -> Optional[list[float]]:
    return None if row is None else row.astype(np.float64).tolist()


def nonfinite_from(run: Run) -> Optional[int]:
    """When the run *ends* non-finite, the first step of that final stretch, else None.

    A step is non-finite when some parameter's gradient holds NaN/Inf, or the loss is +-inf, or
    NaN after a finite loss (a step given no loss records NaN too). A stretch that recovers (an
    AMP step the scaler skipped) does not count: the latest values are finite then.
    """
    loss = run.loss.astype(np.float64) if len(run.loss) else np.zeros(0)
    if not len(loss):
        return None
    had = np.maximum.accumulate(np.isfinite(loss))
    bad = np.isinf(loss) | (np.isnan(loss) & had)
    from gradvet.diagnosis._nonfinite import bad_param_steps

    grads_bad = bad_param_steps(run)
    if len(grads_bad) == len(loss):
        bad = bad | grads_bad
    if not bad[-1]:
        return None
    good = np.where(~bad)[0]
    first = int(good[-1]) + 1 if len(good) else 0
    return int(run.steps[first])


def layer_reports(run: Run) -> list[LayerReport]:
    """Per-layer summaries (last recorded values), input side first; after a run went non-finite,
    each value is the last finite one (a NaN everywhere would hide what led up to it)."""
    last = _last_finite if nonfinite_from(run) is not None else _last_row
    gn = last(run, "param/grad_norm")
    pn = _last_finite(run, "param/param_norm")
    gn_list, pn_list = _host(gn), _host(pn)
    lrow = {name: last(run, f"layer/{name}") for name in
            ("grad_norm", "grad_rms", "act_mean", "act_std", "sat_frac", "dead_frac")}
    upd = run.get("param/update_ratio")
    out = []
    for layer in run.ordered_layers():
        i, idx = layer["index"], layer.get("params", [])
        rep = LayerReport(layer["name"], layer["type"], layer["role"], layer.get("activation", ""),
                          tied_to=layer.get("tied_to", ""))
        rep.grad_norm = _layer_param_norm(gn_list, idx)
        rep.param_norm = _layer_param_norm(pn_list, idx)
        for attr, key in (("signal_norm", "grad_norm"), ("signal_rms", "grad_rms"), ("act_mean", "act_mean"),
                          ("act_std", "act_std"), ("sat_frac", "sat_frac"), ("dead_frac", "dead_frac")):
            row = lrow[key]
            if row is not None and i < len(row):
                setattr(rep, attr, _f(row[i]))
        if upd is not None and idx and pn is not None:
            r = upd.values[-1][idx].astype(np.float64)
            w = pn[idx].astype(np.float64)
            # a parameter that moved from exactly zero has ratio inf and norm 0: its step is unknown here
            ok = np.isfinite(r) & np.isfinite(w)
            if ok.any():
                rep.update_ratio = float(np.sqrt(np.sum((r[ok] * w[ok]) ** 2)) / max(np.sqrt(np.sum(w[ok] ** 2)), 1e-30))
            elif np.isposinf(r).any():
                rep.update_ratio = float("inf")
        t = run.get(f"time/{layer['name']}")
        if t is not None and len(t.steps):
            row = t.values[-1]
            rep.time_profile = [float(v) for v in row[~np.isnan(row)]]
        out.append(rep)
    return out


def build_report(run: Run) -> Report:
    """Diagnose ``run`` and assemble the :class:`Report`."""
    from gradvet.diagnosis import diagnose

    loss = run.loss
    with np.errstate(all="ignore"):  # NaN steps are data here: no numpy warning reaches the user
        return Report(
            findings=diagnose(run),
            layers=layer_reports(run),
            steps=len(run.steps),
            meta=dict(run.meta),
            loss=_last_finite_loss(loss),
            nonfinite_from=nonfinite_from(run),
        )


def _last_finite_loss(loss: np.ndarray) -> Optional[float]:
    finite = loss[np.isfinite(loss)] if len(loss) else loss
    if len(finite) < len(loss) and len(finite):
        return _f(finite[-1])
    return _f(loss[-1]) if len(loss) else None
