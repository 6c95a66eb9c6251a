"""Diagnosis rules (placeholder set; see the diagnosis module docs)."""

from __future__ import annotations

import numpy as np

from gradvet.diagnosis._engine import register_rule
from gradvet.findings import Finding
from gradvet.record._run import Run


@register_rule("nonfinite")
def nonfinite(run: Run) -> list[Finding]:
    s = run.get("param/grad_nonfinite")
    if s is None:
        return []
    bad = np.nan_to_num(s.values, nan=0.0) > 0
    if not bad.any():
        return []
    names = run.param_names()
    cols = np.where(bad.any(axis=0))[0]
    layers = sorted({run.params[c]["layer"] for c in cols})
    return [Finding("nonfinite_gradients", "error", layers, f"non-finite gradients in {[names[c] for c in cols]}")]
