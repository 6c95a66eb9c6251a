"""Issue 15, section 2: a damaged record gives one clear ValueError or a correct partial load.

Never a raw exception, never silently different values: every block carries a CRC32,
damaged blocks are skipped and named by step range. A writer killed at any moment,
its first milliseconds included, leaves a record that is absent or loads.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradvet

HARNESS = str(Path(__file__).with_name("_kill_harness.py"))
SEEDS = 300  # per kind of damage


def _write(path: Path, steps: int = 30) -> gradvet.Run:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradvet.Monitor(model, optimizer=opt, record=path, profile="full", flush_every=4) as mon:
        for _ in range(steps):
            opt.zero_grad()
            loss = model(torch.randn(5, 3)).square().mean()
            loss.backward()
            mon.step(loss)
            opt.step()
    return gradvet.load(path)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, gradvet.Run]:
    path = tmp_path_factory.mktemp("damage") / "clean.gradvet"
    return path, _write(path)


def _load_quietly(path: Path) -> tuple[gradvet.Run, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = gradvet.load(path)
    return run, [str(w.message) for w in caught]


def _rows(run: gradvet.Run, metric: str) -> dict[int, bytes]:
    s = run.series(metric)
    return {int(step): s.values[i].tobytes() for i, step in enumerate(s.steps)}


def _outcome(path: Path, ref: gradvet.Run) -> str:
    """"error", "partial" or "intact"; fails the test on a raw exception or a wrong value."""
    try:
        run, said = _load_quietly(path)
    except ValueError as e:
        assert str(path) in str(e), e
        return "error"
    assert {k: v for k, v in run.meta.items() if k != "damaged"} == ref.meta
    assert run.params == ref.params and run.layers == ref.layers
    missing = False
    for metric in ref.metrics:
        want = _rows(ref, metric)
        got = _rows(run, metric) if metric in run.metrics else {}
        assert all(got[s] == want.get(s) for s in got), f"silently wrong values in {metric}"
        missing |= len(got) < len(want)
    assert set(run.metrics) <= set(ref.metrics)
    if missing:
        assert run.meta.get("damaged") and any("damaged" in w for w in said), "rows lost without a word"
        return "partial"
    return "intact"


@pytest.mark.parametrize("kind", ["bit", "bytes16"])
def test_random_damage_is_a_clean_error_or_a_correct_partial_load(clean, tmp_path, kind):
    src, ref = clean
    data = src.read_bytes()
    counts = {"error": 0, "partial": 0, "intact": 0}
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        buf = bytearray(data)
        if kind == "bit":
            pos = int(rng.integers(len(buf)))
            buf[pos] ^= 1 << int(rng.integers(8))
        else:
            pos = int(rng.integers(len(buf) - 16))
            buf[pos : pos + 16] = rng.bytes(16)
        path = tmp_path / f"{kind}-{seed}.gradvet"
        path.write_bytes(bytes(buf))
        counts[_outcome(path, ref)] += 1
        path.unlink()
    print(kind, counts)
    assert counts["error"] + counts["partial"] > 0  # the damage was seen at least sometimes


def _set(path: Path, sql: str, *args: object) -> None:
    con = sqlite3.connect(path)
    with con:
        con.execute(sql, args)
    con.close()


@pytest.mark.parametrize(
    "damage, says",
    [
        ("DROP TABLE params", "damaged gradvet record"),
        ("UPDATE meta SET value='{not json' WHERE key='model'", "meta row 'model'"),
        ("UPDATE meta SET value=CAST(X'FF00FF' AS TEXT) WHERE key='model'", "meta row 'model'"),
        ("UPDATE layers SET info='[]' WHERE idx=0", "layers row '0' fails its checksum"),
        ("DROP TABLE blocks", "no such table: blocks"),
    ],
)
def test_damaged_tables_give_one_value_error(clean, tmp_path, damage, says):
    path = tmp_path / "bad.gradvet"
    shutil.copy(clean[0], path)
    _set(path, damage)
    with pytest.raises(ValueError, match=says) as err:
        gradvet.load(path)
    assert str(path) in str(err.value)


def test_a_meta_only_file_is_not_a_record(tmp_path):
    path = tmp_path / "meta_only.gradvet"
    _set(path, "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    _set(path, "INSERT INTO meta VALUES ('schema_version', '1')")
    with pytest.raises(ValueError, match="meta_only.gradvet' is a damaged gradvet record"):
        gradvet.load(path)


def test_a_damaged_block_is_skipped_and_named_by_steps(clean, tmp_path):
    path = tmp_path / "block.gradvet"
    shutil.copy(clean[0], path)
    con = sqlite3.connect(path)
    bid, data = con.execute("SELECT id, data FROM blocks WHERE metric='param/grad_norm' ORDER BY id").fetchall()[1]
    con.close()
    flipped = bytearray(data)
    flipped[5] ^= 0x10
    _set(path, "UPDATE blocks SET data=? WHERE id=?", bytes(flipped), bid)
    with pytest.warns(RuntimeWarning, match=r"param/grad_norm steps 4-7: checksum mismatch.*rest of it loaded"):
        run = gradvet.load(path)
    assert run.series("param/grad_norm").steps.tolist() == [s for s in range(30) if not 4 <= s <= 7]
    assert len(run.steps) == 30  # the other metrics are whole
    _set(path, "DELETE FROM blocks WHERE id=(SELECT MAX(id) FROM blocks)")
    run, said = _load_quietly(path)
    assert "1 block(s) missing" in run.meta["damaged"] and said


def test_old_records_without_checksums_still_load(clean, tmp_path):
    path = tmp_path / "old.gradvet"
    shutil.copy(clean[0], path)
    con = sqlite3.connect(path)
    with con:
        for table in ("meta", "params", "layers", "blocks"):
            con.execute(f"ALTER TABLE {table} DROP COLUMN crc")
        con.execute("DELETE FROM meta WHERE key='block_count'")
    con.close()
    run, said = _load_quietly(path)
    assert said == [] and run.metrics == clean[1].metrics
    np.testing.assert_array_equal(run.series("param/grad_norm").values, clean[1].series("param/grad_norm").values)
    # a block whose size does not match its shape is still caught, by its length
    _set(path, "UPDATE blocks SET n=n+1 WHERE id=(SELECT MIN(id) FROM blocks)")
    run, said = _load_quietly(path)
    assert "does not match" in run.meta["damaged"][0] and said


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the harness forks its writers")
def test_sigkill_at_random_times_leaves_no_record_or_a_valid_one(tmp_path):
    trials = 24
    res = subprocess.run(
        [sys.executable, HARNESS, str(tmp_path), str(trials), "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == trials and sum(r["delay"] < 0.05 for r in rows) >= trials // 2
    for r in rows:
        assert r["state"] in ("absent", "loaded"), r
        if r["state"] == "loaded":
            assert r["steps"] == list(range(len(r["steps"]))), r  # no torn or missing block
    assert {r["state"] for r in rows} == {"absent", "loaded"}  # both windows were hit
