"""Batches that fail the quality pre-check: kept aside with a report, their facts dead-lettered.

The batch's facts, alerts and breaker events are written as Parquet under
``<location>/quarantine/<id>/`` with ``report.json`` (on the warehouse's own storage, so it
works on S3 too); each fact becomes a dead letter naming why, so every input still ends in
``usage_facts`` or ``dead_letters``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from spendstream.table_schemas import SCHEMAS
from spendstream.warehouse.quality import QualityReport
from spendstream.warehouse.tables import walk_files

if TYPE_CHECKING:
    from spendstream.warehouse.landing import CommitResult, Warehouse

__all__ = ["QuarantinedBatch", "quarantine", "quarantined"]

_FACT_JSON_DROP = (
    "input_cost_usd",
    "cache_read_cost_usd",
    "cache_write_cost_usd",
    "output_cost_usd",
    "cost_usd",
    "priced",
    "price_source",
    "ingested_at",
)


@dataclass(frozen=True, slots=True)
class QuarantinedBatch:
    batch_id: str
    writer: str
    created_at: str
    failing: int
    path: str


def _root(wh: Warehouse) -> str:
    return f"{wh.storage.location}/quarantine"


def _raw(row: dict[str, Any]) -> str:
    event = {k: v for k, v in row.items() if k not in _FACT_JSON_DROP and v is not None}
    if isinstance(event.get("tags"), list):
        event["tags"] = dict(event["tags"])
    return json.dumps(event, default=str, separators=(",", ":"))


def quarantine(
    wh: Warehouse, tables: dict[str, pa.Table], report: QualityReport, result: CommitResult
) -> dict[str, pa.Table]:
    """Write the batch aside; return the tables to land instead (its facts as dead letters)."""
    batch_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    base = f"{_root(wh)}/{batch_id}"
    fs_base = wh.storage.to_fs_path(base)
    if not wh.storage.is_s3:
        Path(fs_base).mkdir(parents=True, exist_ok=True)
    for name in ("usage_facts", "alerts", "breaker_events"):
        if len(tables[name]):
            pq.write_table(tables[name], f"{fs_base}/{name}.parquet", filesystem=wh.fs)
    doc = {"batch_id": batch_id, "writer": wh.writer, **report.to_dict()}
    with wh.fs.open_output_stream(f"{fs_base}/report.json") as out:
        out.write(json.dumps(doc, indent=2).encode())
    facts = tables["usage_facts"]
    note = "; ".join(report.problems[:3])
    error = f"batch quarantined by the quality pre-check ({note}); see quarantine/{batch_id}/report.json"
    letters = pa.table(
        {
            "raw": pa.array([_raw(r) for r in facts.to_pylist()], pa.string()),
            "error": pa.array([error] * len(facts), pa.string()),
            "source": pa.array(["quality"] * len(facts), pa.string()),
            "received_at": facts["ingested_at"],
        },
        schema=SCHEMAS["dead_letters"],
    )
    result.quarantined = len(facts) + len(tables["alerts"]) + len(tables["breaker_events"])
    wh.quarantined_facts = facts.select(["event_id", "ts"]) if len(facts) else None
    return {
        "usage_facts": SCHEMAS["usage_facts"].empty_table(),
        "alerts": SCHEMAS["alerts"].empty_table(),
        "breaker_events": SCHEMAS["breaker_events"].empty_table(),
        "dead_letters": pa.concat_tables([tables["dead_letters"], letters]),
    }


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
