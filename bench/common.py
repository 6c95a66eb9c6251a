"""Shared pieces of the benchmarks: device setup, the timed step, statistics, output.

A step is ``zero_grad -> forward -> loss -> backward -> after_backward(loss) ->
optimizer.step``; ``after_backward`` is where a monitor (or a peer tool) does its
work, exactly where the gradvet docs tell users to call ``monitor.step(loss)``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from models import Workload
from torch import Tensor

AfterBackward = Optional[Callable[[Tensor], None]]


def setup_device(device: str, threads: Optional[int]) -> torch.device:
    """Validate ``device`` and set the intra-op thread count (``None``: torch's default)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False")
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.device(device)


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(wl: Workload, after_backward: AfterBackward = None) -> None:
    """One optimizer step on the workload's fixed batch."""
    wl.optimizer.zero_grad(set_to_none=True)
    with wl.autocast():
        loss = wl.loss_fn(wl.model(wl.inputs), wl.targets)
    loss.backward()
    if after_backward is not None:
        after_backward(loss)
    wl.optimizer.step()


def forward_backward(wl: Workload) -> None:
    """Forward and backward only (what ``gradvet.check`` is compared with)."""
    for p in wl.model.parameters():
        p.grad = None
    with wl.autocast():
        loss = wl.loss_fn(wl.model(wl.inputs), wl.targets)
    loss.backward()


def timed(device: torch.device, fn: Callable[[], Any]) -> float:
    """Wall seconds ``fn()`` takes, device work included."""
    return timed2(device, fn)[0]


def timed2(device: torch.device, fn: Callable[[], Any]) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of ``fn()``; cpu is this process's CPU time, all threads.

    CPU time hardly moves when other processes compete for the cores (it is what
    the process itself spent), so on a shared machine its ratios are the steadier
    ones; it misses work done in other processes (wandb's service) and GPU time.
    """
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def summarize(
    times: list[float],
    base: Optional[list[float]],
    cpu: Optional[list[float]] = None,
    cpu_base: Optional[list[float]] = None,
) -> dict[str, Any]:
    """Median, spread and ratios to the paired baseline rounds (wall, and CPU if given)."""
    out: dict[str, Any] = {
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
    }
    if base:
        out["ratio"] = out["median_s"] / statistics.median(base)
        # round r of a variant against round r of the baseline: drift between rounds cancels
        out["paired_ratio"] = statistics.median(t / b for t, b in zip(times, base))
    if cpu:
        out["cpu_times_s"] = cpu
        out["cpu_median_s"] = statistics.median(cpu)
        if cpu_base:
            out["cpu_ratio"] = out["cpu_median_s"] / statistics.median(cpu_base)
    return out


def env_info(device: torch.device) -> dict[str, Any]:
    """What a reader needs to reproduce the numbers."""
    import gradvet

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gradvet": gradvet.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "src"], capture_output=True, text=True
        )
        info["git"] = sha.stdout.strip() + ("+dirty-src" if dirty.stdout.strip() else "")
    except OSError:
        info["git"] = None
    return info


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table when rich is importable, plain aligned text otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(c)) for c in col) for col in zip(columns, *rows)]
        print(title)
        for row in [columns, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        return
    table = Table(title=title)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(170, len(title) + 4)).print(table)


def write_json(path: Optional[str], data: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, default=str))
        print(f"wrote {path}", file=sys.stderr)
