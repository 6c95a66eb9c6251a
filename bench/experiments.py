"""Where gradvet's overhead goes, and what proposed engine changes would save.

Each experiment is a gradvet profile plus config overrides (ablations: switch one
statistic off to see its cost) and/or *patches*: replacements of engine functions
applied by monkeypatching in this process only, never by editing ``src/``. They
are proposals for the engine, measured; docs/performance.md discusses them.
Experiments run interleaved in rounds, like bench/overhead.py.

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

import torch
from common import env_info, print_table, setup_device, summarize, timed2, train_step, write_json
from models import MODELS, Workload, build

import gradvet
import gradvet.monitor as gv_monitor
from gradvet._taps import LayerTaps

NEVER = 10**9  # a schedule period no benchmark reaches


# -- P1: update/weight ratios without allocating ------------------------------------
def _p1_pre(self: Any, optimizer: Any, args: Any, kwargs: Any) -> None:
    """Snapshot into buffers kept across steps: no allocation, no page faults."""
    if self._update_step is None or not self._entered:
        return
    now = [p.detach() for _, p in self._opt_params()]
    snap = getattr(self, "_p1_snap", None)
    if snap is None or len(snap) != len(now) or any(a.shape != b.shape for a, b in zip(snap, now)):
        snap = self._p1_snap = [torch.empty_like(p) for p in now]
    torch._foreach_copy_(snap, now)
    self._before = snap


def _p1_post(self: Any, optimizer: Any, args: Any, kwargs: Any) -> None:
    """In-place difference; the weight norm is the one ``param_stats`` measured at ``step``."""
    s, before = self._update_step, self._before
    self._update_step, self._before = None, None
    if s is None or before is None:
        return
    pairs = self._opt_params()
    torch._foreach_sub_(before, [p.detach() for _, p in pairs])  # before := -update
    dn = torch.stack(torch._foreach_norm(before, 2.0)).float()
    if len(pairs) == len(self.parameters):
        ratio = dn / self._last_stats[:, 3]
    else:  # as the engine does now, for optimizers over a subset of the parameters
        wn = torch.stack([self._last_stats[i, 3] for i, _ in pairs])
        cols = [torch.full((), float("nan"))] * len(self.parameters)
        for (i, _), r in zip(pairs, (dn / wn).unbind(0)):
            cols[i] = r
        ratio = torch.stack(cols)
    self._buf.setdefault("update_step", []).append(s)
    self._buf.setdefault("update", []).append(ratio)


@contextlib.contextmanager
def p1_update_in_place() -> Iterator[None]:
    saved = gv_monitor.Monitor._opt_pre, gv_monitor.Monitor._opt_post
    gv_monitor.Monitor._opt_pre, gv_monitor.Monitor._opt_post = _p1_pre, _p1_post  # type: ignore[method-assign]
    try:
        yield
    finally:
        gv_monitor.Monitor._opt_pre, gv_monitor.Monitor._opt_post = saved  # type: ignore[method-assign]


# -- P2: count non-finite entries only where the norm says there are some (CPU) --------
@contextlib.contextmanager
def p2_lazy_nonfinite() -> Iterator[None]:
    original = gv_monitor.param_stats

    def param_stats(
        params: Any, grads: Any, *, count_nonfinite: bool = True, **kw: Any
    ) -> torch.Tensor:
        out = original(params, grads, count_nonfinite=False, **kw)
        if not count_nonfinite or out.device.type != "cpu":
            return (
                original(params, grads, count_nonfinite=count_nonfinite, **kw)
                if count_nonfinite
                else out
            )
        # On the CPU a host branch costs no sync. A finite L2 norm implies every entry
        # is finite, so only parameters with a non-finite norm need the counting pass.
        bad = (~torch.isfinite(out[:, 0])).nonzero().flatten().tolist()
        for i in bad:
            if grads[i] is not None:
                out[i, 2] = (~torch.isfinite(grads[i])).sum()
        return out

    gv_monitor.param_stats = param_stats  # type: ignore[assignment]
    try:
        yield
    finally:
        gv_monitor.param_stats = original  # type: ignore[assignment]


# -- P3: gradvet's own statistics bypass its TorchFunctionMode --------------------------
@contextlib.contextmanager
def p3_hooks_bypass_mode() -> Iterator[None]:
    original = LayerTaps._forward

    def _forward(self: Any, i: int, module: Any, args: Any, output: Any) -> None:
        # every torch call of output_stats would otherwise go through the mode's Python
        # __torch_function__ (~15 calls per layer per measured forward)
        with torch._C.DisableTorchFunction():
            original(self, i, module, args, output)

    LayerTaps._forward = _forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        LayerTaps._forward = original  # type: ignore[method-assign]


# -- P5: per-layer statistics skip the finite masks when the plain sums are finite (CPU) --
@contextlib.contextmanager
def p5_finite_fast_path() -> Iterator[None]:
    import gradvet._taps as taps

    orig_grad, orig_out = taps.grad_stats, taps.output_stats

    def grad_stats(g: torch.Tensor) -> torch.Tensor:
        if g.device.type != "cpu":
            return orig_grad(g)
        flat = g.detach().float().reshape(-1)
        sq = torch.dot(flat, flat).double()  # one read of g, no temporary
        if not torch.isfinite(sq):  # host branch: free on the CPU
            return orig_grad(g)
        zero = torch.zeros((), dtype=torch.float64)
        return torch.stack([sq, torch.full((), float(g.numel()), dtype=torch.float64), zero])

    def output_stats(y: torch.Tensor, kind: Any, threshold: float, unit_dim: int) -> Any:
        y32 = y.detach().float()
        if y.device.type != "cpu" or y32.numel() == 0:
            return orig_out(y, kind, threshold, unit_dim)
        total = y32.sum()
        if not torch.isfinite(total):
            return orig_out(y, kind, threshold, unit_dim)
        n = float(y32.numel())
        c = total / n
        d = y32 - c  # shifted data (Chan, Golub & LeVeque 1983), as the engine does
        s1 = d.sum().double()
        s2 = torch.dot(d.reshape(-1), d.reshape(-1)).double()
        c64, count = c.double(), torch.tensor(n, dtype=torch.float64)
        if not torch.isfinite(s2):  # an overflow in y^2: let the engine handle it
            return orig_out(y, kind, threshold, unit_dim)
        sat = kind.saturated(y32, threshold).sum() if kind and kind.saturated else torch.zeros(())
        acc = torch.stack(
            [
                s1 + count * c64,
                s2 + 2 * c64 * s1 + count * c64.square(),
                count,
                sat.double(),
                torch.zeros((), dtype=torch.float64),
            ]
        )
        alive = None
        if kind is not None and kind.can_die and y.dim() >= 1:
            dim = unit_dim % y.dim()
            other = tuple(i for i in range(y.dim()) if i != dim)
            alive = (y32 != 0).any(dim=other) if other else y32 != 0
        return acc, alive

    taps.grad_stats, taps.output_stats = grad_stats, output_stats
    try:
        yield
    finally:
        taps.grad_stats, taps.output_stats = orig_grad, orig_out


# -- P4 (ablation of a design choice): no functional-activation mode at all -------------
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
    "economy + P1": ("economy", {}, [p1_update_in_place]),
    "full": ("full", {}, []),
    "full: no update ratios": ("full", {"update_every": NEVER}, []),
    "full: no non-finite counts": ("full", {"count_nonfinite": False}, []),
    "full: no layer taps": ("full", {"layer_every": NEVER}, []),
    "full: no functional-activation mode": ("full", {}, [no_function_mode]),
    "full + P1 (update in place)": ("full", {}, [p1_update_in_place]),
    "full + P2 (lazy non-finite count)": ("full", {}, [p2_lazy_nonfinite]),
    "full + P3 (hooks bypass mode)": ("full", {}, [p3_hooks_bypass_mode]),
    "full + P5 (finite fast path)": ("full", {}, [p5_finite_fast_path]),
    "full + P1+P2+P3": ("full", {}, [p1_update_in_place, p2_lazy_nonfinite, p3_hooks_bypass_mode]),
    "full + P1+P2+P3+P5": (
        "full",
        {},
        [p1_update_in_place, p2_lazy_nonfinite, p3_hooks_bypass_mode, p5_finite_fast_path],
    ),
    "economy + P1+P5": ("economy", {}, [p1_update_in_place, p5_finite_fast_path]),
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
