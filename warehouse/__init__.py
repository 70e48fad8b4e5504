"""The warehouse: priced facts in Parquet, DuckDB views over them.

``Warehouse(workdir)`` judges events new, duplicate or conflicting (``classify``), lands
batches exactly once (``commit``) and owns ``spendstream.duckdb`` (``ensure_views``).
See docs/warehouse.md.
"""

from __future__ import annotations

from spendstream.warehouse.dedupe import Classification, Verdict
from spendstream.warehouse.landing import CommitBatch, CommitResult, Warehouse
from spendstream.warehouse.layout import Layout, segment

__all__ = [
    "Classification",
    "CommitBatch",
    "CommitResult",
    "Layout",
    "Verdict",
    "Warehouse",
    "segment",
]
