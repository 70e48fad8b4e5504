"""Table metadata parsed once per thread: an Iceberg metadata file never changes once
written, so its parsed form is shared by every catalog (writer) of the thread.

pyiceberg's SQL catalog reads and parses the current metadata JSON whenever a table is
loaded, and once more inside every ``commit_table`` (to check the requirements). A Kafka
worker runs a dozen writers on one facts table whose metadata lists up to
``max_snapshots`` snapshots, each with every writer's keys: parsing it was ~40% of a usage
commit, several times per commit. Here a catalog looks the location up first; a metadata
file this thread wrote is known without reading it back.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.table.metadata import TableMetadata

__all__ = ["PARSED", "ParsedMetadata", "caching_sql_catalog"]


class ParsedMetadata:
    """The ``size`` most recently used parsed metadata files, by location, per thread.

    Per thread because a parsed ``TableMetadata`` is frozen but not immutable: its schemas
    and specs fill caches of their own on first use, and every commit deep-copies its base
    metadata; one thread's first use during another's copy fails the copy ("dictionary
    changed size during iteration"). A worker's usage partitions share one thread, so its
    writers still share what any of them parsed. A thread's tables each have a head or two
    in use at a time (the head and a newer one a commit just wrote)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._local = threading.local()
        self.hits = 0  # every thread's, for tests and profiling
        self.misses = 0

    def _items(self) -> OrderedDict[str, TableMetadata]:
        items: OrderedDict[str, TableMetadata] | None = getattr(self._local, "items", None)
        if items is None:
            items = self._local.items = OrderedDict()
        return items

    def get(self, location: str) -> TableMetadata | None:
        items = self._items()
        metadata = items.get(location)
        if metadata is None:
            self.misses += 1
            return None
        items.move_to_end(location)
        self.hits += 1
        return metadata

    def put(self, location: str, metadata: TableMetadata) -> None:
        items = self._items()
        items[location] = metadata
        items.move_to_end(location)
        while len(items) > self.size:
            items.popitem(last=False)

    def clear(self) -> None:
        """This thread's entries."""
        self._items().clear()


PARSED = ParsedMetadata()


@cache
def caching_sql_catalog() -> type[SqlCatalog]:
    """pyiceberg's ``SqlCatalog`` reading metadata through ``PARSED`` (built on first use:
    pyiceberg is a heavy import). It overrides two private methods of pyiceberg 0.12
    (pinned in constraints.txt): the one that turns a catalog row into a table, and the
    one that writes a new metadata file."""
    from pyiceberg.catalog import Catalog
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.io import FileIO
    from pyiceberg.table import Table

    class CachingSqlCatalog(SqlCatalog):
        def _convert_orm_to_iceberg(self, orm_table: Any) -> Table:
            location = orm_table.metadata_location
            metadata = PARSED.get(location) if location else None
            if metadata is None:
                table: Table = super()._convert_orm_to_iceberg(orm_table)
                PARSED.put(location, table.metadata)
                return table
            return Table(
                identifier=(
                    *Catalog.identifier_to_tuple(orm_table.table_namespace),
                    orm_table.table_name,
                ),
                metadata=metadata,
                metadata_location=location,
                io=self._load_file_io(metadata.properties, location),
                catalog=self,
            )

        @staticmethod
        def _write_metadata(metadata: TableMetadata, io: FileIO, metadata_path: str) -> None:
            SqlCatalog._write_metadata(metadata, io, metadata_path)
            # Known without reading it back, should the commit win (else it is evicted).
            PARSED.put(metadata_path, metadata)

    return CachingSqlCatalog
