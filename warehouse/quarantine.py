"""Batches an earlier release quarantined whole, listed for ``spendstream warehouse check``.

Landing sets no batch aside any more: each record is judged on its own before it lands
(stream/batch.py, docs/bounds.md). Batches quarantined before that stay under
``<location>/quarantine/<id>/`` with their ``report.json``; ``quarantined`` lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spendstream.warehouse.tables import walk_files

if TYPE_CHECKING:
    from spendstream.warehouse.landing import Warehouse

__all__ = ["QuarantinedBatch", "quarantined"]


@dataclass(frozen=True, slots=True)
class QuarantinedBatch:
    batch_id: str
    writer: str
    created_at: str
    failing: int
    path: str


def _root(wh: Warehouse) -> str:
    return f"{wh.storage.location}/quarantine"


def quarantined(wh: Warehouse) -> list[QuarantinedBatch]:
    """Every quarantined batch, oldest first."""
    out = []
    for info in walk_files(wh.fs, wh.storage.to_fs_path(_root(wh))):
        if not info.path.endswith("/report.json"):
            continue
        with wh.fs.open_input_stream(info.path) as fh:
            doc = json.loads(fh.read())
        out.append(
            QuarantinedBatch(
                doc["batch_id"],
                doc.get("writer", ""),
                doc["batch_id"].split("-")[0],
                int(doc.get("failing", 0)),
                info.path.rsplit("/", 1)[0],
            )
        )
    return sorted(out, key=lambda b: b.batch_id)
