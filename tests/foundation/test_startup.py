"""Start-up stays light: what ``import gradvet`` and ``gradvet --help`` load (issue 14, fault 8).

No timing assertions (the times are measured by ``bench/startup.py``): these tests
guard the mechanism. Evaluating ``torch.compiler.disable`` imports ``torch._dynamo``,
which pulls in sympy and triton (~1.4 s); the taps apply it when hooks are attached.
The CLI imports its heavy modules inside the commands.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
COMPILE_STACK = ("torch._dynamo", "torch._inductor", "sympy", "triton")


def _loaded_after(code: str, watched: tuple[str, ...]) -> list[str]:
    """The modules of ``watched`` in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    report = f"import json, sys; print(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_gradvet_does_not_load_the_compile_stack() -> None:
    assert _loaded_after("import gradvet", (*COMPILE_STACK, "matplotlib")) == []


def test_cli_help_loads_no_compile_stack_and_no_command_modules() -> None:
    code = (
        "import sys; sys.argv = ['gradvet', '--help']\n"
        "from gradvet.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )
    heavy = ("matplotlib", "gradvet.html", "gradvet.lab", "gradvet._render", "gradvet.watch")
    assert _loaded_after(code, (*COMPILE_STACK, *heavy)) == []


def test_monitor_still_disables_compilation_of_its_hooks() -> None:
    # the lazy decorator must leave the class as a plain @torch.compiler.disable would
    code = (
        "import torch, gradvet\n"
        "from gradvet._taps import LayerTaps\n"
        "m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())\n"
        "with gradvet.Monitor(m):\n    pass\n"
        "fns = [LayerTaps.__dict__[n] for n in ('_root_pre_body', '_forward_body', 'functional_activation')]\n"
        "assert all(getattr(f, '_torchdynamo_disable', False) for f in fns), fns\n"
        # the gates stay plain: dynamo traces them (one graph on the steps not measured)
        "gates = [LayerTaps.__dict__[n] for n in ('_root_pre', '_forward')]\n"
        "assert not any(getattr(f, '_torchdynamo_disable', False) for f in gates), gates\n"
    )
    assert "torch._dynamo" in _loaded_after(code, COMPILE_STACK)


@pytest.mark.slow
def test_startup_bench_writes_expected_json(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "startup.py"), "--runs", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCH.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["median_s"]) == {"python", "torch", "gradvet", "help"}
    assert all(t > 0 for t in data["median_s"].values())
    assert set(data["paired_over_torch_s"]) == {"gradvet", "help"}
    assert data["heavy_modules_loaded"]["gradvet"] == []
    assert data["importtime_torch_s"] > 0
