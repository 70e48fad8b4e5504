"""A batch's facts written to data files while the rest of the batch is still worked on.

Writing a batch's Parquet files is most of a commit's time and runs mostly in Arrow's C++ without
the GIL; detection and publishing hold it. Started as soon as the facts are priced
(``Warehouse.prewrite``), the write overlaps them on another core, and the commit then only
waits for what is left of it (``Warehouse.commit(prewritten=...)``).

Nothing is visible before the catalog commit names the files: a prewrite whose commit never
comes is discarded (its files deleted) by whoever holds it, and a file a crash left behind
is an orphan, which views never read (they read the files their snapshot lists) and
``warehouse compact`` removes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile

__all__ = ["Prewrite"]

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    # One thread per process: the write itself fans out on pyiceberg's own pool; this one
    # only lets the caller go on meanwhile.
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="spendstream-prewrite")
        return _pool


class Prewrite:
    """The data files of one facts table being written (see the module docstring).

    ``facts`` and ``digests`` are the very objects the commit will be given: the files are
    used only if the commit lands exactly those rows (none was a duplicate by then);
    otherwise they are deleted and the commit writes its own."""

    def __init__(
        self,
        facts: pa.Table,
        digests: pa.Array | None,
        write: Callable[[], list[DataFile]],
        delete: Callable[[Sequence[DataFile]], None],
    ) -> None:
        self.facts = facts
        self.digests = digests
        self._delete = delete
        self._future: Future[list[DataFile]] = _executor().submit(write)
        self._taken = False

    def matches(self, facts: pa.Table, digests: pa.Array | None) -> bool:
        return facts is self.facts and digests is self.digests

    def take(self) -> list[DataFile]:
        """The written files (waits for them); a failed write raises here, as the commit's
        own write would have."""
        self._taken = True
        return self._future.result()

    def discard(self) -> None:
        """Not to be committed: wait for the write and delete what it wrote. Idempotent;
        a no-op once taken (the files belong to the commit then)."""
        if self._taken:
            return
        self._taken = True
        # A write that failed may have left some of its files (written in parallel): those
        # are orphans, which `warehouse compact` deletes.
        with contextlib.suppress(Exception):
            self._delete(self._future.result())
