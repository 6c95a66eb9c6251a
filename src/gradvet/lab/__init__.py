"""The gradvet lab: reproduce the classic vanishing/exploding-gradient experiments.

``run_lab(out_dir)`` trains small networks on scikit-learn's digits and on the adding
problem, records every run with ``gradvet.Monitor``, saves the key numbers as
``results.json`` and writes a self-contained ``index.html``.

Example:
    >>> from gradvet.lab import run_lab
    >>> run_lab("lab-report", quick=True)  # doctest: +SKIP
    PosixPath('lab-report/index.html')
"""

from gradvet.lab._config import LabConfig
from gradvet.lab._runner import MODULES, run_experiments, run_lab

__all__ = ["MODULES", "LabConfig", "run_experiments", "run_lab"]
