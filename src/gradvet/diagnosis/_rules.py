"""Imports every rule module so that each registers itself, and fixes the order the rules run in.

The order matters: findings of one severity keep the order their rules ran in, and ``treat`` tries the
remedies of the first findings first. Registration order is import order, which a caller can change by
importing one rule module early (a test importing ``_units`` made ``treat`` of the demo's sigmoid MLP add
``activation:leaky_relu``): the rules run in :data:`ORDER`, whatever was imported first.
"""

from gradvet.diagnosis import _depth, _nonfinite, _time, _training, _units, _weights  # noqa: F401

#: gradvet's rules in the order they run; rules registered by others run after them, in registration order
ORDER = ("depth", "nonfinite", "time", "exploding_training", "stalled", "dead", "saturated", "weight_growth")
