"""Data quality of landed facts: a fast pre-check on every batch, a great-expectations suite on demand.

great-expectations 1.x takes seconds to import and validates through pandas, so it
cannot sit on the hot path. Every batch instead passes ``precheck`` (the suite's rules,
vectorised with pyarrow over the very table about to land: ~1 ms per 1000 facts); a
failing batch is quarantined by the landing code. The GE suite (``run_suite``) checks what actually landed, through the
views: ``spendstream warehouse check`` and the tests run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from spendstream.records import ALERT_KINDS
from spendstream.scopes import SCOPE_FIELDS, is_known_scope
from spendstream.table_schemas import COST_FIELDS

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "EARLIEST_TS",
    "FUTURE_SLACK",
    "QualityReport",
    "SuiteResult",
    "precheck",
    "run_suite",
]

# Before this, no metered LLM API existed; later than ingestion + slack is a broken clock.
EARLIEST_TS = datetime(2015, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
_MAX_LISTED = 20


@dataclass(slots=True)
class QualityReport:
    """What failed in one batch; ``ok`` when nothing did."""

    problems: list[str] = field(default_factory=list)
    failing: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        self.failing += 1
        if len(self.problems) < _MAX_LISTED:
            self.problems.append(problem)

    def to_dict(self) -> dict[str, Any]:
        return {"failing": self.failing, "problems": list(self.problems)}


def _flag(report: QualityReport, ids: pa.ChunkedArray, mask: Any, what: str) -> None:
    mask = pc.fill_null(mask, False)
    n = pc.sum(mask).as_py() or 0
    if not n:
        return
    listed = ids.filter(mask).to_pylist()[:_MAX_LISTED]
    for eid in listed:
        report.add(f"{eid}: {what}")
    report.failing += n - len(listed)


def _check_facts(facts: pa.Table, report: QualityReport) -> None:
    ids = facts["event_id"]
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        _flag(report, ids, pc.less(facts[name], 0), f"{name} is negative")
    cached = pc.add(facts["cache_read_tokens"], facts["cache_write_tokens"])
    _flag(
        report,
        ids,
        pc.greater(cached, facts["input_tokens"]),
        "cache_read_tokens + cache_write_tokens exceeds input_tokens",
    )
    ts_type = facts.schema.field("ts").type
    latest = pc.add(facts["ingested_at"], pa.scalar(FUTURE_SLACK, pa.duration("us")))
    _flag(
        report,
        ids,
        pc.or_(
            pc.less(facts["ts"], pa.scalar(EARLIEST_TS, ts_type)),
            pc.greater(facts["ts"], latest),
        ),
        f"ts outside [{EARLIEST_TS.date()}, ingested_at + 1 day]",
    )
    priced = facts["priced"]
    costs = [facts[n] for n in COST_FIELDS]
    missing = costs[0].is_null()
    negative = pc.less(costs[0], 0)
    for c in costs[1:]:
        missing = pc.or_(missing, c.is_null())
        negative = pc.or_kleene(negative, pc.less(c, 0))
    _flag(report, ids, pc.and_(priced, missing), "priced but a cost column is missing")
    _flag(report, ids, pc.and_(priced, negative), "negative cost")
    source = facts["price_source"]
    no_source = pc.or_(source.is_null(), pc.equal(pc.utf8_length(source), 0))
    _flag(report, ids, pc.and_(priced, no_source), "priced without a price_source")
    if pc.count_distinct(ids).as_py() < len(ids):
        counts = pc.value_counts(ids)
        for entry in counts.filter(pc.greater(counts.field("counts"), 1)).to_pylist():
            for _ in range(entry["counts"] - 1):
                report.add(f"{entry['values']}: event_id repeated in the batch")


def precheck(
    facts: pa.Table,
    alerts: pa.Table | None = None,
    breaker_events: pa.Table | None = None,
) -> QualityReport:
    """The suite's rules over one batch, vectorised over the tables that are about to land."""
    report = QualityReport()
    if facts.num_rows:
        _check_facts(facts, report)
    if alerts is not None and alerts.num_rows:
        for a in alerts.select(["alert_id", "kind", "scope"]).to_pylist():
            if not is_known_scope(a["scope"]):
                report.add(f"alert {a['alert_id']}: unknown scope {a['scope']!r}")
            if a["kind"] not in ALERT_KINDS:
                report.add(f"alert {a['alert_id']}: unknown kind {a['kind']!r}")
    if breaker_events is not None and breaker_events.num_rows:
        for scope in breaker_events["scope"].to_pylist():
            if not is_known_scope(scope):
                report.add(f"breaker event: unknown scope {scope!r}")
    return report


@dataclass(slots=True)
class SuiteResult:
    """The GE suite's verdict: every expectation with its outcome."""

    success: bool
    results: list[tuple[str, bool, str]]  # (expectation, passed, detail)


# The suite reads derived columns so each rule is one stock expectation.
_FACTS_SQL = """
SELECT event_id, ts, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
       input_tokens - cache_read_tokens - cache_write_tokens AS uncached_tokens,
       CAST(cost_usd AS DOUBLE) AS cost_usd_approx,
       (priced AND cost_usd IS NULL) OR (NOT priced AND cost_usd IS NOT NULL) AS cost_mismatch
FROM usage_facts
WHERE ($since IS NULL OR ts >= $since)
"""
_SCOPES_SQL = "SELECT scope FROM alerts UNION ALL SELECT scope FROM breaker_events"
_SCOPE_REGEX = r"^(?:global|(?:" + "|".join(SCOPE_FIELDS) + r"):.+)$"


def run_suite(con: duckdb.DuckDBPyConnection, since: datetime | None = None) -> SuiteResult:
    """Run the great-expectations suite over the landed facts (and alert/breaker scopes),
    read through ``con`` (reading.connect or views.connect_snapshot)."""
    import os

    # No telemetry from a metering tool's quality check.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    facts = con.execute(_FACTS_SQL, {"since": since}).df()
    scopes = con.execute(_SCOPES_SQL).df()
    now = datetime.now(UTC)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("warehouse")
    fact_suite = gx.ExpectationSuite(name="usage_facts")
    for column in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        fact_suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0))
    fact_suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column="uncached_tokens", min_value=0)
    )
    fact_suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(column="cost_usd_approx", min_value=0)
    )
    fact_suite.add_expectation(
        gxe.ExpectColumnValuesToBeInSet(column="cost_mismatch", value_set=[False])
    )
    fact_suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="event_id"))
    fact_suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="event_id"))
    fact_suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column="ts", min_value=EARLIEST_TS, max_value=now + FUTURE_SLACK
        )
    )
    scope_suite = gx.ExpectationSuite(name="scopes")
    scope_suite.add_expectation(
        gxe.ExpectColumnValuesToMatchRegex(column="scope", regex=_SCOPE_REGEX)
    )

    results: list[tuple[str, bool, str]] = []
    success = True
    for name, frame, suite in (("usage_facts", facts, fact_suite), ("scopes", scopes, scope_suite)):
        asset = source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe(name).get_batch(
            batch_parameters={"dataframe": frame}
        )
        outcome = batch.validate(suite)
        success = success and bool(outcome.success)
        for r in outcome.results:
            cfg = r.expectation_config
            assert cfg is not None
            column = cfg.kwargs.get("column", "")
            label = f"{name}.{column}: {cfg.type}"
            detail = ""
            info = r.exception_info or {}
            if info.get("raised_exception"):
                detail = f"error: {info.get('exception_message')}"
            elif not r.success:
                unexpected = r.result.get("unexpected_count")
                sample = r.result.get("partial_unexpected_list", [])[:3]
                detail = f"{unexpected} unexpected, e.g. {sample}"
            results.append((label, bool(r.success), detail))
    return SuiteResult(success=success, results=results)
