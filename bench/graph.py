"""What reading the model as a graph costs (issue 17): the one-time read, and the trunk hooks per step.

For each real architecture of the corpus (``gradvet.corpus``): the time of
``LayerTaps.read_structure`` (walking autograd's graph from the loss, dominators,
streams, norms, attention) on the first measured step, and seconds per measured
training step (``profile="full"``: every step is a layer step) with the trunk
hooks (one tensor hook per trunk point, ||dL/dx * x|| and ||dL/dx||) against
the same Monitor with them switched off. Steps are timed in interleaved rounds
after a warm-up; the table gives medians.

Usage::

    python bench/graph.py --threads 2 --steps 5 --rounds 3 --json graph.json
    python bench/graph.py --full-size --only gpt2 --steps 2 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from common import env_info, print_table, write_json

import gradvet
import gradvet._taps as taps_mod
from gradvet.corpus import call, cases, full_size_cases


def _timed_steps(case: Any, steps: int, trunk_hooks: bool) -> tuple[float, float]:
    """``(read_structure seconds, median seconds per measured step after the first)``."""
    model, (inputs, targets), loss_fn = case.build(0)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    spent: dict[str, float] = {}
    original = taps_mod.LayerTaps.read_structure

    def read(self: Any, root: Any = None) -> None:
        t = time.perf_counter()
        original(self, root)
        spent["read"] = time.perf_counter() - t
        if not trunk_hooks:
            self._trunk_owner = set()  # no trunk point measured from now on

    taps_mod.LayerTaps.read_structure = read  # type: ignore[method-assign]
    times = []
    try:
        with gradvet.Monitor(model, optimizer=opt, profile="full") as mon:
            for _ in range(steps + 1):
                t = time.perf_counter()
                opt.zero_grad()
                loss = loss_fn(call(model, inputs), targets)
                loss.backward()
                mon.step(loss)
                opt.step()
                times.append(time.perf_counter() - t)
    finally:
        taps_mod.LayerTaps.read_structure = original  # type: ignore[method-assign]
    return spent.get("read", float("nan")), statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full-size", action="store_true", help="the published sizes (GPT-2 124M, ResNet-50, ...)")
    ap.add_argument("--only", default="", help="cases whose id contains this")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = full_size_cases() if args.full_size else [c for c in cases() if c.healthy]
    chosen = [c for c in chosen if args.only in c.id and c.available]
    rows, out = [], []
    for case in chosen:
        reads, on, off = [], [], []
        for _ in range(args.rounds):  # interleaved: drift hits both alike
            r, s_on = _timed_steps(case, args.steps, trunk_hooks=True)
            _, s_off = _timed_steps(case, args.steps, trunk_hooks=False)
            reads.append(r)
            on.append(s_on)
            off.append(s_off)
        rec = {"case": case.id, "read_s": statistics.median(reads), "step_s_trunk": statistics.median(on),
               "step_s_no_trunk": statistics.median(off)}
        rec["ratio"] = rec["step_s_trunk"] / rec["step_s_no_trunk"]
        out.append(rec)
        rows.append([case.id, f"{1e3 * rec['read_s']:.1f}", f"{1e3 * rec['step_s_no_trunk']:.1f}",
                     f"{1e3 * rec['step_s_trunk']:.1f}", f"{rec['ratio']:.3f}"])
        print(rows[-1], flush=True)
    print_table("reading the graph (once) and the trunk hooks (per measured step)",
                ["model", "read ms", "step ms, no trunk", "step ms, trunk", "ratio"], rows)
    write_json(args.json, {"env": env_info(torch.device("cpu")), "results": out})


if __name__ == "__main__":
    main()
