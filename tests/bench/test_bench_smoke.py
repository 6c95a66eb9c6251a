"""The benchmark scripts run end to end on a tiny model and write well-formed JSON.

No timing assertions: the numbers depend on the machine; only their shape is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
VARIANT_KEYS = {"plain", "gradvet default", "gradvet full", ".item() norms", "clip_grad_norm_"}


def _run(script: str, args: list[str], out: Path) -> dict:
    cmd = [sys.executable, str(BENCH / script), *args, "--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_overhead_tiny_mlp_writes_expected_json(tmp_path: Path) -> None:
    only = [
        "gradvet default",
        "gradvet full",
        ".item() norms",
        "clip_grad_norm_",
        "gradvet default + clip",
    ]
    data = _run(
        "overhead.py",
        [
            "--model",
            "mlp",
            "--tiny",
            "--steps",
            "3",
            "--rounds",
            "2",
            "--warmup",
            "1",
            "--only",
            *only,
        ],
        tmp_path / "o.json",
    )
    assert {"env", "args", "model", "n_params", "overhead", "check"} <= set(data)
    assert data["env"]["torch_threads"] == 1
    assert set(data["overhead"]) >= VARIANT_KEYS
    for name in VARIANT_KEYS:
        res = data["overhead"][name]
        assert res["available"] is True
        assert len(res["times_s"]) == 2
        assert all(t > 0 for t in res["times_s"])
        assert res["median_s"] > 0 and res["ratio"] > 0 and res["paired_ratio"] > 0
    assert data["overhead"]["plain"]["ratio"] == pytest.approx(1.0)
    clip = data["overhead"]["gradvet default + clip"]
    assert (
        clip["available"] or clip["note"]
    )  # skipped with a reason until gradvet.remedies has the clipper
    assert {"forward+backward", "check: measure only", "gradvet.check"} <= set(data["check"])
    assert all(r["median_s"] > 0 for r in data["check"].values())


@pytest.mark.slow
def test_overhead_tiny_gpt2_runs_on_cpu(tmp_path: Path) -> None:
    data = _run(
        "overhead.py",
        [
            "--model",
            "gpt2",
            "--tiny",
            "--steps",
            "2",
            "--rounds",
            "2",
            "--warmup",
            "1",
            "--only",
            "gradvet default",
            "--no-check",
        ],
        tmp_path / "g.json",
    )
    assert data["overhead"]["gradvet default"]["median_s"] > 0
    assert "check" not in data


@pytest.mark.slow
def test_memory_tiny_reports_record_size(tmp_path: Path) -> None:
    data = _run(
        "memory.py",
        ["--model", "mlp", "--tiny", "--steps", "120", "--sample-every", "40", "--warmup", "2"],
        tmp_path / "m.json",
    )
    assert (
        data["rss_start"] > 0
        and data["rss_end"] > 0
        and data["rss_peak_sampled"] >= data["rss_start"]
    )
    assert data["record_bytes"] > 0 and data["record_bytes_per_step"] > 0
    assert len(data["samples"]) == 4


@pytest.mark.slow
def test_taps_tiny_proxies_write_ops_and_per_layer_cost(tmp_path: Path) -> None:
    data = _run("taps.py", ["--tiny", "--steps", "1", "--rounds", "1", "--warmup", "1"], tmp_path / "t.json")
    for name in ("gpt2-proxy", "resnet-proxy"):
        rows = data["models"][name]["rows"]
        assert {"plain", "economy", "full", "check", "fwd+bwd"} <= set(rows)
        assert rows["full"]["gradvet_ops"] > 0 and rows["full"]["us_per_layer"] == rows["full"]["us_per_layer"]
