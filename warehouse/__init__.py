"""The warehouse: priced facts in Parquet, DuckDB views over them.

``Warehouse(workdir)`` lands batches exactly once (``unseen`` + ``commit``) and owns
``spendstream.duckdb`` (``ensure_views``). See docs/warehouse.md.
"""

from __future__ import annotations

from spendstream.warehouse.landing import CommitBatch, CommitResult, Warehouse
from spendstream.warehouse.layout import Layout, segment

__all__ = ["CommitBatch", "CommitResult", "Layout", "Warehouse", "segment"]
