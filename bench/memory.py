"""Memory over a long monitored run: host RSS, CUDA memory, record size per step.

Runs ``--steps`` monitored training steps (default 10,000) with a record file and
reports resident memory at the start, at the end and at its sampled peak, the
growth per 1,000 steps, CUDA allocated memory (start, end, peak) when on a GPU,
and the size of the record (SQLite file plus WAL) per step.

Usage::

    python bench/memory.py --model mlp --steps 10000 --json mem.json
    python bench/memory.py --model transformer --profile full --steps 2000
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
from common import env_info, print_table, setup_device, sync, train_step, write_json
from models import MODELS, build

import gradvet


def rss_bytes() -> int:
    """Resident set size of this process (psutil, else /proc/self/status VmRSS)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no psutil and no /proc/self/status: cannot read RSS") from None


def record_bytes(path: Path) -> int:
    """Size of the record on disk: the database, its WAL and shared-memory files."""
    return sum(
        p.stat().st_size for p in (Path(str(path) + s) for s in ("", "-wal", "-shm")) if p.exists()
    )


def cuda_mem(device: torch.device) -> dict[str, int]:
    if device.type != "cuda":
        return {}
    return {
        "allocated": torch.cuda.memory_allocated(device),
        "peak": torch.cuda.max_memory_allocated(device),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = setup_device(args.device, args.threads)
    wl = build(args.model, device, args.tiny)
    for _ in range(args.warmup):  # allocator and autograd caches settle before the start reading
        train_step(wl)
    sync(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="gradvet-mem-") as tmp:  # the default record goes with it
        path = None if args.no_record else Path(args.record or os.path.join(tmp, "run.gradvet"))
        start, c_start = rss_bytes(), cuda_mem(device)
        samples: list[tuple[int, int]] = [(0, start)]
        t0 = time.perf_counter()
        with gradvet.Monitor(
            wl.model, optimizer=wl.optimizer, record=path, profile=args.profile
        ) as monitor:
            for s in range(1, args.steps + 1):
                train_step(wl, monitor.step)
                if s % args.sample_every == 0:
                    samples.append((s, rss_bytes()))
            sync(device)
            end, c_end = rss_bytes(), cuda_mem(device)
        elapsed = time.perf_counter() - t0
        gc.collect()
        after_close = rss_bytes()
        size = record_bytes(path) if path is not None else 0
    peak = max(r for _, r in samples + [(args.steps, end)])
    return {
        "env": env_info(device),
        "args": vars(args),
        "model": wl.description,
        "record": args.record,  # None: a temporary record, measured and removed
        "rss_start": start,
        "rss_end": end,
        "rss_after_close": after_close,
        "rss_peak_sampled": peak,
        "rss_growth_per_1k_steps": (end - start) / args.steps * 1000,
        "cuda": {"start": c_start, "end": c_end},
        "record_bytes": size,
        "record_bytes_per_step": size / args.steps,
        "seconds": elapsed,
        "samples": samples,
    }


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=MODELS, default="mlp")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--steps", type=int, default=10_000, help="monitored steps (default 10,000)")
    p.add_argument("--profile", default="economy", help="gradvet profile (default economy)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--sample-every", type=int, default=100, help="RSS sampling period in steps")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--record", default=None, help="record path (default: a temporary file)")
    p.add_argument("--no-record", action="store_true", help="keep the run in memory instead")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    out = run(args)
    mib = 1 / 2**20
    rows = [
        [
            "RSS start / end / peak (MiB)",
            f"{out['rss_start'] * mib:.1f} / {out['rss_end'] * mib:.1f} / "
            f"{out['rss_peak_sampled'] * mib:.1f}",
        ],
        ["RSS after close (MiB)", f"{out['rss_after_close'] * mib:.1f}"],
        ["RSS growth per 1k steps (KiB)", f"{out['rss_growth_per_1k_steps'] / 1024:.1f}"],
        ["record size (KiB)", f"{out['record_bytes'] / 1024:.1f}"],
        ["record bytes per step", f"{out['record_bytes_per_step']:.1f}"],
        ["wall time (s)", f"{out['seconds']:.1f}"],
    ]
    if out["cuda"]["start"]:
        c0, c1 = out["cuda"]["start"], out["cuda"]["end"]
        rows.append(
            [
                "CUDA allocated start / end / peak (MiB)",
                f"{c0['allocated'] * mib:.1f} / {c1['allocated'] * mib:.1f} / {c1['peak'] * mib:.1f}",
            ]
        )
    title = f"memory: {out['model']}, profile {args.profile}, {args.steps} steps"
    print_table(title, ["quantity", "value"], rows)
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
