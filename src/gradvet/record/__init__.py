"""The run record: an in-memory run and its crash-safe SQLite file."""

from gradvet.record._run import Run
from gradvet.record._sqlite import SCHEMA_VERSION, RecordWriter, load

__all__ = ["SCHEMA_VERSION", "RecordWriter", "Run", "load"]
