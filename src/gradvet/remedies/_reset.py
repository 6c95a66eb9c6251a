"""Re-initialise the layers whose parameters hold NaN or Inf.

A weight that became non-finite (an earlier divergent step, a corrupted checkpoint, a
bad manual edit) makes every forward pass non-finite from that layer on; no optimizer
step can repair it, because its gradient is non-finite too. The fix is to restore the
layer from an earlier checkpoint or, failing that, to re-initialise it with the layer's
own ``reset_parameters()`` (PyTorch's default init for that layer type).
"""

from __future__ import annotations

import torch
from torch import nn

from gradvet.remedies._result import Change, RemedyNotApplicable

_MARK = "reset_nonfinite"


def _nonfinite_entries(module: nn.Module) -> int:
    return sum(int((~torch.isfinite(p.detach())).sum()) for p in module.parameters(recurse=False))


def reinit_nonfinite(model: nn.Module) -> list[Change]:
    """Re-initialise, in place, every module whose own parameters hold NaN/Inf.

    Each such module's ``reset_parameters()`` draws fresh weights (PyTorch's default init
    for its type); modules with only finite parameters are left untouched. A one-off
    repair at setup time: it reads the parameters on the host.

    Args:
        model: edited in place.

    Returns:
        One :class:`Change` per re-initialised module; empty when every parameter is
        finite again after an earlier application.

    Raises:
        RemedyNotApplicable: every parameter is finite (and nothing was reset before), or
            a module with non-finite parameters has no ``reset_parameters()``.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     layer.weight[0, 0] = float("inf")
        >>> reinit_nonfinite(layer)[0].new
        'reset_parameters() (default init of Linear)'
        >>> bool(torch.isfinite(layer.weight).all())
        True
    """
    bad = [(name, m, n) for name, m in model.named_modules() if (n := _nonfinite_entries(m))]
    if not bad:
        if any(getattr(m, "_gradvet_init", None) == _MARK for m in model.modules()):
            return []
        raise RemedyNotApplicable("every parameter is finite: there is nothing to re-initialise (a NaN born in "
                                  "the forward pass comes from an operation, not from the weights)")
    no_reset = [name or "(root)" for name, m, _ in bad if not callable(getattr(m, "reset_parameters", None))]
    if no_reset:
        raise RemedyNotApplicable(f"modules {no_reset} hold non-finite parameters but have no reset_parameters(); "
                                  "load them from an earlier checkpoint or re-initialise them by hand")
    changes = []
    for name, m, n in bad:
        m.reset_parameters()
        m._gradvet_init = _MARK  # type: ignore[assignment]
        changes.append(Change(name, "init", f"{n} non-finite parameter entries",
                              f"reset_parameters() (default init of {type(m).__name__})"))
    return changes
