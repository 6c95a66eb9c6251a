"""The record's SQLite schema and the checksums that make damage visible.

Schema (version 1):

- ``meta(key, value, crc)``: JSON values; ``schema_version`` among them.
- ``params(idx, info, crc)``, ``layers(idx, info, crc)``: JSON descriptions.
- ``blocks(id, metric, n, width, steps, data, crc)``: ``n`` rows of one metric; ``steps``
  is int64, ``data`` float32 ``[n, width]`` (``width`` 0 for scalar metrics), little-endian.

``crc`` is a CRC32 of the row's content. SQLite keeps no checksum on data, so without it
a flipped bit in a block loads silently as a different value. Records written before the
column existed have no ``crc``; they are read without the check.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL, crc INTEGER);
CREATE TABLE IF NOT EXISTS params(idx INTEGER PRIMARY KEY, info TEXT NOT NULL, crc INTEGER);
CREATE TABLE IF NOT EXISTS layers(idx INTEGER PRIMARY KEY, info TEXT NOT NULL, crc INTEGER);
CREATE TABLE IF NOT EXISTS blocks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    metric TEXT NOT NULL, n INTEGER NOT NULL, width INTEGER NOT NULL,
    steps BLOB NOT NULL, data BLOB NOT NULL, crc INTEGER);
CREATE INDEX IF NOT EXISTS blocks_metric ON blocks(metric, id);
"""

#: The number of blocks written so far, kept in ``meta``: a block that SQLite loses
#: without an error (a damaged page) shows up as missing.
BLOCK_COUNT_KEY = "block_count"


def text_crc(key: str, value: str) -> int:
    """CRC32 of one ``meta``/``params``/``layers`` row."""
    return zlib.crc32(value.encode("utf-8"), zlib.crc32(key.encode("utf-8") + b"\0"))


def block_crc(metric: str, n: int, width: int, steps: bytes, data: bytes) -> int:
    """CRC32 of one block row: its metric, shape, steps and float32 bytes."""
    head = metric.encode("utf-8") + b"\0" + struct.pack("<qq", n, width)
    return zlib.crc32(data, zlib.crc32(steps, zlib.crc32(head)))


def encode_block(metric: str, steps: np.ndarray, values: np.ndarray) -> tuple[str, int, int, bytes, bytes, int]:
    """The ``blocks`` row (without ``id``) for ``values[n, width]`` (or ``[n]``) at ``steps``."""
    arr = np.ascontiguousarray(values, dtype="<f4")
    width = arr.shape[1] if arr.ndim == 2 else 0
    step_bytes = np.ascontiguousarray(steps, dtype="<i8").tobytes()
    data = arr.tobytes()
    n = len(steps)
    return metric, n, width, step_bytes, data, block_crc(metric, n, width, step_bytes, data)
