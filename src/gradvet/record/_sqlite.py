"""The on-disk record: one SQLite file in WAL mode, written off the training thread.

Why SQLite: it is in the standard library, a reader in another process can open
the file while it is being written (WAL), and a committed transaction survives
the writer being killed with SIGKILL at any moment (the WAL is replayed on the
next open). Each flush is one transaction, so a crash loses at most what was
measured since the last flush.

Schema (version 1):

- ``meta(key, value)``: JSON values; ``schema_version`` among them.
- ``params(idx, info)``, ``layers(idx, info)``: JSON descriptions.
- ``blocks(id, metric, n, width, steps, data)``: ``n`` rows of one metric; ``steps`` is
  int64, ``data`` float32 ``[n, width]`` (``width`` 0 for scalar metrics), little-endian.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from gradvet.record._run import Run

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS params(idx INTEGER PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers(idx INTEGER PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    metric TEXT NOT NULL, n INTEGER NOT NULL, width INTEGER NOT NULL,
    steps BLOB NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS blocks_metric ON blocks(metric, id);
"""

PathLike = Union[str, "os.PathLike[str]"]
Block = tuple[str, np.ndarray, np.ndarray]


def _encode(steps: np.ndarray, values: np.ndarray) -> tuple[int, int, bytes, bytes]:
    values = np.ascontiguousarray(values, dtype="<f4")
    width = values.shape[1] if values.ndim == 2 else 0
    return len(steps), width, np.ascontiguousarray(steps, dtype="<i8").tobytes(), values.tobytes()


class RecordWriter:
    """Writes a run to ``path`` from a background thread.

    Every public method only enqueues work, so the training thread never waits on
    the disk. Errors on the writer thread are logged, warned about once, and stop
    the recording, never the training.
    """

    def __init__(self, path: PathLike, overwrite: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"record path {str(self.path)!r} is a directory; give a file name like 'runs/exp1.gradvet'")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(self.path) + suffix)
                if p.exists():
                    p.unlink()
        self.failed: Optional[BaseException] = None
        self._queue: queue.Queue[Optional[tuple[str, Any]]] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="gradvet-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- producer side -------------------------------------------------------------
    def meta(self, **items: Any) -> None:
        self._put("meta", items)

    def tables(self, params: list[dict], layers: list[dict]) -> None:
        self._put("tables", (params, layers))

    def blocks(self, blocks: list[Block]) -> None:
        self._put("blocks", blocks)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until everything enqueued so far is committed."""
        if self._closed:
            return
        done = threading.Event()
        self._put("barrier", done)
        done.wait(timeout)

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _put(self, kind: str, payload: Any) -> None:
        if not self._closed and self.failed is None:
            self._queue.put((kind, payload))
        elif kind == "barrier":
            payload.set()

    # -- writer thread -------------------------------------------------------------
    def _run(self) -> None:
        con: Optional[sqlite3.Connection] = None
        try:
            con = sqlite3.connect(str(self.path), check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_DDL)
            with con:
                con.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (json.dumps(SCHEMA_VERSION),)
                )
        except Exception as e:
            self._fail(e)
        while True:
            item = self._queue.get()
            if item is None:
                break
            kind, payload = item
            if kind == "barrier":
                payload.set()
                continue
            if con is None or self.failed is not None:
                continue
            try:
                with con:
                    self._write(con, kind, payload)
            except Exception as e:
                self._fail(e)
        if con is not None:
            try:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.close()
            except Exception as e:  # pragma: no cover - closing a broken file
                log.warning("gradvet: closing the record failed: %s", e)

    def _write(self, con: sqlite3.Connection, kind: str, payload: Any) -> None:
        if kind == "meta":
            con.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in payload.items()],
            )
        elif kind == "tables":
            params, layers = payload
            con.executemany("INSERT OR REPLACE INTO params VALUES (?, ?)", [(i, json.dumps(p)) for i, p in enumerate(params)])
            con.executemany("INSERT OR REPLACE INTO layers VALUES (?, ?)", [(i, json.dumps(x)) for i, x in enumerate(layers)])
        elif kind == "blocks":
            con.executemany(
                "INSERT INTO blocks(metric, n, width, steps, data) VALUES (?, ?, ?, ?, ?)",
                [(m, *_encode(s, v)) for m, s, v in payload],
            )
            con.execute("INSERT OR REPLACE INTO meta VALUES ('last_flush', ?)", (json.dumps(time.time()),))

    def _fail(self, e: BaseException) -> None:
        self.failed = e
        log.error("gradvet: writing the record %s failed: %s", self.path, e)
        warnings.warn(
            f"gradvet: could not write the record {str(self.path)!r} ({type(e).__name__}: {e}); "
            "recording stopped, training continues.",
            RuntimeWarning,
            stacklevel=2,
        )


def _connect_readonly(path: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return con
    except sqlite3.OperationalError:
        # A WAL file left by a killed writer needs a writable connection to replay.
        con = sqlite3.connect(str(path))
        con.execute("PRAGMA query_only=1")
        return con


def load(path: PathLike) -> Run:
    """Read a record back, also while another process is still writing it.

    Args:
        path: the record file (``Monitor(..., record=path)``).

    Returns:
        A :class:`gradvet.record.Run` with numpy arrays per metric.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a gradvet record, or was written with a newer
            schema than this gradvet reads.

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
        rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{str(p)!r} is not a gradvet record (SQLite said: {e})") from None
    if "schema_version" not in rows:
        raise ValueError(f"{str(p)!r} is not a gradvet record (no schema_version)")
    version = json.loads(rows["schema_version"])
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(
            f"{str(p)!r} uses record schema {version}, but this gradvet reads schema <= {SCHEMA_VERSION}; "
            "upgrade gradvet (pip install -U gradvet) to read it"
        )
    with con:
        meta = {k: json.loads(v) for k, v in rows.items()}
        params = [json.loads(r[0]) for r in con.execute("SELECT info FROM params ORDER BY idx")]
        layers = [json.loads(r[0]) for r in con.execute("SELECT info FROM layers ORDER BY idx")]
        run = Run(meta=meta, params=params, layers=layers)
        for metric, n, width, steps, data in con.execute(
            "SELECT metric, n, width, steps, data FROM blocks ORDER BY id"
        ):
            vals = np.frombuffer(data, dtype="<f4")
            vals = vals.reshape(n, width) if width else vals.reshape(n)
            run.add(metric, np.frombuffer(steps, dtype="<i8"), vals)
    con.close()
    return run
