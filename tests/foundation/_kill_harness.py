"""Subprocess for the SIGKILL test: forks writers and kills each at a random moment.

Usage: python _kill_harness.py DIR TRIALS SEED. Prints one JSON line per trial:
``{"delay": seconds after the child signalled it was entering the Monitor,
"state": "absent" | "loaded" | "error: ...", "steps": [...]}``.
Forking once torch is imported (but has run nothing) makes a trial cost milliseconds,
not the seconds of a fresh interpreter.
"""

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

import gradvet


def child(path: Path, overwrite: bool, ready: int) -> None:
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    os.write(ready, b"e")
    with gradvet.Monitor(model, optimizer=opt, record=path, profile="full", flush_every=3,
                         flush_seconds=0.05, overwrite=overwrite) as m:
        while True:
            opt.zero_grad()
            model(torch.randn(8, 4)).square().mean().backward()
            m.step()
            opt.step()
            time.sleep(0.002)


def check(path: Path) -> dict:
    if not path.exists():
        return {"state": "absent"}
    try:
        run = gradvet.load(path)
    except Exception as e:  # the test fails on any of these
        return {"state": f"error: {type(e).__name__}: {e}"}
    return {"state": "loaded", "steps": run.steps.tolist(), "status": run.meta.get("status")}


def main() -> None:
    out, trials, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    path = out / "kill-0.gradvet"
    for i in range(trials):
        reuse = i % 2 == 1  # odd trials overwrite the record the last kill left
        if not reuse:
            path = out / f"kill-{i}.gradvet"
        # a quarter in the first 5 ms (while the record is created), a quarter in the first 50 ms
        delay = rng.uniform(0, 0.005) if i < trials // 4 else rng.uniform(0, 0.05) if i < trials // 2 else rng.uniform(0.05, 0.4)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                child(path, reuse, w)
            finally:
                os._exit(3)
        os.close(w)
        os.read(r, 1)
        os.close(r)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print(json.dumps({"trial": i, "delay": delay, "reused": reuse, **check(path)}), flush=True)


if __name__ == "__main__":
    main()
