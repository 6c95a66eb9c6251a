"""Where gradvet's overhead goes: ablations of the engine, one statistic at a time.

Each experiment is a gradvet profile plus config overrides (switch one statistic
off to see its cost) and/or *patches*: replacements of engine functions applied
by monkeypatching in this process only, never by editing ``src/``. A patch is the
way to measure a proposed engine change before making it; the proposals measured
so far (P1-P3, P5 in docs/performance.md) are now in the engine, and their
patches are gone. Experiments run interleaved in rounds, like bench/overhead.py.

Usage::

    python bench/experiments.py --model mlp --threads 1 --steps 100 --rounds 5 --json exp.json
    python bench/experiments.py --list
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any, Callable, Optional

from common import env_info, print_table, setup_device, summarize, timed2, train_step, write_json
from models import MODELS, Workload, build

import gradvet
from gradvet._taps import LayerTaps

NEVER = 10**9  # a schedule period no benchmark reaches


# -- ablation of a design choice: no functional-activation mode at all -----------------
@contextlib.contextmanager
def no_function_mode() -> Iterator[None]:
    original = LayerTaps._root_pre

    def _root_pre(self: Any, module: Any, args: Any) -> None:
        self._calls = [0] * len(self.infos)

    LayerTaps._root_pre = _root_pre  # type: ignore[method-assign]
    try:
        yield
    finally:
        LayerTaps._root_pre = original  # type: ignore[method-assign]


Patch = Callable[[], contextlib.AbstractContextManager]

#: name -> (profile or None for the plain loop, MonitorConfig overrides, patches)
EXPERIMENTS: dict[str, tuple[Optional[str], dict[str, Any], list[Patch]]] = {
    "plain": (None, {}, []),
    "economy": ("economy", {}, []),
    "economy: no taps, no update ratios": (
        "economy",
        {"layer_every": NEVER, "update_every": NEVER},
        [],
    ),
    "full": ("full", {}, []),
    "full: no update ratios": ("full", {"update_every": NEVER}, []),
    "full: no non-finite counts": ("full", {"count_nonfinite": False}, []),
    "full: no layer taps": ("full", {"layer_every": NEVER}, []),
    "full: no functional-activation mode": ("full", {}, [no_function_mode]),
}


def run_experiment(name: str, wl: Workload, args: argparse.Namespace) -> tuple[float, float]:
    profile, overrides, patches = EXPERIMENTS[name]
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch())
        after = None
        if profile is not None:
            monitor = gradvet.Monitor(
                wl.model, optimizer=wl.optimizer, profile=profile, **overrides
            )
            after = stack.enter_context(monitor).step
        for _ in range(args.warmup):
            train_step(wl, after)

        def loop() -> None:
            for _ in range(args.steps):
                train_step(wl, after)

        wall, cpu = timed2(wl.device, loop)
        return wall / args.steps, cpu / args.steps


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=MODELS, default="mlp")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--only", nargs="*", default=None, help="experiment names besides plain")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(EXPERIMENTS))
        return {}
    device = setup_device(args.device, args.threads)
    wl = build(args.model, device, args.tiny)
    names = [n for n in EXPERIMENTS if not args.only or n == "plain" or n in args.only]
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            wall, c = run_experiment(n, wl, args)
            times[n].append(wall)
            cpu[n].append(c)
            print(
                f"round {r + 1}/{args.rounds} {n}: {wall * 1e3:.3f} ms/step (CPU {c * 1e3:.3f})",
                file=sys.stderr,
            )
    res = {n: summarize(times[n], times["plain"], cpu[n], cpu["plain"]) for n in names}
    rows = [
        [
            n,
            f"{r['median_s'] * 1e3:.3f}",
            f"{r['ratio']:.3f}x",
            f"{r['paired_ratio']:.3f}x",
            f"{r['cpu_median_s'] * 1e3:.3f}",
            f"{r['cpu_ratio']:.3f}x",
        ]
        for n, r in res.items()
    ]
    env = env_info(device)
    print_table(
        f"experiments: {args.model} on {args.device}, {env['torch_threads']} threads, "
        f"{args.steps} steps x {args.rounds} rounds",
        ["experiment", "median ms/step", "ratio", "paired", "CPU ms/step", "CPU ratio"],
        rows,
    )
    out = {"env": env, "args": vars(args), "model": wl.description, "experiments": res}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
