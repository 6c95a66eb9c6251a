"""What every experiment of the lab shares: output folder, sizes, seed, progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import gradvet
from gradvet.lab._config import LabConfig


def _no_progress(n: int = 1) -> None:
    return None


@dataclass
class LabContext:
    """Shared state of one lab run.

    Attributes:
        out_dir: where records, ``results.json`` and ``index.html`` go.
        config: experiment sizes.
        seed: base seed; each model and batch stream derives its own from it.
        advance: called once per finished training run (drives the progress bar).
    """

    out_dir: Path
    config: LabConfig
    seed: int = 0
    advance: Callable[[int], None] = field(default=_no_progress)

    def record(self, experiment: str, name: str) -> Path:
        """Path of the record of run ``name`` of ``experiment``."""
        return self.out_dir / "runs" / experiment / f"{name}.gradvet"

    def rel(self, path: Path) -> str:
        """``path`` relative to the output folder (stored in results.json)."""
        return path.relative_to(self.out_dir).as_posix()

    def load(self, rel_path: str) -> Any:
        """Load a record given its path relative to the output folder."""
        return gradvet.load(self.out_dir / rel_path)


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    keep = [c.lower() if c.isalnum() else "-" for c in text]
    return "-".join(filter(None, "".join(keep).split("-")))


def maybe(x: Optional[float]) -> Optional[float]:
    """A JSON-safe float: None for None, NaN or infinity."""
    if x is None:
        return None
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None
