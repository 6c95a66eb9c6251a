"""CUDA peak memory of a monitored training step against the plain one (gradvet issue 13: full <= +10%).

Each variant runs ``--steps`` steps of the workload from a fresh peak counter (``reset_peak_memory_stats``)
after ``--warmup`` steps, so the optimizer state and the caching allocator are in their steady state; the
peak is ``torch.cuda.max_memory_allocated`` over those steps. Variants run in the order given, plain first.

Usage (needs a GPU; ``--tiny --device cpu`` only checks that the script runs)::

    python bench/cuda_peak.py --model gpt2 --profiles economy full --json cuda_peak.json
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Optional

import torch
from common import print_table, setup_device, train_step, write_json
from models import MODELS, build

import gradvet


def peak(wl: Any, profile: Optional[str], steps: int, warmup: int) -> int:
    """Peak bytes allocated over ``steps`` steps of ``profile`` (None: plain), 0 off CUDA."""
    cuda = wl.device.type == "cuda"
    ctx = (gradvet.Monitor(wl.model, optimizer=wl.optimizer, profile=profile) if profile
           else contextlib.nullcontext(None))
    with ctx as mon:
        after = None if mon is None else mon.step
        for _ in range(warmup):
            train_step(wl, after)
        if cuda:
            torch.cuda.synchronize(wl.device)
            torch.cuda.reset_peak_memory_stats(wl.device)
        for _ in range(steps):
            train_step(wl, after)
        if cuda:
            torch.cuda.synchronize(wl.device)
            return int(torch.cuda.max_memory_allocated(wl.device))
    return 0


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=MODELS, default="gpt2")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--profiles", nargs="*", default=["economy", "full"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = setup_device(args.device, None)
    wl = build(args.model, device, args.tiny)
    base = peak(wl, None, args.steps, args.warmup)
    rows = {"plain": {"peak_bytes": base, "vs_plain": 1.0}}
    for prof in args.profiles:
        b = peak(wl, prof, args.steps, args.warmup)
        rows[prof] = {"peak_bytes": b, "vs_plain": b / base if base else float("nan")}
    print_table(f"{wl.description}: CUDA peak memory over {args.steps} steps", ["variant", "peak MiB", "vs plain"],
                [[k, f"{r['peak_bytes'] / 2**20:.1f}", f"{r['vs_plain']:.3f}x"] for k, r in rows.items()])
    if device.type != "cuda":
        print("not on CUDA: peaks read 0 (a smoke test only)", file=sys.stderr)
    out = {"model": wl.description, "rows": rows}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
