"""Named queries: each is a view in spendstream.duckdb and a ``spendstream query NAME``.

A query's SQL reads a relation called ``facts``. As a view, ``facts`` is all of
``usage_facts``; from the CLI it is ``usage_facts`` narrowed by the filters, whose
values are bound as parameters (``$team`` ...), never formatted into the SQL.
Days and months are UTC (the ``date`` partition column). Ratios are DOUBLE; per-unit
money is DECIMAL(38, 9) (rounded to a nano-dollar); summed money stays DECIMAL(38, 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FILTERS", "QUERIES", "NamedQuery", "filtered_sql", "view_sql"]


@dataclass(frozen=True, slots=True)
class NamedQuery:
    name: str
    description: str
    sql: str


# filter name -> (SQL condition with a bound parameter, help)
FILTERS: dict[str, tuple[str, str]] = {
    # The date terms are implied by the ts terms (readers run in UTC); they let DuckDB skip
    # whole partitions.
    "since": (
        "ts >= CAST($since AS TIMESTAMPTZ) AND date >= CAST(CAST($since AS TIMESTAMPTZ) AS DATE)",
        "events at or after this UTC time/date",
    ),
    "until": (
        "ts < CAST($until AS TIMESTAMPTZ) AND date <= CAST(CAST($until AS TIMESTAMPTZ) AS DATE)",
        "events before this UTC time/date",
    ),
    "team": ("team = $team", "only this team"),
    "feature": ("feature = $feature", "only this feature"),
    "project": ("project = $project", "only this project"),
    "environment": ("environment = $environment", "only this environment"),
    "provider": ("provider = $provider", "only this provider"),
    "model": ("model = $model", "only this model"),
    "user": ("user_id = $user", "only this user_id"),
}

_MONTH = "CAST(date_trunc('month', date) AS DATE)"
_PER_UNIT = "DECIMAL(38, 9)"


def _cost_by(keys: str, order: str = "cost_usd DESC NULLS LAST") -> str:
    return f"""
SELECT {keys},
       count(*) AS calls,
       count(*) FILTER (WHERE NOT priced) AS unpriced_calls,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd,
       round(100 * sum(cost_usd) / nullif(sum(sum(cost_usd)) OVER (), 0), 2) AS share_pct
FROM facts
GROUP BY ALL
ORDER BY {order}"""


_SESSIONS = """
WITH RECURSIVE s AS (
    SELECT session_id, min(parent_session_id) AS parent_session_id,
           min(team) AS team, count(*) AS calls, sum(cost_usd) AS cost_usd,
           min(ts) AS first_ts, max(ts) AS last_ts
    FROM facts WHERE session_id IS NOT NULL GROUP BY session_id
),
tree(root_session_id, session_id, depth, path) AS (
    SELECT session_id, session_id, 0, [session_id] FROM s
    WHERE parent_session_id IS NULL
       OR parent_session_id NOT IN (SELECT session_id FROM s)
    UNION ALL
    SELECT t.root_session_id, s.session_id, t.depth + 1, list_append(t.path, s.session_id)
    FROM tree t JOIN s ON s.parent_session_id = t.session_id
    WHERE NOT list_contains(t.path, s.session_id) AND t.depth < 64
),
nodes AS (
    SELECT t.root_session_id, t.depth, t.path, s.*
    FROM tree t JOIN s USING (session_id)
)"""

QUERIES: tuple[NamedQuery, ...] = (
    NamedQuery(
        "cost_by_team",
        "Spend, calls and tokens per team (untagged calls as '(untagged)').",
        _cost_by("coalesce(team, '(untagged)') AS team", "cost_usd DESC NULLS LAST, team"),
    ),
    NamedQuery(
        "cost_by_feature",
        "Spend per team and feature.",
        _cost_by("team, feature", "cost_usd DESC NULLS LAST, team, feature"),
    ),
    NamedQuery(
        "cost_by_model",
        "Spend per provider and model.",
        _cost_by("provider, model", "cost_usd DESC NULLS LAST, provider, model"),
    ),
    NamedQuery(
        "cost_by_user",
        "Spend per end user (user_id).",
        _cost_by("user_id", "cost_usd DESC NULLS LAST, user_id"),
    ),
    NamedQuery("cost_by_day", "Spend per UTC day.", _cost_by("date AS day", "day")),
    NamedQuery(
        "top_sessions",
        "Root sessions by the cost of their whole sub-agent tree, with the sub-agents' share.",
        _SESSIONS
        + """
SELECT root_session_id AS session_id,
       any_value(team) FILTER (WHERE depth = 0) AS team,
       count(*) AS sessions,
       count(*) - 1 AS sub_agent_sessions,
       max(depth) AS max_depth,
       sum(calls) AS calls,
       sum(cost_usd) FILTER (WHERE depth = 0) AS own_cost_usd,
       coalesce(sum(cost_usd) FILTER (WHERE depth > 0), 0) AS sub_agent_cost_usd,
       sum(cost_usd) AS tree_cost_usd,
       round(coalesce(sum(cost_usd) FILTER (WHERE depth > 0), 0)
             / nullif(sum(cost_usd), 0), 4) AS sub_agent_overhead_share,
       min(first_ts) AS first_ts,
       max(last_ts) AS last_ts
FROM nodes
GROUP BY root_session_id
ORDER BY tree_cost_usd DESC NULLS LAST, session_id""",
    ),
    NamedQuery(
        "session_tree",
        "Every session placed in its tree (root, parent, depth) with its own calls and cost.",
        _SESSIONS
        + """
SELECT root_session_id, session_id, parent_session_id, depth,
       array_to_string(path, ' > ') AS path, team, calls, cost_usd, first_ts, last_ts
FROM nodes
ORDER BY root_session_id, path""",
    ),
    NamedQuery(
        "unit_costs",
        "Per UTC month: cost per call, per logical request (retries folded) and per active user.",
        f"""
SELECT {_MONTH} AS month,
       count(*) AS calls,
       count(DISTINCT coalesce(request_id, event_id)) AS requests,
       count(DISTINCT user_id) AS active_users,
       sum(cost_usd) AS cost_usd,
       CAST(sum(cost_usd) / count(*) AS {_PER_UNIT}) AS cost_per_call_usd,
       CAST(sum(cost_usd) / count(DISTINCT coalesce(request_id, event_id)) AS {_PER_UNIT})
           AS cost_per_request_usd,
       CAST(sum(cost_usd) / nullif(count(DISTINCT user_id), 0) AS {_PER_UNIT})
           AS cost_per_active_user_usd
FROM facts
GROUP BY ALL
ORDER BY month""",
    ),
    NamedQuery(
        "feature_user_month",
        "Per UTC month, team and feature: active users and cost per active user.",
        f"""
SELECT {_MONTH} AS month, team, feature,
       count(DISTINCT user_id) AS active_users,
       count(*) AS calls,
       sum(cost_usd) AS cost_usd,
       CAST(sum(cost_usd) / nullif(count(DISTINCT user_id), 0) AS {_PER_UNIT})
           AS cost_per_active_user_usd
FROM facts
GROUP BY ALL
ORDER BY month, cost_usd DESC NULLS LAST, team, feature""",
    ),
    NamedQuery(
        "unit_economics",
        "AI cost against loaded revenue per month (total, plan = tags['plan'], user): gross "
        "margin, AI cost ratio and band (<20% good, 20-50% acceptable, >50% concerning).",
        f"""
WITH rev AS (
    SELECT month,
           CASE WHEN user_id IS NOT NULL THEN 'user'
                WHEN plan IS NOT NULL THEN 'plan' ELSE 'total' END AS level,
           coalesce(user_id, plan) AS key, revenue_usd
    FROM revenue
),
-- Only the months, plans and users that have revenue are costed (small build sides).
m AS (
    SELECT {_MONTH} AS month, user_id, tags['plan'] AS plan, cost_usd FROM facts
    WHERE {_MONTH} IN (SELECT month FROM rev)
),
total_rev AS (
    SELECT month, NULL::VARCHAR AS key,
           coalesce(sum(revenue_usd) FILTER (WHERE level = 'total'),
                    sum(revenue_usd) FILTER (WHERE level = 'plan'),
                    sum(revenue_usd) FILTER (WHERE level = 'user')) AS revenue_usd
    FROM rev GROUP BY month
),
keyed_rev AS (
    SELECT level, month, key, sum(revenue_usd) AS revenue_usd FROM rev
    WHERE level <> 'total' GROUP BY ALL
),
joined AS (
    SELECT 'total' AS level, r.month, r.key, r.revenue_usd,
           coalesce(sum(m.cost_usd), 0) AS ai_cost_usd
    FROM total_rev r LEFT JOIN m ON m.month = r.month
    GROUP BY ALL
    UNION ALL
    SELECT r.level, r.month, r.key, r.revenue_usd, coalesce(sum(m.cost_usd), 0)
    FROM keyed_rev r LEFT JOIN m ON m.month = r.month AND m.plan = r.key
    WHERE r.level = 'plan'
    GROUP BY ALL
    UNION ALL
    SELECT r.level, r.month, r.key, r.revenue_usd, coalesce(sum(m.cost_usd), 0)
    FROM keyed_rev r LEFT JOIN m ON m.month = r.month AND m.user_id = r.key
    WHERE r.level = 'user'
    GROUP BY ALL
)
SELECT level, month, key, revenue_usd, ai_cost_usd,
       revenue_usd - ai_cost_usd AS gross_profit_usd,
       round((revenue_usd - ai_cost_usd) / nullif(revenue_usd, 0), 4) AS gross_margin,
       round(ai_cost_usd / nullif(revenue_usd, 0), 4) AS ai_cost_ratio,
       CASE WHEN revenue_usd IS NULL OR revenue_usd = 0 THEN NULL
            WHEN ai_cost_usd / revenue_usd < 0.2 THEN 'good'
            WHEN ai_cost_usd / revenue_usd <= 0.5 THEN 'acceptable'
            ELSE 'concerning' END AS band
FROM joined
ORDER BY month, CASE level WHEN 'total' THEN 0 WHEN 'plan' THEN 1 ELSE 2 END, key""",
    ),
    NamedQuery(
        "cache_hit_rate",
        "Per feature and UTC day: share of input tokens read from the prompt cache.",
        """
SELECT team, feature, date AS day,
       count(*) AS calls,
       sum(input_tokens) AS input_tokens,
       sum(cache_read_tokens) AS cache_read_tokens,
       round(sum(cache_read_tokens) / nullif(sum(input_tokens), 0), 4) AS hit_rate
FROM facts
GROUP BY ALL
ORDER BY team, feature, day""",
    ),
    NamedQuery(
        "retry_overhead",
        "Per team and feature: cost of retries (attempt > 1) and failed calls, and its share.",
        """
SELECT team, feature,
       count(*) AS calls,
       count(*) FILTER (WHERE attempt > 1) AS retries,
       count(*) FILTER (WHERE status <> 'ok') AS failed,
       sum(cost_usd) AS cost_usd,
       coalesce(sum(cost_usd) FILTER (WHERE attempt > 1), 0) AS retry_cost_usd,
       coalesce(sum(cost_usd) FILTER (WHERE status <> 'ok'), 0) AS failed_cost_usd,
       coalesce(sum(cost_usd) FILTER (WHERE attempt > 1 OR status <> 'ok'), 0)
           AS overhead_cost_usd,
       round(coalesce(sum(cost_usd) FILTER (WHERE attempt > 1 OR status <> 'ok'), 0)
             / nullif(sum(cost_usd), 0), 4) AS overhead_share
FROM facts
GROUP BY ALL
ORDER BY overhead_cost_usd DESC, team, feature""",
    ),
    NamedQuery(
        "shared_cost_allocation",
        "Per UTC month: untagged (no team) and team 'shared' cost allocated to teams in "
        "proportion to their direct cost.",
        f"""
WITH m AS (SELECT {_MONTH} AS month, team, cost_usd FROM facts WHERE cost_usd IS NOT NULL),
direct AS (
    SELECT month, team, sum(cost_usd) AS direct_cost_usd FROM m
    WHERE team IS NOT NULL AND team <> 'shared' GROUP BY ALL
),
shared AS (
    SELECT month, sum(cost_usd) AS shared_cost_usd FROM m
    WHERE team IS NULL OR team = 'shared' GROUP BY ALL
),
weights AS (
    SELECT d.*, coalesce(s.shared_cost_usd, 0) AS month_shared_cost_usd,
           CAST(d.direct_cost_usd AS DOUBLE)
               / nullif(sum(CAST(d.direct_cost_usd AS DOUBLE)) OVER (PARTITION BY d.month), 0)
               AS weight
    FROM direct d LEFT JOIN shared s USING (month)
)
SELECT month, team, direct_cost_usd,
       round(weight, 6) AS usage_share,
       CAST(CAST(month_shared_cost_usd AS DOUBLE) * weight AS {_PER_UNIT}) AS allocated_cost_usd,
       CAST(direct_cost_usd + CAST(CAST(month_shared_cost_usd AS DOUBLE) * weight AS {_PER_UNIT})
            AS DECIMAL(38, 18)) AS total_cost_usd
FROM weights
ORDER BY month, total_cost_usd DESC, team""",
    ),
    NamedQuery(
        "focus_export",
        "Daily charges shaped as FinOps FOCUS 1.x columns (x_ columns are spendstream's).",
        """
SELECT sum(cost_usd) AS BilledCost,
       sum(cost_usd) AS EffectiveCost,
       sum(cost_usd) AS ListCost,
       sum(cost_usd) AS ContractedCost,
       'USD' AS BillingCurrency,
       CAST(date_trunc('month', date) AS TIMESTAMP) AS BillingPeriodStart,
       CAST(date_trunc('month', date) + INTERVAL 1 MONTH AS TIMESTAMP) AS BillingPeriodEnd,
       CAST(date AS TIMESTAMP) AS ChargePeriodStart,
       CAST(date + INTERVAL 1 DAY AS TIMESTAMP) AS ChargePeriodEnd,
       'Usage' AS ChargeCategory,
       'Usage-Based' AS ChargeFrequency,
       provider || ' ' || model || ' token usage' AS ChargeDescription,
       sum(input_tokens + output_tokens) AS ConsumedQuantity,
       'Tokens' AS ConsumedUnit,
       sum(input_tokens + output_tokens) AS PricingQuantity,
       'Tokens' AS PricingUnit,
       provider AS ProviderName,
       provider AS PublisherName,
       provider AS InvoiceIssuerName,
       'AI and Machine Learning' AS ServiceCategory,
       'Generative AI' AS ServiceSubcategory,
       provider || ' API' AS ServiceName,
       provider || '/' || model AS SkuId,
       model AS ResourceId,
       model AS ResourceName,
       'Model' AS ResourceType,
       project AS SubAccountId,
       project AS SubAccountName,
       json_object('team', team, 'feature', feature, 'environment', environment,
                   'cost_center', cost_center) AS Tags,
       count(*) AS x_Calls,
       sum(input_tokens) AS x_InputTokens,
       sum(output_tokens) AS x_OutputTokens,
       sum(cache_read_tokens) AS x_CacheReadTokens,
       sum(cache_write_tokens) AS x_CacheWriteTokens,
       count(*) FILTER (WHERE NOT priced) AS x_UnpricedCalls,
       team AS x_Team, feature AS x_Feature
FROM facts
GROUP BY date, provider, model, team, feature, project, environment, cost_center
ORDER BY ChargePeriodStart, ProviderName, ResourceId, x_Team, x_Feature""",
    ),
    NamedQuery(
        "unpriced_models",
        "Models landed with priced = false (add a [[prices.model]] override for them).",
        """
SELECT provider, model, count(*) AS calls,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       min(ts) AS first_seen, max(ts) AS last_seen
FROM facts WHERE NOT priced
GROUP BY ALL
ORDER BY calls DESC, provider, model""",
    ),
    NamedQuery(
        "cost_reconciliation",
        "Our cost against reported_cost_usd per provider and model (calls that reported one).",
        """
SELECT provider, model,
       count(*) AS calls,
       sum(cost_usd) AS our_cost_usd,
       sum(reported_cost_usd) AS reported_cost_usd,
       sum(cost_usd) - sum(reported_cost_usd) AS difference_usd,
       round(100 * (sum(cost_usd) - sum(reported_cost_usd))
             / nullif(sum(reported_cost_usd), 0), 4) AS difference_pct
FROM facts WHERE reported_cost_usd IS NOT NULL
GROUP BY ALL
ORDER BY abs(difference_usd) DESC NULLS LAST, provider, model""",
    ),
)

BY_NAME = {q.name: q for q in QUERIES}


def view_sql(query: NamedQuery) -> str:
    """The statement that creates the query's view over all of usage_facts."""
    return (
        f"CREATE OR REPLACE VIEW {query.name} AS "
        f"WITH facts AS (SELECT * FROM usage_facts) SELECT * FROM ({query.sql}) AS q"
    )


def filtered_sql(
    query: NamedQuery, filters: dict[str, Any], limit: int | None
) -> tuple[str, dict[str, Any]]:
    """The query over the filtered facts, and the parameters to bind (only the filters given)."""
    params: dict[str, Any] = {}
    conditions = []
    for name, value in filters.items():
        if value is None:
            continue
        if name not in FILTERS:
            raise KeyError(name)
        conditions.append(FILTERS[name][0])
        params[name] = value
    where = " AND ".join(conditions) or "TRUE"
    sql = (
        f"WITH facts AS (SELECT * FROM usage_facts WHERE {where}) SELECT * FROM ({query.sql}) AS q"
    )
    if limit is not None:
        sql += " LIMIT $limit"
        params["limit"] = limit
    return sql, params
