"""gradvet: find out why a PyTorch network will not learn when the cause is in its gradients.

The everyday API::

    report = gradvet.check(model, (inputs, targets), loss_fn)
    with gradvet.Monitor(model, optimizer=opt, record="runs/exp1.gradvet") as monitor:
        ...; loss.backward(); monitor.step(loss); opt.step()
    run = gradvet.load("runs/exp1.gradvet")
    result = gradvet.treat(model, (inputs, targets), loss_fn)   # remedies, measured again
"""

from gradvet import remedies
from gradvet._version import __version__
from gradvet.check import check
from gradvet.config import PROFILES, MonitorConfig
from gradvet.errors import GradvetUsageError
from gradvet.findings import KINDS, Cause, Finding, Remedy
from gradvet.monitor import Monitor
from gradvet.record import Run, load
from gradvet.report import LayerReport, Report
from gradvet.treat import Attempt, TreatResult, treat

__all__ = [
    "KINDS",
    "Attempt",
    "PROFILES",
    "Cause",
    "Finding",
    "GradvetUsageError",
    "LayerReport",
    "Monitor",
    "MonitorConfig",
    "Remedy",
    "Report",
    "TreatResult",
    "Run",
    "__version__",
    "check",
    "load",
    "remedies",
    "treat",
]
