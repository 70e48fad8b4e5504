"""The one place that knows the warehouse's layout on disk.

    <workdir>/warehouse/
      spendstream.duckdb                 views only (rebuilt by ensure_views, never held open)
      catalog.sqlite                     landed ids, files, commits, writer state (WAL)
      usage_facts/date=YYYY-MM-DD/c<commit>-<n>.parquet     one file per commit and partition
      usage_facts/date=YYYY-MM-DD/k<upto>-<from>-<token>.parquet  compacted: every c-file
                                         <= upto, in force from <from> (epoch ms)
      alerts/... breaker_events/... dead_letters/...        same scheme
      revenue/revenue.parquet            users' revenue table (load-revenue)
      _tmp/<writer instance>/...         staged files, invisible to views until committed
      quarantine/<commit>/               batches an older release quarantined whole + report.json

Partition values derived from data pass through ``segment``, which percent-encodes
everything outside a small safe alphabet, so no value (``../``, ``/``, NUL, dots,
unicode, 10 kB names) can name a path outside its table directory.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

__all__ = [
    "DB_NAME",
    "TABLES",
    "Layout",
    "parse_data_file",
    "segment",
]

DB_NAME = "spendstream.duckdb"
CATALOG_NAME = "catalog.sqlite"
TABLES = ("usage_facts", "alerts", "breaker_events", "dead_letters")
PARTITION_KEY = "date"
# A schema-only (zero-row) file per table keeps read_parquet valid on an empty warehouse;
# its partition value sorts before any real date and its name never matches a data file.
SCHEMA_PARTITION = "0001-01-01"
SCHEMA_FILE = "s000000000000-schema.parquet"
MAX_SEGMENT_CHARS = 120

_SAFE = re.compile(r"[A-Za-z0-9_\-]")
_DATA_FILE = re.compile(r"^([ck])([0-9]{12})-[A-Za-z0-9_\-]+\.parquet$")


def segment(value: str) -> str:
    """A value made safe as one path component (and as a hive partition value).

    Percent-encodes every byte outside ``[A-Za-z0-9_-]`` (so ``.``, ``/``, ``\\``, ``=``,
    NUL and non-ASCII are encoded); over-long results keep a prefix plus a hash so two
    long values stay distinct. Never empty, never ``.`` or ``..``.
    """
    out = []
    for ch in value:
        if _SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", errors="surrogatepass"))
    encoded = "".join(out) or "%00empty"
    if len(encoded) > MAX_SEGMENT_CHARS:
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
        encoded = encoded[: MAX_SEGMENT_CHARS - 17] + "~" + digest
    return encoded


@dataclass(frozen=True, slots=True)
class DataFile:
    kind: str  # "c": one commit's rows; "k": compacted, covers every c-file with id <= number
    number: int


def parse_data_file(name: str) -> DataFile | None:
    """The kind and number encoded in a data file's name (None: not a data file)."""
    m = _DATA_FILE.match(name)
    return DataFile(m.group(1), int(m.group(2))) if m else None


@dataclass(frozen=True, slots=True)
class Layout:
    """Paths under ``<workdir>/warehouse``."""

    root: Path

    @classmethod
    def for_workdir(cls, workdir: Path) -> Layout:
        return cls(Path(workdir).resolve() / "warehouse")

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_NAME

    @property
    def tmp_dir(self) -> Path:
        return self.root / "_tmp"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def revenue_dir(self) -> Path:
        return self.root / "revenue"

    @property
    def revenue_file(self) -> Path:
        return self.revenue_dir / "revenue.parquet"

    @property
    def compact_lock(self) -> Path:
        return self.root / "_compact.lock"

    def table_dir(self, table: str) -> Path:
        if table not in TABLES:
            raise ValueError(f"unknown warehouse table {table!r}")
        return self.root / table

    def partition_dir(self, table: str, **values: str) -> Path:
        """``<table>/k1=v1/k2=v2``, every value encoded by ``segment``; always inside the table."""
        path = self.table_dir(table)
        for key, value in values.items():
            path = path / f"{segment(key)}={segment(value)}"
        base = self.table_dir(table).resolve()
        # Defence in depth: segment() already makes escape impossible.
        if base not in path.resolve().parents:
            raise ValueError(f"partition path escapes {base}")
        return path

    def date_dir(self, table: str, day: date) -> Path:
        return self.partition_dir(table, **{PARTITION_KEY: day.isoformat()})

    def schema_file(self, table: str) -> Path:
        return self.partition_dir(table, **{PARTITION_KEY: SCHEMA_PARTITION}) / SCHEMA_FILE

    def glob(self, table: str) -> str:
        """The pattern views read: every partition's Parquet files (evaluated at query time)."""
        return str(self.table_dir(table) / "*" / "*.parquet")

    @staticmethod
    def commit_file_name(commit_id: int, n: int) -> str:
        return f"c{commit_id:012d}-{n}.parquet"

    @staticmethod
    def compact_file_name(upto: int, active_from_ms: int, token: str) -> str:
        return f"k{upto:012d}-{active_from_ms:013d}-{segment(token)}.parquet"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"catalog path {relative!r} escapes the warehouse")
        return path
