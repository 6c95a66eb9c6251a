"""bench/audit.py (issue 15's audit, re-run) works: a handful of its in-process groups, tiny trial counts, all pass.

The full audit runs by hand (``.venv/bin/python bench/audit.py [--quick]``); this only guards that the script
imports and that its attempts still match the library (an attempt that fails here is a regression or a stale
criterion, and says which).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

AUDIT = Path(__file__).resolve().parents[2] / "bench" / "audit.py"


def _audit_module():
    spec = importlib.util.spec_from_file_location("gradvet_bench_audit", AUDIT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_handful_of_audit_attempts_pass():
    audit = _audit_module()
    groups = ["not_a_record", "existing_record", "reenter", "chdir", "damage_random", "edge_check",
              "edge_monitor", "bad_args", "hooks", "amp_exact"]
    results = audit.run_audit(quick=True, only=groups, trials={"bit": 6, "bytes16": 6}, echo=False)
    failures = [f"[{r.group}] {r.name}: {r.detail}" for r in results if not r.ok]
    assert not failures, "\n".join(failures)
    assert {r.group for r in results} == set(groups) and len(results) >= 70
    summary = audit.summary(results)
    assert summary["total"]["attempts"] == len(results) and summary["total"]["failed"] == 0
