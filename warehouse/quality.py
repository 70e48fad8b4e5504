"""Data quality of landed facts: a great-expectations suite, run on demand.

Records are judged one by one before they land (stream/batch.py: bounds on every field,
docs/bounds.md), so nothing here stands between a batch and the warehouse: no batch is
ever quarantined whole for one bad record. The suite (``run_suite``) audits what actually
landed, through the views: ``spendstream warehouse check`` and the tests run it.
great-expectations 1.x takes seconds to import and validates through pandas, which is why
it is not on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from spendstream.producers.event import EARLIEST_TS
from spendstream.scopes import SCOPE_FIELDS

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "FUTURE_SLACK",
    "SuiteResult",
    "run_suite",
]

# The audit's latest plausible ts: generous beside [detection] max_future_skew_s, which the
# suite cannot see (it checks against today, not against each record's receipt).
FUTURE_SLACK = timedelta(days=1)


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
