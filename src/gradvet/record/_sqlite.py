"""The on-disk record: one SQLite file, in WAL mode while written, off the training thread.

Why SQLite: it is in the standard library, a reader in another process can open
the file while it is being written (WAL), and a committed transaction survives
the writer being killed with SIGKILL at any moment (the WAL is replayed on the
next open). Each flush is one transaction, so a crash loses at most what was
measured since the last flush. The schema is in :mod:`gradvet.record._schema`; how
the file is created and locked, in :mod:`gradvet.record._files`.
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
from typing import Any, Optional, Union

import numpy as np

from gradvet.record._files import open_for_writing, resolve_record_path
from gradvet.record._schema import BLOCK_COUNT_KEY, encode_block, text_crc

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Block = tuple[str, np.ndarray, np.ndarray]


def _meta_rows(items: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(k, v, text_crc(k, v)) for k, v in ((k, json.dumps(v)) for k, v in items.items())]


def _table_rows(rows: list[dict]) -> list[tuple[int, str, int]]:
    return [(i, v, text_crc(str(i), v)) for i, v in enumerate(json.dumps(r) for r in rows)]


class RecordWriter:
    """Writes a run to ``path`` from a background thread.

    Every public method only enqueues work, so the training thread never waits on
    the disk. Errors on the writer thread are logged, warned about once, and stop
    the recording, never the training; ``failed`` then holds the error.

    Args:
        path: the record file (made absolute now).
        overwrite: replace an existing gradvet record at ``path`` (any other file is refused).
        append: add to the gradvet record at ``path`` (a Monitor entered a second time).
        meta: the first metadata, written with the schema in one atomic step.

    Raises:
        ValueError: ``path`` is a directory, another file, an existing record (without
            ``overwrite``), or is being written by another writer.
    """

    def __init__(
        self, path: PathLike, overwrite: bool = False, append: bool = False, meta: Optional[dict[str, Any]] = None
    ) -> None:
        resolved = resolve_record_path(path)
        if resolved is None:
            raise TypeError("RecordWriter needs a file path, got None")
        self.path = resolved
        self._lock = open_for_writing(self.path, meta or {}, overwrite=overwrite, append=append)
        self.failed: Optional[BaseException] = None
        self._queue: queue.Queue[Optional[tuple[str, Any]]] = queue.Queue()
        self._closed = False
        self._nblocks = 0  # blocks in the file, counted when the writer thread opens it
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
        """Commit what is queued, then stop the writer thread and unlock the record (idempotent)."""
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
            # live records are in WAL mode (readers see each flush); a finished one is not
            # (see _finish), so appending to it switches back
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            self._nblocks = con.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]
        except Exception as e:
            self._fail(e, None)
        try:
            self._drain(con)
        finally:
            self._finish(con)

    def _drain(self, con: Optional[sqlite3.Connection]) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
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
                self._fail(e, con)

    def _finish(self, con: Optional[sqlite3.Connection]) -> None:
        """Checkpoint and close, whatever fails (a full disk must not leave descriptors open).

        The finished file leaves WAL mode: SQLite removes ``-wal`` and ``-shm`` now, and no
        reader (gradvet's or any SQLite tool) creates them again. The switch needs the file
        to itself: while another connection is open (a reader caught at this moment) it is
        skipped, and the file stays in WAL mode, which gradvet's reader also opens without
        leaving files (``immutable``, see ``_load.py``).
        """
        try:
            if con is not None:
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._leave_wal(con)
        except Exception as e:
            log.warning("gradvet: checkpointing the record %s failed: %s", self.path, e)
        finally:
            if con is not None:
                con.close()
            self._lock.release()

    def _leave_wal(self, con: sqlite3.Connection) -> None:
        con.execute("PRAGMA busy_timeout=500")  # a reader's snapshot lasts milliseconds
        try:
            mode = con.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        except sqlite3.OperationalError as e:  # "database is locked": a reader has it open
            mode = str(e)
        if str(mode).lower() != "delete":
            log.debug("gradvet: the record %s stays in WAL mode (%s)", self.path, mode)

    def _write(self, con: sqlite3.Connection, kind: str, payload: Any) -> None:
        if kind == "meta":
            con.executemany("INSERT OR REPLACE INTO meta(key, value, crc) VALUES (?, ?, ?)", _meta_rows(payload))
        elif kind == "tables":
            params, layers = payload
            con.executemany("INSERT OR REPLACE INTO params(idx, info, crc) VALUES (?, ?, ?)", _table_rows(params))
            con.executemany("INSERT OR REPLACE INTO layers(idx, info, crc) VALUES (?, ?, ?)", _table_rows(layers))
        elif kind == "blocks":
            con.executemany(
                "INSERT INTO blocks(metric, n, width, steps, data, crc) VALUES (?, ?, ?, ?, ?, ?)",
                [encode_block(m, s, v) for m, s, v in payload],
            )
            count = self._nblocks + len(payload)
            con.executemany(
                "INSERT OR REPLACE INTO meta(key, value, crc) VALUES (?, ?, ?)",
                _meta_rows({"last_flush": time.time(), BLOCK_COUNT_KEY: count}),
            )
            self._nblocks = count

    def _fail(self, e: BaseException, con: Optional[sqlite3.Connection]) -> None:
        self.failed = e
        log.error("gradvet: writing the record %s failed: %s", self.path, e)
        warnings.warn(
            f"gradvet: could not write the record {str(self.path)!r} ({type(e).__name__}: {e}); "
            "recording stopped, training continues; the record keeps the steps written before.",
            RuntimeWarning,
            stacklevel=2,
        )
        if con is None:
            return
        try:  # say so in the record too, if the disk still takes a few bytes
            with con:
                con.executemany(
                    "INSERT OR REPLACE INTO meta(key, value, crc) VALUES (?, ?, ?)",
                    _meta_rows({"status": f"record write failed: {type(e).__name__}: {e}"}),
                )
        except Exception:
            log.debug("gradvet: could not mark the record %s as failed", self.path)
