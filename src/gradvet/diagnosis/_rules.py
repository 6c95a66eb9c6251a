"""Imports every rule module so that each registers itself."""

from gradvet.diagnosis import _depth, _nonfinite, _time, _training, _units, _weights  # noqa: F401
