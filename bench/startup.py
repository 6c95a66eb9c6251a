"""Start-up time: ``import torch``, ``import gradvet`` and ``gradvet --help`` (issue 14, fault 8).

Each measurement is a fresh interpreter (``subprocess``), so nothing is cached in
``sys.modules``; the OS file cache is warmed by one untimed run of each command.
Rounds are interleaved (python, torch, gradvet, --help, then again), so drift of a
shared machine hits every command alike. Reported: the median wall seconds of each
command, and gradvet's cost over torch both as a difference of medians and as the
median of per-round differences (the steadier of the two). ``-X importtime`` adds the
in-process figure: gradvet's cumulative import time once torch is imported,
interpreter start excluded. Also listed: which heavy modules each command loaded (``torch._dynamo``,
``sympy`` and ``triton`` come from evaluating ``torch.compiler.disable``; ``matplotlib``
from the HTML report).

Targets (issue 14): ``import gradvet`` <= 0.2 s over ``import torch``;
``gradvet --help`` <= 1 s over ``import torch``.

Usage::

    .venv/bin/python bench/startup.py --runs 7 --json startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

HEAVY = ("torch._dynamo", "sympy", "triton", "matplotlib", "torch._inductor")

# Each command prints the heavy modules it loaded, as JSON, on its last stdout line.
_REPORT = f"import json, sys; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
COMMANDS: dict[str, str] = {
    "python": "pass",
    "torch": "import torch",
    "gradvet": "import gradvet",
    # what the console script `gradvet --help` runs (typer exits with SystemExit(0))
    "help": "import sys; sys.argv = ['gradvet', '--help']\n"
    "from gradvet.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass",
}


def run_once(python: str, code: str, loaded: bool = False) -> tuple[float, list[str]]:
    """Wall seconds of ``python -c code`` in a fresh interpreter; the heavy modules it loaded."""
    if loaded:
        code = f"{code}\n{_REPORT}"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{code!r} failed ({proc.returncode}):\n{proc.stderr}")
    mods = json.loads(proc.stdout.strip().splitlines()[-1]) if loaded else []
    return wall, mods


def import_times(python: str) -> dict[str, float]:
    """Cumulative seconds of ``torch`` and ``gradvet`` from ``-X importtime`` (one process).

    torch is imported first, so gradvet's cumulative time is what it adds over torch.
    """
    proc = subprocess.run(
        [python, "-X", "importtime", "-c", "import torch, gradvet"], capture_output=True, text=True
    )
    out: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if (
            name.strip() in ("torch", "gradvet")
            and name.startswith(" ")
            and not name.startswith("  ")
        ):
            out[name.strip()] = int(cumulative) / 1e6
    return out


def measure(python: str, runs: int) -> dict[str, Any]:
    """Interleaved rounds of every command; medians and per-round differences."""
    for code in COMMANDS.values():  # warm the file cache, untimed
        run_once(python, code)
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(runs):
        for name, code in COMMANDS.items():
            times[name].append(run_once(python, code)[0])
    loaded = {name: run_once(python, code, loaded=True)[1] for name, code in COMMANDS.items()}
    over = {
        name: [t - b for t, b in zip(times[name], times["torch"])] for name in ("gradvet", "help")
    }
    own = [import_times(python) for _ in range(runs)]
    return {
        "times_s": times,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "over_torch_s": {
            k: statistics.median(times[k]) - statistics.median(times["torch"]) for k in over
        },
        "paired_over_torch_s": {k: statistics.median(v) for k, v in over.items()},
        "importtime_gradvet_over_torch_s": statistics.median(
            o["gradvet"] for o in own if "gradvet" in o
        ),
        "importtime_torch_s": statistics.median(o["torch"] for o in own if "torch" in o),
        "heavy_modules_loaded": loaded,
    }


def env_info(python: str) -> dict[str, Any]:
    git: Optional[str] = None
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        git = sha.stdout.strip() or None
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "interpreter": python,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "git": git,
    }


def print_results(res: dict[str, Any]) -> None:
    med, paired = res["median_s"], res["paired_over_torch_s"]
    print(f"{'command':<22}{'median s':>10}{'over torch s':>14}  heavy modules loaded")
    labels = {
        "python": "python -c pass",
        "torch": "import torch",
        "gradvet": "import gradvet",
        "help": "gradvet --help",
    }
    for name, label in labels.items():
        extra = f"{paired[name]:>14.3f}" if name in paired else f"{'':>14}"
        mods = ", ".join(res["heavy_modules_loaded"][name]) or "-"
        print(f"{label:<22}{med[name]:>10.3f}{extra}  {mods}")
    print(
        f"-X importtime: torch {res['importtime_torch_s']:.3f} s, "
        f"gradvet over torch {res['importtime_gradvet_over_torch_s']:.3f} s"
    )
    print(
        "targets: import gradvet <= 0.2 s over torch; gradvet --help <= 1 s over torch", flush=True
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7, help="fresh interpreters per command (default 7)")
    p.add_argument(
        "--python", default=sys.executable, help="interpreter to time (default: this one)"
    )
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    res = measure(args.python, args.runs)
    print_results(res)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"env": env_info(args.python), **res}, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
