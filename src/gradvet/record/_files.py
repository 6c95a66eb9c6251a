"""Where a record may be written: path checks, the writer's lock, atomic creation.

Three promises, each from an audit of careless uses:

- a file that is not a gradvet record is never deleted or written over, and an existing
  record only with ``overwrite=True``;
- one writer per record: a second one (another process, or another Monitor in this one)
  is refused while the first holds ``PATH.lock`` (``flock``: the kernel releases it when
  its holder dies, so a crashed writer never blocks the next run);
- a record appears complete or not at all: schema and first meta are written to a
  temporary file that is then renamed into place, so a reader (or a writer killed in
  its first milliseconds) never sees a half-made file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any, Optional, Union

from gradvet.record._schema import DDL, SCHEMA_VERSION, text_crc

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, the other checks still hold
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SIDECARS = ("-wal", "-shm", "-journal")


def resolve_record_path(record: Any) -> Optional[Path]:
    """``record`` as an absolute path (None stays None), fixed now so ``os.chdir`` cannot move it.

    Raises:
        TypeError: ``record`` is not a str or path.
    """
    if record is None:
        return None
    if not isinstance(record, (str, os.PathLike)):
        raise TypeError(
            f"Monitor(record=...) needs a file path (str or pathlib.Path), got {type(record).__name__}"
        )
    return Path(os.path.abspath(os.fspath(record)))


def is_record(path: Path) -> bool:
    """True if ``path`` is an SQLite file with a gradvet ``meta`` table (read only, never modified)."""
    try:
        with open(path, "rb") as f:
            if f.read(16) != _SQLITE_MAGIC:
                return False
        # immutable: read the main file only, never replay or touch a WAL
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        finally:
            con.close()
    except (OSError, sqlite3.Error):
        return False
    return row is not None


class RecordLock:
    """An exclusive ``flock`` on ``PATH.lock``, held by the one writer of ``PATH``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(str(path) + ".lock")
        self._fd: Optional[int] = None
        if fcntl is None:  # pragma: no cover
            return
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise ValueError(
                    f"the record {str(path)!r} is being written by another Monitor (process {holder}); "
                    "a record has one writer: wait for that run to finish, or pass another record path"
                ) from None
            if self._same_file(fd):
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
            else:  # the previous holder removed the file after we opened it: lock the new one
                os.close(fd)

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and unlock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(fd)  # closing the descriptor drops the flock


def is_finished(path: Path) -> bool:
    """True when no writer can be adding to ``path`` and the main file alone holds all of it.

    A writer holds ``PATH.lock`` from before it opens the record until after its last
    commit and checkpoint (:meth:`RecordLock.release` removes the file), so no lock file
    and no journal with content means a finished record: readers may open it
    ``immutable``, which creates no ``-wal``/``-shm`` beside it. A killed writer leaves its
    lock file (and maybe a WAL to replay), so its record is read the careful way.
    """
    if fcntl is None:  # pragma: no cover - no lock file to tell a live writer by
        return False
    if Path(str(path) + ".lock").exists():
        return False
    for suffix in ("-wal", "-journal"):  # an empty WAL is what a read-only reader used to leave
        try:
            if Path(str(path) + suffix).stat().st_size > 0:
                return False
        except FileNotFoundError:
            pass
    return True


def writer_alive(path: Path) -> Optional[bool]:
    """Whether a Monitor is writing ``path`` now: its ``PATH.lock`` exists and is locked. A killed
    writer's lock file stays but its ``flock`` is gone (the kernel drops it). None where there are no
    locks to ask (Windows)."""
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fd = os.open(str(path) + ".lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # drops the shared lock if it was taken
    return False


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise ValueError(f"record path {str(path)!r} is a directory; give a file name like 'runs/exp1.gradvet'")
    if path.exists() and not path.is_file():  # a FIFO or a device (/dev/null, /dev/full): never replaced
        raise ValueError(f"record path {str(path)!r} is not a regular file (a device, FIFO or socket); gradvet "
                         "never writes over it. Pass a file path such as 'runs/exp1.gradvet'")
    if not path.exists():
        for suffix in _SIDECARS:
            side = Path(str(path) + suffix)
            if side.exists():
                raise ValueError(
                    f"{str(side)!r} is left over from an SQLite file that is no longer at {str(path)!r}; "
                    "delete it or pass another record path"
                )
        return
    if path.stat().st_size == 0:
        return  # an empty file (e.g. from tempfile.mkstemp) holds nothing to lose
    if not is_record(path):
        raise ValueError(
            f"{str(path)!r} exists and is not a gradvet record; gradvet never writes over other files. "
            "Pass a new path such as 'runs/exp1.gradvet' (or move that file away yourself)"
        )
    if not overwrite:
        raise ValueError(
            f"{str(path)!r} is already a gradvet record; pass overwrite=True to replace it, "
            "or pass a new record path to keep it"
        )


def _create_atomically(path: Path, meta: dict[str, Any]) -> None:
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.creating")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies, as for open()
    try:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(DDL)
            items = {"schema_version": SCHEMA_VERSION, **meta}
            with con:
                con.executemany(
                    "INSERT OR REPLACE INTO meta(key, value, crc) VALUES (?, ?, ?)",
                    [(k, v, text_crc(k, v)) for k, v in ((k, json.dumps(v)) for k, v in items.items())],
                )
            con.execute("PRAGMA journal_mode=WAL")  # persisted in the file header
        finally:
            con.close()
        for suffix in _SIDECARS:  # an overwritten record's WAL must not be replayed into the new one
            Path(str(path) + suffix).unlink(missing_ok=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_for_writing(path: Path, meta: dict[str, Any], overwrite: bool = False, append: bool = False) -> RecordLock:
    """Check ``path``, lock it and create the record there (unless ``append`` to an existing one).

    Returns:
        The held lock; release it after the last write.

    Raises:
        ValueError: ``path`` is a directory, a file that is not a gradvet record, an existing
            record without ``overwrite``/``append``, or locked by another writer.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = RecordLock(path)
    try:
        if append and path.exists() and is_record(path):
            return lock
        _refuse_existing(path, overwrite)
        for stale in path.parent.iterdir():  # left by a writer killed while creating the record
            if stale.name.startswith(f".{path.name}.") and ".creating" in stale.name[len(path.name) + 2:]:
                stale.unlink(missing_ok=True)
        _create_atomically(path, meta)
    except BaseException:
        lock.release()
        raise
    return lock
