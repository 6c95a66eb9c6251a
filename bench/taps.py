"""Per-layer cost of gradvet's taps in the launch-bound regime (gradvet issue 13).

On a GPU a monitor's arithmetic is cheap; what it costs is Python and one kernel
launch per op. The proxies of ``models.py`` (``gpt2-proxy``, ``resnet-proxy``:
the module graph of GPT-2 and ResNet-50 with tiny tensors) put a CPU in that
regime. For each profile, and for ``gradvet.check``, this script reports:

- seconds per step (wall and this process's CPU time, medians over interleaved
  rounds) and the ratio to the plain step (to one forward+backward for ``check``);
- **ops dispatched** per step: aten ops counted by a ``TorchDispatchMode`` over
  one step (forward, backward, ``monitor.step`` and the optimizer), and gradvet's
  share (the same count minus the plain step's);
- **CPU us per monitored layer per step**: gradvet's CPU time over the plain
  step's, divided by the number of layers the Monitor taps.

Usage::

    python bench/taps.py --threads 1 --steps 20 --rounds 7 --json taps.json
    python bench/taps.py --device-path     # the ops a GPU runs (no CPU-only shortcuts), on the CPU
    python bench/taps.py --models gpt2-proxy --profile-ops full   # torch.profiler top ops
    python bench/taps.py --compile aot_eager   # a torch.compile'd proxy: ratios, graphs, recompiles
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import warnings
from collections import Counter
from typing import Any, Callable, Optional

import torch
from common import (
    env_info,
    forward_backward,
    print_table,
    setup_device,
    timed2,
    train_step,
    write_json,
)
from models import Workload, build
from torch.utils._python_dispatch import TorchDispatchMode

import gradvet

PROXIES = ("gpt2-proxy", "resnet-proxy")
PROFILES = ("economy", "full")
# issue 13's targets on the CPU proxies: ratio to plain (full), to one forward+backward (check)
TARGETS = {"full": 1.30, "check": 3.0}


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while it is active (backward included)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def _steps(wl: Workload, profile: Optional[str]) -> contextlib.AbstractContextManager:
    """A context yielding ``after_backward`` for the plain step (None) or a Monitor profile."""
    if profile is None:
        return contextlib.nullcontext(None)

    @contextlib.contextmanager
    def monitored() -> Any:
        with gradvet.Monitor(wl.model, optimizer=wl.optimizer, profile=profile) as monitor:
            yield monitor.step

    return monitored()


def time_profile(wl: Workload, profile: Optional[str], steps: int, warmup: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of one round."""
    with _steps(wl, profile) as after:
        for _ in range(warmup):
            train_step(wl, after)
        # untimed: a full collection left over from an earlier variant (~130 ms on this interpreter's
        # ~340k objects) must not land in this one's window; the ones this variant causes still count
        gc.collect()
        wall, cpu = timed2(wl.device, lambda: [train_step(wl, after) for _ in range(steps)])
    return wall / steps, cpu / steps


def count_ops(fn: Callable[[], Any]) -> Counter[str]:
    with OpCounter() as counter:
        fn()
    return counter.ops


def step_ops(wl: Workload, profile: Optional[str]) -> Counter[str]:
    """Ops of one measured step (the second one: the first reads the graph)."""
    with _steps(wl, profile) as after:
        train_step(wl, after)
        return count_ops(lambda: train_step(wl, after))


def layer_count(wl: Workload) -> int:
    return len(gradvet.Monitor(wl.model).layer_infos)


def _check(wl: Workload) -> Callable[[], Any]:
    def run() -> Any:
        with wl.autocast():
            return gradvet.check(wl.model, (wl.inputs, wl.targets), wl.loss_fn)

    return run


def _measure_only(wl: Workload) -> Callable[[], Any]:
    """check's measuring part: a one-step full Monitor, no diagnosis."""

    def run() -> None:
        with gradvet.Monitor(wl.model, profile="full", flush_every=1) as monitor:
            forward_backward(wl)
            monitor.step()
            monitor.load()

    return run


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    wl = build(name, setup_device(args.device, None), args.tiny)
    n_layers = layer_count(wl)
    print(f"{wl.description}; {n_layers} monitored layers", file=sys.stderr)
    variants: list[Optional[str]] = [None, *args.profiles]
    wall: dict[Any, list[float]] = {v: [] for v in variants}
    cpu: dict[Any, list[float]] = {v: [] for v in variants}
    calls = {"fwd+bwd": lambda: forward_backward(wl), "check": _check(wl), "check: measure only": _measure_only(wl)}
    for fn in calls.values():
        fn()  # first-call costs (imports, allocator) are not what is timed
    cwall: dict[str, list[float]] = {c: [] for c in calls}
    ccpu: dict[str, list[float]] = {c: [] for c in calls}
    for r in range(args.rounds):
        for v in variants:
            w, c = time_profile(wl, v, args.steps, args.warmup)
            wall[v].append(w)
            cpu[v].append(c)
        for c_name, fn in calls.items():
            gc.collect()
            w, c = timed2(wl.device, fn)
            cwall[c_name].append(w)
            ccpu[c_name].append(c)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    med = statistics.median
    ops = {v: step_ops(wl, v) for v in variants}
    base_ops = sum(ops[None].values())
    rows: dict[str, Any] = {}
    for v in variants:
        total = sum(ops[v].values())
        extra_cpu = med(cpu[v]) - med(cpu[None])
        rows["plain" if v is None else v] = {
            "wall_ms": med(wall[v]) * 1e3,
            "cpu_ms": med(cpu[v]) * 1e3,
            "ratio": med(wall[v]) / med(wall[None]),
            "paired_ratio": med(a / b for a, b in zip(wall[v], wall[None])),
            "cpu_ratio": med(cpu[v]) / med(cpu[None]),
            "ops": total,
            "gradvet_ops": total - base_ops,
            "us_per_layer": extra_cpu / n_layers * 1e6,
            "top_gradvet_ops": (ops[v] - ops[None]).most_common(8),
        }
    check_ops = {c: sum(count_ops(fn).values()) for c, fn in calls.items()}
    for c_name in ("check", "check: measure only"):
        rows[c_name] = {
            "wall_ms": med(cwall[c_name]) * 1e3,
            "cpu_ms": med(ccpu[c_name]) * 1e3,
            "ratio": med(cwall[c_name]) / med(cwall["fwd+bwd"]),
            "paired_ratio": med(a / b for a, b in zip(cwall[c_name], cwall["fwd+bwd"])),
            "cpu_ratio": med(ccpu[c_name]) / med(ccpu["fwd+bwd"]),
            "ops": check_ops[c_name],
            "gradvet_ops": check_ops[c_name] - check_ops["fwd+bwd"],
            "us_per_layer": (med(ccpu[c_name]) - med(ccpu["fwd+bwd"])) / n_layers * 1e6,
        }
    rows["fwd+bwd"] = {"wall_ms": med(cwall["fwd+bwd"]) * 1e3, "cpu_ms": med(ccpu["fwd+bwd"]) * 1e3,
                       "ops": check_ops["fwd+bwd"]}
    return {"model": wl.description, "layers": n_layers, "rows": rows}


def profile_ops(name: str, profile: str, args: argparse.Namespace) -> None:
    """torch.profiler's top ops by self CPU time over a few steps of ``profile``."""
    wl = build(name, setup_device(args.device, None), args.tiny)
    with _steps(wl, profile) as after:
        for _ in range(3):
            train_step(wl, after)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                train_step(wl, after)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def bench_compiled(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The proxy compiled with ``--compile``'s backend: CPU ratios to the compiled plain step, and dynamo's
    graphs (``unique_graphs``) after each variant's steps, with the compiles it caused after its second
    step (gradvet: the first measured step runs eagerly, the second compiles the model's graph)."""
    from torch._dynamo.utils import counters

    wl = build(name, setup_device(args.device, None), args.tiny)
    wl.model = torch.compile(wl.model, backend=args.compile)
    variants: list[Optional[str]] = [None, *args.profiles]
    cpu: dict[Any, list[float]] = {v: [] for v in variants}
    graphs: dict[str, Any] = {}
    for v in variants:  # compile each variant's graphs once, counting them
        torch._dynamo.reset()
        counters.clear()
        with _steps(wl, v) as after:
            seen = []
            for _ in range(max(args.warmup, 2) + 60):  # past economy's second measured step (50)
                train_step(wl, after)
                seen.append(counters["stats"]["unique_graphs"])
        graphs["plain" if v is None else v] = {"graphs": seen[-1], "compiled_after_step_2": seen[-1] - seen[1]}
    for r in range(args.rounds):
        for v in variants:
            cpu[v].append(time_profile(wl, v, args.steps, args.warmup)[1])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    med = statistics.median
    rows = {("plain" if v is None else v): {"cpu_ms": med(cpu[v]) * 1e3, "cpu_ratio": med(cpu[v]) / med(cpu[None]),
                                          **graphs["plain" if v is None else v]} for v in variants}
    return {"model": f"{wl.description}, torch.compile(backend={args.compile!r})", "rows": rows}


def table_rows(res: dict[str, Any]) -> list[list[str]]:
    out = []
    for v, r in res["rows"].items():
        if v == "fwd+bwd":
            out.append([v, f"{r['wall_ms']:.2f}", f"{r['cpu_ms']:.2f}", "1.00x", "", f"{r['ops']}", "", "", ""])
            continue
        target = TARGETS.get("check" if v == "check" else v)
        note = "" if target is None else f"<= {target:.2f}x: " + ("met" if r["cpu_ratio"] <= target else "missed")
        out.append([
            v, f"{r['wall_ms']:.2f}", f"{r['cpu_ms']:.2f}", f"{r['ratio']:.3f}x", f"{r['cpu_ratio']:.3f}x",
            f"{r['ops']}", f"{r['gradvet_ops']}", f"{r['us_per_layer']:.1f}", note,
        ])
    return out


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=list(PROXIES))
    p.add_argument("--profiles", nargs="*", default=list(PROFILES))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--steps", type=int, default=20, help="timed steps per round (default 20)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each round (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--tiny", action="store_true", help="smaller proxies (smoke tests)")
    p.add_argument(
        "--device-path", action="store_true",
        help="turn gradvet's CPU-only shortcuts off: the ops a GPU runs, timed on the CPU",
    )
    p.add_argument("--profile-ops", default=None, metavar="PROFILE", help="print torch.profiler's top ops and exit")
    p.add_argument("--compile", default=None, metavar="BACKEND",
                   help="torch.compile the proxies with this backend (eager, aot_eager, inductor)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    setup_device(args.device, args.threads)
    if args.device_path:
        from gradvet.stats import _layer

        _layer.CPU_SHORTCUTS = False
    if args.profile_ops:
        for name in args.models:
            profile_ops(name, args.profile_ops, args)
        return {}
    out: dict[str, Any] = {"env": env_info(torch.device(args.device)), "args": vars(args), "models": {}}
    if args.compile:
        for name in args.models:
            res = out["models"][name] = bench_compiled(name, args)
            print_table(res["model"], ["variant", "CPU ms", "CPU ratio", "graphs", "compiled after step 2"],
                        [[k, f"{r['cpu_ms']:.2f}", f"{r['cpu_ratio']:.3f}x", str(r["graphs"]),
                          str(r["compiled_after_step_2"])] for k, r in res["rows"].items()])
        write_json(args.json, out)
        return out
    cols = ["variant", "wall ms", "CPU ms", "ratio", "CPU ratio", "ops/step", "gradvet ops", "CPU us/layer", "target"]
    for name in args.models:
        res = bench_model(name, args)
        out["models"][name] = res
        print_table(f"{name}: {res['model']}; {res['layers']} layers; {args.threads} threads, "
                    f"{args.steps} steps x {args.rounds} rounds", cols, table_rows(res))
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
