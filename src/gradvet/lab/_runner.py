"""``run_lab``: run the experiments with progress bars, save results.json, write index.html."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gradvet._version import __version__
from gradvet.lab import _cures, _dead, _depth, _exploding, _time
from gradvet.lab._config import LabConfig
from gradvet.lab._context import LabContext
from gradvet.lab._page import render_lab

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
#: name -> module with ``n_runs(ctx)`` and ``run(ctx) -> dict``, in page order.
MODULES = {m.NAME: m for m in (_depth, _cures, _exploding, _time, _dead)}


@contextmanager
def _one_thread() -> Any:
    """The lab's models are tiny: one intra-op thread is faster than two fighting, and deterministic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _progress(console: Optional[Console]) -> Any:
    if console is None:
        yield None
        return
    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        yield progress


def run_experiments(
    ctx: LabContext, names: Optional[list[str]] = None, console: Optional[Console] = None
) -> dict[str, Any]:
    """Run the experiments ``names`` (default: all) and return their results by name."""
    chosen = names or list(MODULES)
    unknown = sorted(set(chosen) - set(MODULES))
    if unknown:
        raise ValueError(f"unknown lab experiment(s) {unknown}; choose from {list(MODULES)}")
    results: dict[str, Any] = {}
    with _progress(console) as progress, _one_thread():
        tasks = {n: progress.add_task(n, total=MODULES[n].n_runs(ctx), start=False) if progress else None
                 for n in chosen}
        for name in chosen:
            if progress is not None:
                progress.start_task(tasks[name])
            advance: Callable[[int], None] = (
                (lambda k, t=tasks[name]: progress.advance(t, k)) if progress else (lambda k: None)  # type: ignore[misc]
            )
            ctx.advance = advance
            started = time.perf_counter()
            results[name] = MODULES[name].run(ctx)
            results[name]["wall_s"] = round(time.perf_counter() - started, 1)
            log.info("lab: %s done in %.1f s", name, results[name]["wall_s"])
    return results


def run_lab(
    out_dir: PathLike,
    quick: bool = True,
    seed: int = 0,
    console: Optional[Console] = None,
    experiments: Optional[list[str]] = None,
) -> Path:
    """Reproduce the classic vanishing/exploding-gradient experiments and write an HTML report.

    Args:
        out_dir: output folder: ``index.html``, ``results.json`` and ``runs/**/*.gradvet``.
        quick: the small configuration (about 1-2 minutes on 2 CPU cores) or the full one.
        seed: base seed of every model and batch stream.
        console: show progress bars there (None: silent).
        experiments: a subset of ``depth``, ``cures``, ``exploding``, ``time``, ``dead``.

    Returns:
        The path of ``index.html``.

    Raises:
        ValueError: an unknown experiment name.

    Example:
        >>> from gradvet.lab import run_lab
        >>> run_lab("lab-report")  # doctest: +SKIP
        PosixPath('lab-report/index.html')
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = LabContext(out, LabConfig.quick() if quick else LabConfig.full(), seed)
    started = time.perf_counter()
    results = run_experiments(ctx, experiments, console)
    results["meta"] = {
        "mode": "quick" if quick else "full",
        "seed": seed,
        "wall_s": round(time.perf_counter() - started, 1),
        "threads": 1,
        "torch": torch.__version__,
        "gradvet": __version__,
        "command": f"gradvet lab {'--quick' if quick else '--full'} --seed {seed} -o {out_dir}",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(ctx.config).items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    index = out / "index.html"
    if console is not None:
        with console.status("writing the HTML report..."):
            index.write_text(render_lab(results, ctx), encoding="utf-8")
    else:
        index.write_text(render_lab(results, ctx), encoding="utf-8")
    return index
