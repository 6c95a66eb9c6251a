"""Rule registry and the ``diagnose`` entry point."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from gradvet.findings import SEVERITIES, Finding
from gradvet.record._run import Run

log = logging.getLogger(__name__)

Rule = Callable[[Run], list[Finding]]
RULES: dict[str, Rule] = {}


def register_rule(name: str) -> Callable[[Rule], Rule]:
    """Decorator adding a rule ``run -> list[Finding]`` to the registry."""

    def deco(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return deco


def diagnose(run: Run) -> list[Finding]:
    """Run every rule; findings sorted most severe first.

    A rule that fails is logged and skipped: a bug in one rule must not hide the others.
    """
    from gradvet.diagnosis._rules import ORDER  # (importing it registers the rules)

    findings: list[Finding] = []
    rank = {name: k for k, name in enumerate(ORDER)}
    names = list(RULES)
    for name in sorted(names, key=lambda n: (rank.get(n, len(ORDER)), names.index(n))):
        rule = RULES[name]
        try:
            # NaN/Inf in a record is data to reason about, not an error: numpy's RuntimeWarnings about it
            # are gradvet's internals and must not reach the user's stderr
            with np.errstate(all="ignore"):
                findings.extend(rule(run))
        except Exception:
            log.exception("gradvet: diagnosis rule %s failed", name)
    # most severe first; among errors a NaN first: it corrupts every other measurement after it
    return sorted(findings, key=lambda f: (-SEVERITIES.index(f.severity), f.kind != "nonfinite_gradients"))
