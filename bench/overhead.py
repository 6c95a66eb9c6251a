"""Time what gradvet (and its peers) add to a training step; gradvet issues 2 and 7.

Variants run interleaved, round by round (plain, gradvet default, gradvet full,
peers, plain, ...), so that machine drift hits every variant alike. Each round
of a variant runs ``--warmup`` untimed steps, then ``--steps`` timed steps; the
table reports the median seconds per step over rounds and two ratios to the
plain loop: of the medians, and the median of per-round ratios (paired).

The ``gradvet.check`` table times one ``check`` call against one forward+backward,
and splits it into measuring (a one-step ``Monitor(profile="full")``) and the rest
(diagnosis and report).

Usage::

    python bench/overhead.py --model mlp --device cpu --steps 200 --rounds 5 --json out.json
    python bench/overhead.py --model gpt2 --device cuda --steps 20 --rounds 5
    python bench/overhead.py --model gpt2 --tiny --device cpu --steps 5 --rounds 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

from common import (
    env_info,
    forward_backward,
    print_table,
    setup_device,
    summarize,
    timed2,
    train_step,
    write_json,
)
from models import MODELS, Workload, build
from variants import VARIANTS, Unavailable

import gradvet

# Overhead targets of issue 2 (CPU, MLP): ratio to the plain loop.
TARGETS = {("mlp", "gradvet default"): 1.05, ("mlp", "gradvet full"): 1.25}


def run_variant(
    name: str, wl: Workload, tmp: Path, args: argparse.Namespace
) -> tuple[float, float]:
    """(wall, CPU) seconds per step of one round of variant ``name``."""
    ctx = VARIANTS[name](wl, tmp, not args.no_record)
    with ctx as after:
        for _ in range(args.warmup):
            train_step(wl, after)

        def loop() -> None:
            for _ in range(args.steps):
                train_step(wl, after)

        wall, cpu = timed2(wl.device, loop)
        return wall / args.steps, cpu / args.steps


def bench_overhead(wl: Workload, args: argparse.Namespace) -> dict[str, Any]:
    names = [n for n in VARIANTS if not args.only or n == "plain" or n in args.only]
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="gradvet-bench-") as tmp:
        for r in range(args.rounds):
            for n in names:
                if n in notes:
                    continue
                try:
                    wall, c = run_variant(n, wl, Path(tmp), args)
                    times[n].append(wall)
                    cpu[n].append(c)
                except Unavailable as e:
                    notes[n] = str(e)
                print(
                    f"round {r + 1}/{args.rounds} {n}: "
                    + (f"{times[n][-1] * 1e3:.3f} ms/step" if times[n] else notes[n]),
                    file=sys.stderr,
                )
    return {
        n: (
            {"available": False, "note": notes[n]}
            if n in notes
            else {"available": True, **summarize(times[n], times["plain"], cpu[n], cpu["plain"])}
        )
        for n in names
    }


def bench_check(wl: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """``gradvet.check`` vs one forward+backward, interleaved over rounds."""

    def check() -> None:
        with wl.autocast():
            gradvet.check(wl.model, (wl.inputs, wl.targets), wl.loss_fn)

    def measure_only() -> None:
        with gradvet.Monitor(wl.model, profile="full", flush_every=1) as monitor:
            for p in wl.model.parameters():
                p.grad = None
            with wl.autocast():
                loss = wl.loss_fn(wl.model(wl.inputs), wl.targets)
            loss.backward()
            monitor.step(loss)
            monitor.load()

    fns = {
        "forward+backward": lambda: forward_backward(wl),
        "check: measure only": measure_only,
        "gradvet.check": check,
    }
    for fn in fns.values():  # warm-up: first-call costs (imports, allocator) are not what is timed
        fn()
    times: dict[str, list[float]] = {n: [] for n in fns}
    cpu: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(max(args.rounds, 3)):
        for n, fn in fns.items():
            wall, c = timed2(wl.device, fn)
            times[n].append(wall)
            cpu[n].append(c)
    base = "forward+backward"
    return {n: summarize(times[n], times[base], cpu[n], cpu[base]) for n in fns}


def overhead_rows(model: str, res: dict[str, Any]) -> list[list[str]]:
    rows = []
    for n, r in res.items():
        if not r["available"]:
            rows.append([n, "-", "-", "-", "-", "-", f"skipped: {r['note']}"])
            continue
        target = TARGETS.get((model, n))
        note = (
            ""
            if target is None
            else f"target <= {target:.2f}x: " + ("met" if r["ratio"] <= target else "missed")
        )
        spread = f"{r['min_s'] * 1e3:.3f}-{r['max_s'] * 1e3:.3f}"
        ratios = [f"{r['ratio']:.3f}x", f"{r['paired_ratio']:.3f}x", f"{r['cpu_ratio']:.3f}x"]
        rows.append([n, f"{r['median_s'] * 1e3:.3f}", spread, *ratios, note])
    return rows


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=MODELS, default="mlp")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--steps", type=int, default=200, help="timed steps per round (default 200)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument(
        "--warmup", type=int, default=5, help="untimed steps before each round (default 5)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="a few-thousand-parameter model (smoke tests)"
    )
    p.add_argument(
        "--no-record", action="store_true", help="gradvet keeps the run in memory, no SQLite record"
    )
    p.add_argument("--only", nargs="*", default=None, help="variant names to run besides plain")
    p.add_argument("--no-check", action="store_true", help="skip the gradvet.check table")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        p.error("--steps and --rounds must be >= 1")
    warnings.filterwarnings("ignore", category=UserWarning)
    device = setup_device(args.device, args.threads)
    wl = build(args.model, device, args.tiny)
    env = env_info(device)
    print(
        f"{wl.description}; {wl.n_params():,} parameters; torch threads {env['torch_threads']}",
        file=sys.stderr,
    )
    out: dict[str, Any] = {
        "env": env,
        "args": vars(args),
        "model": wl.description,
        "n_params": wl.n_params(),
    }
    out["overhead"] = bench_overhead(wl, args)
    cols = [
        "variant",
        "median ms/step",
        "min-max ms",
        "ratio",
        "paired ratio",
        "CPU-time ratio",
        "note",
    ]
    title = (
        f"{args.model}{' (tiny)' if args.tiny else ''} on {args.device}, {env['torch_threads']} threads, "
        f"{args.steps} steps x {args.rounds} rounds"
    )
    print_table(title, cols, overhead_rows(args.model, out["overhead"]))
    if not args.no_check:
        out["check"] = bench_check(wl, args)
        rows = [
            [n, f"{r['median_s'] * 1e3:.2f}", f"{r['ratio']:.2f}x", f"{r['cpu_ratio']:.2f}x"]
            for n, r in out["check"].items()
        ]
        print_table(
            f"gradvet.check on {args.model}",
            ["call", "median ms", "ratio to fwd+bwd", "CPU-time ratio"],
            rows,
        )
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
