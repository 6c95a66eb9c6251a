"""The run record: an in-memory run and its crash-safe SQLite file."""

from gradvet.record._files import resolve_record_path
from gradvet.record._load import load, load_written
from gradvet.record._run import Run
from gradvet.record._schema import SCHEMA_VERSION
from gradvet.record._sqlite import RecordWriter

__all__ = ["SCHEMA_VERSION", "RecordWriter", "Run", "load", "load_written", "resolve_record_path"]
