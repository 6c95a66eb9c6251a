"""Diagnosis: rules that turn a run's measurements into findings."""

from gradvet.diagnosis._engine import RULES, diagnose, register_rule

__all__ = ["RULES", "diagnose", "register_rule"]
