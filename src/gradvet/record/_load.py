"""Reading a record back: a damaged file gives one ValueError naming it and what is wrong.

Damage confined to metric blocks is survivable: each block carries a CRC32, so a
damaged block is skipped and reported by metric and step range (a warning, and
``run.meta["damaged"]``) while the rest loads. Damage to the metadata, the parameter
and layer tables or SQLite's own structure makes the whole file unreadable.
"""

from __future__ import annotations

import json
import os
import sqlite3
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from gradvet.record._files import is_finished, writer_alive
from gradvet.record._run import Run
from gradvet.record._schema import BLOCK_COUNT_KEY, SCHEMA_VERSION, block_crc, text_crc

PathLike = Union[str, "os.PathLike[str]"]


class _Damaged(Exception):
    """Internal: what is wrong with a row; becomes a ValueError or a skipped block."""


class _Refused(ValueError):
    """Internal: a ValueError that already names the file and what is wrong."""


def _connect_readonly(path: Path) -> sqlite3.Connection:
    # A finished record is read as an immutable file: a read-only connection to a WAL-mode
    # file would otherwise leave -wal and -shm beside it. A record being written is read
    # through SQLite's WAL, so the reader sees each committed flush.
    flags = "mode=ro&immutable=1" if is_finished(path) else "mode=ro"
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True)
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        # A WAL file left by a killed writer needs a writable connection to replay.
        con = sqlite3.connect(str(path))
        con.execute("PRAGMA query_only=1")
    con.text_factory = bytes  # decode ourselves: damaged text must not raise from inside sqlite3
    return con


def _text(value: Any, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, bytes):
        raise _Damaged(f"{what} has the wrong type ({type(value).__name__})")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Damaged(f"{what} is not valid text") from None


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise _Damaged(f"{what} is not valid JSON") from None


def _has_crc(con: sqlite3.Connection, table: str) -> bool:
    return any(row[1] == b"crc" or row[1] == "crc" for row in con.execute(f"PRAGMA table_info({table})"))


def _text_rows(con: sqlite3.Connection, table: str, key: str, value: str) -> list[tuple[str, Any]]:
    """``(key, decoded JSON)`` per row of a meta/params/layers table, checksums verified."""
    crc_col = ", crc" if _has_crc(con, table) else ""
    out = []
    for row in con.execute(f"SELECT {key}, {value}{crc_col} FROM {table} ORDER BY {key}"):
        k = _text(row[0], f"a {table} key")
        v = _text(row[1], f"{table} row {k!r}")
        if crc_col and row[2] != text_crc(k, v):
            raise _Damaged(f"{table} row {k!r} fails its checksum")
        out.append((k, _json(v, f"{table} row {k!r}")))
    return out


def _where(metric: Any, steps: Any) -> str:
    """Best-effort name of a block for the damage report: metric and step range."""
    name = metric.decode("utf-8", "replace") if isinstance(metric, bytes) else "?"
    if isinstance(steps, bytes) and steps and len(steps) % 8 == 0:
        s = np.frombuffer(steps, dtype="<i8")
        return f"{name} steps {s[0]}-{s[-1]}"
    return f"{name} (steps unreadable)"


def _decode_block(row: tuple, has_crc: bool) -> tuple[str, np.ndarray, np.ndarray]:
    metric_b, n, width, steps, data = row[:5]
    if not (isinstance(n, int) and isinstance(width, int) and isinstance(steps, bytes) and isinstance(data, bytes)):
        raise _Damaged(f"{_where(metric_b, steps)}: a field has the wrong type")
    metric = _text(metric_b, f"block {_where(metric_b, steps)}")
    if has_crc and row[5] != block_crc(metric, n, width, steps, data):
        raise _Damaged(f"{_where(metric_b, steps)}: checksum mismatch")
    if n < 0 or width < 0 or len(steps) != 8 * n or len(data) != 4 * n * max(width, 1):
        raise _Damaged(f"{_where(metric_b, steps)}: its size does not match its {n} x {width} shape")
    vals = np.frombuffer(data, dtype="<f4")
    return metric, np.frombuffer(steps, dtype="<i8"), vals.reshape(n, width) if width else vals


def _read_blocks(con: sqlite3.Connection, run: Run, expected: Optional[int]) -> list[str]:
    """Add every intact block to ``run``; return what was damaged or missing."""
    has_crc = _has_crc(con, "blocks")
    damaged, seen = [], 0
    for row in con.execute(f"SELECT metric, n, width, steps, data{', crc' if has_crc else ''} FROM blocks ORDER BY id"):
        seen += 1
        try:
            run.add(*_decode_block(row, has_crc))
        except _Damaged as e:
            damaged.append(str(e))
    if isinstance(expected, int) and expected > seen:
        damaged.append(f"{expected - seen} block(s) missing")
    return damaged


def _read(con: sqlite3.Connection, p: Path) -> Run:
    name = repr(str(p))
    try:
        con.execute("BEGIN")  # one snapshot for every query, while a writer may be committing
        meta_rows = con.execute("SELECT key, value FROM meta WHERE key='schema_version'").fetchall()
    except sqlite3.DatabaseError as e:
        raise _Refused(f"{name} is not a gradvet record, or is damaged (SQLite said: {e})") from None
    if not meta_rows:
        raise _Refused(f"{name} is not a gradvet record (no schema_version)")
    # the version first, unchecked: a newer schema may checksum differently
    version = _json(_text(meta_rows[0][1], "schema_version"), "schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise _Refused(
            f"{name} uses record schema {version}, but this gradvet reads schema <= {SCHEMA_VERSION}; "
            "upgrade gradvet (pip install -U gradvet) to read it"
        )
    meta = dict(_text_rows(con, "meta", "key", "value"))
    params = [v for _, v in _text_rows(con, "params", "idx", "info")]
    layers = [v for _, v in _text_rows(con, "layers", "idx", "info")]
    run = Run(meta=meta, params=params, layers=layers)
    damaged = _read_blocks(con, run, meta.get(BLOCK_COUNT_KEY))
    if damaged:
        run.meta["damaged"] = damaged
        shown = "; ".join(damaged[:5]) + (f"; and {len(damaged) - 5} more" if len(damaged) > 5 else "")
        warnings.warn(
            f"gradvet: the record {name} is damaged; skipped {shown}. The rest of it loaded.",
            RuntimeWarning,
            stacklevel=3,
        )
    return run


def _said_if_abandoned(run: Run, path: Path) -> Run:
    """A record whose status is still "running" while no writer holds its lock was abandoned: its process
    was killed or crashed, or the disk filled up before the record could say so. Say that instead."""
    if run.meta.get("status") == "running" and writer_alive(path) is False:
        run.meta["status"] = ("interrupted: no process is writing it, but it was never closed (the run was "
                              "killed or crashed, or the disk filled up); it holds the steps written before")
    return run


def load(path: PathLike) -> Run:
    """Read a record back, also while another process is still writing it.

    Blocks that fail their checksum are skipped with a ``RuntimeWarning`` naming their
    metric and steps (also in ``run.meta["damaged"]``); the rest loads.

    Args:
        path: the record file (``Monitor(..., record=path)``).

    Returns:
        A :class:`gradvet.record.Run` with numpy arrays per metric.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a gradvet record, is damaged beyond its metric blocks,
            or was written with a newer schema than this gradvet reads.

    Example:
        >>> run = gradvet.load("runs/exp1.gradvet")  # doctest: +SKIP
        >>> run.series("param/grad_norm").values.shape  # doctest: +SKIP
        (1000, 12)
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no gradvet record at {str(p)!r}; pass the path given to Monitor(record=...)")
    try:
        con = _connect_readonly(p)
    except Exception as e:  # SQLite's message itself may quote damaged bytes (UnicodeDecodeError)
        raise ValueError(f"{str(p)!r} is not a gradvet record, or is damaged ({type(e).__name__}: {e})") from None
    try:
        return _said_if_abandoned(_read(con, p), p)
    except _Damaged as e:
        raise ValueError(f"{str(p)!r} is a damaged gradvet record: {e}") from None
    except sqlite3.Error as e:
        raise ValueError(f"{str(p)!r} is a damaged gradvet record (SQLite said: {e})") from None
    except _Refused as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # any other decode failure is damage too, never a raw traceback
        raise ValueError(f"{str(p)!r} is a damaged gradvet record ({type(e).__name__}: {e})") from None
    finally:
        con.close()


def load_written(path: PathLike, failed: Optional[BaseException]) -> Run:
    """:func:`load` for the writer's own process: says so when writing the record had failed.

    Raises:
        ValueError: the record cannot be read; the message also gives the write error.
    """
    try:
        run = load(path)
    except (FileNotFoundError, ValueError) as e:
        if failed is None:
            raise
        raise ValueError(f"writing the record failed ({type(failed).__name__}: {failed}), and reading it: {e}") from None
    if failed is not None:
        if str(run.meta.get("status", "")).startswith(("running", "interrupted")):  # the record could not say it
            run.meta["status"] = f"record write failed: {type(failed).__name__}: {failed}"
        warnings.warn(
            f"gradvet: writing the record {str(path)!r} failed ({type(failed).__name__}: {failed}); "
            f"it holds the {len(run.steps)} steps written before that",
            RuntimeWarning,
            stacklevel=3,
        )
    return run
