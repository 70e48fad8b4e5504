"""The warehouse: Apache Iceberg tables (pyiceberg), DuckDB views over their current snapshot.

``Warehouse(workdir, writer=..., config=...)`` is one writer's handle: ``resume()`` (its last
positions and state), ``classify`` (each event new, duplicate or conflicting), ``commit``
(exactly once, with positions and state), ``ensure_views``, ``compact``. See docs/warehouse.md.
"""

from __future__ import annotations

from spendstream.warehouse.dedupe import CONFLICT, DUPLICATE, NEW
from spendstream.warehouse.landing import CommitResult, Resume, Warehouse
from spendstream.warehouse.layout import segment

__all__ = ["CONFLICT", "DUPLICATE", "NEW", "CommitResult", "Resume", "Warehouse", "segment"]
