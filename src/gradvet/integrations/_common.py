"""What every integration shares: the loss of a step, compact scalars, printed findings."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from gradvet.monitor import Monitor


def global_grad_norm(monitor: Monitor) -> Tensor:
    """L2 norm of all gradients of the last step, from the per-parameter norms (no host sync).

    Parameters without a gradient (NaN norm) are left out.
    """
    norms = torch.stack(monitor.last_grad_norms).float()
    return norms.square().nansum().sqrt()


def summary_scalars(report: Any) -> dict[str, float]:
    """Compact scalars of a :class:`gradvet.Report` for a metrics logger.

    Returns:
        ``findings`` (count), and over the parameter layers whose gradient signal was measured
        on the last layer step: ``signal_min``/``signal_max`` (per-element RMS of dL/d output) and
        ``signal_ratio`` = max/min, the spread that vanishing or exploding gradients widen. The
        root module is left out: a model that returns its loss (Hugging Face) has dL/d output = 1.
    """
    out = {"findings": float(len(report.findings))}
    rms = [
        layer.signal_rms
        for layer in report.layers
        if layer.name and layer.role in ("param", "recurrent")
        and layer.signal_rms is not None and math.isfinite(layer.signal_rms) and layer.signal_rms > 0
    ]
    if rms:
        out["signal_min"], out["signal_max"] = min(rms), max(rms)
        out["signal_ratio"] = out["signal_max"] / out["signal_min"]
    return out


def print_findings(report: Any, console: Optional[Any] = None) -> None:
    """Print a report with rich (the user asked for it: ``print_findings=True``).

    Into a log file (stdout not a terminal) the table is printed at its full width, so
    no number is cut to fit 80 columns.
    """
    from rich.console import Console

    from gradvet._render import print_uncut

    console = console or Console()
    print_uncut(console, report)
    note = clip_note(getattr(report, "meta", None) or {})
    if note:
        console.print(note, markup=False, highlight=False, soft_wrap=True)


def clip_note(meta: dict[str, Any]) -> Optional[str]:
    """One line saying a record's gradient norms were taken after clipping (None otherwise).

    Integrations record ``grad_norms`` (``"pre_clip"``/``"post_clip"``) and ``max_grad_norm``
    in the run's metadata; diagnosis thresholds assume raw norms.

    Example:
        >>> clip_note({"grad_norms": "post_clip", "max_grad_norm": 1.0})[:52]
        'note: gradient norms were recorded after clipping to'
        >>> clip_note({"grad_norms": "pre_clip"}) is None
        True
    """
    if meta.get("grad_norms") != "post_clip":
        return None
    return (
        f"note: gradient norms were recorded after clipping to max_grad_norm={meta.get('max_grad_norm')}: "
        "large gradients look tame here; train with max_grad_norm=0 to record raw norms"
    )


def unscaled(loss: Tensor, scaler: Any) -> Tensor:
    """Divide an AMP-scaled loss by the scaler's current scale (a device tensor, no sync)."""
    scale = getattr(scaler, "_scale", None) if scaler is not None and scaler.is_enabled() else None
    return loss if scale is None else loss / scale.to(loss.device, loss.dtype)
