"""Measured steps of a compiled model run eagerly; the others run its compiled graph untouched.

gradvet's layer hooks are gates that dynamo traces (``gradvet._taps``): on a step that is not
measured they read ``active`` (False) and do nothing, so a ``torch.compile``'d model keeps the one
graph it has without gradvet. A measured step needs the hooks' bodies, which run eagerly; traced,
they would break the graph at every layer and make dynamo compile each module's ``forward`` as a
frame of its own, recompiling ``nn.Linear.forward`` per shape and dtype up to its limit. Instead,
while a step is measured the compiler's stance is ``"force_eager"`` (``torch.compiler.set_stance``,
torch >= 2.6): the whole step runs eagerly, measured exactly as an uncompiled model, and no graph
is compiled for it. The stance is restored when the measured step ends.

Nothing is done where dynamo was never imported (nothing can be compiled) or inside a compiled
region (the stance cannot change there).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Optional

import torch

log = logging.getLogger(__name__)


class EagerWhileMeasuring:
    """Holds the ``force_eager`` stance from :meth:`set` (True) to :meth:`set` (False) or :meth:`release`.

    Monitors share one stance: the first to hold it sets it, the last to let go restores the one
    before (two Monitors measuring two models would otherwise restore each other's).
    """

    def __init__(self) -> None:
        self.holding = False

    def set(self, measured: bool) -> None:
        """Enter the eager stance for a measured step, leave it for one that is not."""
        if measured and not self.holding:
            self.holding = _acquire()
        elif not measured:
            self.release()

    def release(self) -> None:
        if self.holding:
            self.holding = False
            _release()


_held: list[Any] = []  # the stance context while any Monitor holds it
_holders = 0


def _acquire() -> bool:
    global _holders
    if _holders == 0:
        ctx = _force_eager()
        if ctx is None:
            return False
        _held.append(ctx)
    _holders += 1
    return True


def _release() -> None:
    global _holders
    _holders -= 1
    if _holders == 0 and _held:
        try:
            _held.pop().__exit__(None, None, None)  # the stance before the first holder's
        except Exception:
            log.exception("gradvet: could not restore the compiler's stance")


def _force_eager() -> Optional[Any]:
    if "torch._dynamo" not in sys.modules:  # nothing was compiled: importing dynamo costs ~1.4 s
        return None
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is None or torch.compiler.is_compiling():  # torch < 2.6, or inside a compiled region
        return None
    try:
        return set_stance("force_eager")  # takes effect now; __exit__ restores the prior stance
    except Exception:  # a stance that cannot be changed here: the traced gates still measure
        log.debug("gradvet: could not set the compiler's stance", exc_info=True)
        return None
