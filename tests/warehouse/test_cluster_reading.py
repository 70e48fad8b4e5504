"""Reading a cluster's warehouse (PostgreSQL catalog, data on S3) the way a user does: the
``query``, ``report`` and ``whatif`` commands answer exactly what they answer for the same
facts in a local default warehouse, and another engine (pyiceberg's own scan through the
PostgreSQL catalog, no spendstream code) reads the rows on S3 (issue 13, item 3)."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from spendstream.cli import main
from spendstream.config import WarehouseConfig
from spendstream.records import Alert, BreakerEvent, Fact
from spendstream.stream.pricing import Pricer
from spendstream.warehouse import Warehouse
from tests.service_fixtures import cluster_toml
from tests.warehouse.factories import event

DAY1 = datetime(2026, 3, 2, tzinfo=UTC)
# (team, feature, provider, model): every model is in the bundled prices.
TRAFFIC = (
    ("search", "semantic-search", "openai", "gpt-5-mini"),
    ("support", "support-chat", "anthropic", "claude-sonnet-4-5"),
    ("growth", "onboarding-emails", "openai", "gpt-5"),
)


def _facts() -> list[Fact]:
    """Two days of three teams' calls, priced by the bundled prices (no price data file)."""
    events = []
    for n in range(90):
        team, feature, provider, model = TRAFFIC[n % 3]
        events.append(
            event(
                DAY1 + timedelta(minutes=37 * n),
                event_id=f"cr-{n}",
                provider=provider,
                model=model,
                input_tokens=1500 + 41 * n,
                output_tokens=120 + 13 * n,
                cache_read_tokens=300 if feature == "support-chat" else 0,
                team=team,
                feature=feature,
                user_id=f"user-{n % 7}",
                api_key_id=f"key-{team}",
                session_id=f"s-{team}-{n // 10}",
            )
        )
    costs = Pricer.from_config().price_batch(events)
    assert all(c is not None for c in costs)
    return [Fact(e, c, e.ts) for e, c in zip(events, costs, strict=True)]


def _land(workdir: Path, config: WarehouseConfig | None, facts: list[Fact]) -> None:
    alert = Alert(
        alert_id="cr-alert",
        kind="hourly_anomaly",
        scope="team:support",
        severity="warning",
        ts=DAY1 + timedelta(hours=14),
        value=Decimal("12.5"),
        threshold=Decimal("3"),
        message="hourly_anomaly on team:support",
        dedup_key="cr-alert",
    )
    breaker = BreakerEvent("api_key:key-growth", "open", "runaway_rate", DAY1 + timedelta(hours=3))
    with Warehouse(workdir, config=config) as wh:
        # Two commits: the answers must come from every file, not the last one.
        wh.commit(facts=facts[:50], alerts=[alert], positions={"f": 50})
        wh.commit(facts=facts[50:], breaker_events=[breaker], positions={"f": 90})


@pytest.fixture
def both(
    tmp_path: Path, cluster_config: WarehouseConfig
) -> tuple[list[str], list[str], list[Fact]]:
    """The same facts in a local default workdir and in the cluster; the CLI arguments that
    address each (the cluster's through a --config file, as a user's would)."""
    facts = _facts()
    local, cluster = tmp_path / "local", tmp_path / "cluster-reader"
    _land(local, None, facts)
    _land(tmp_path / "cluster-writer", cluster_config, facts)
    toml = tmp_path / "cluster.toml"
    toml.write_text(cluster_toml(cluster_config))
    return (
        ["--workdir", str(local)],
        ["--workdir", str(cluster), "--config", str(toml)],
        facts,
    )


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_query_answers_the_same_from_postgres_and_s3_as_from_a_local_warehouse(
    both: tuple[list[str], list[str], list[Fact]], capsys: pytest.CaptureFixture[str]
) -> None:
    local, cluster, facts = both
    for name, filters in (
        ("cost_by_team", []),
        ("cost_by_team", ["--since", "2026-03-03"]),
        ("cost_by_model", []),
        ("cost_by_day", []),
    ):
        args = ["query", name, "--format", "json", *filters]
        got = json.loads(_cli(capsys, *args, *cluster))
        assert got == json.loads(_cli(capsys, *args, *local)), (name, filters)
    # ... and the answer is the facts' own, exact to the last digit (not two empty tables).
    by_team = {r["team"]: Decimal(r["cost_usd"]) for r in json.loads(_cli(
        capsys, "query", "cost_by_team", "--format", "json", *cluster
    ))}  # fmt: skip
    want: dict[str, Decimal] = {}
    for f in facts:
        assert f.cost is not None and f.event.team is not None
        want[f.event.team] = want.get(f.event.team, Decimal(0)) + f.cost.cost_usd
    assert by_team == want


def test_report_is_the_same_page_from_postgres_and_s3(
    both: tuple[list[str], list[str], list[Fact]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local, cluster, _ = both
    pages = []
    for where, args in (("local", local), ("cluster", cluster)):
        out = tmp_path / f"{where}.html"
        _cli(capsys, "report", "--out", str(out), *args)
        pages.append(out.read_text(encoding="utf-8"))
    generated = re.compile(r"generated \d{4}-\d\d-\d\dT[\d:]+\+00:00")
    assert all(len(generated.findall(p)) == 1 for p in pages)
    local_page, cluster_page = (generated.sub("generated <now>", p) for p in pages)
    assert cluster_page == local_page
    # It is a report of these facts: the three teams, the alert and the two days.
    for text in ("semantic-search", "support-chat", "onboarding-emails", "2026-03-02"):
        assert text in cluster_page
    assert "hourly_anomaly" in cluster_page


def test_whatif_prices_the_cluster_traffic_as_it_prices_the_local_traffic(
    both: tuple[list[str], list[str], list[Fact]], capsys: pytest.CaptureFixture[str]
) -> None:
    local, cluster, facts = both
    levers = [
        "whatif",
        "--format",
        "json",
        "--route",
        "feature:support-chat=openai/gpt-5-mini",
        "--max-output",
        "500",
        "--batch-share",
        "50%",
    ]
    got = json.loads(_cli(capsys, *levers, *cluster))
    assert got == json.loads(_cli(capsys, *levers, *local))
    total = got["total"]
    assert total["calls"] == len(facts)
    stored = sum((f.cost.cost_usd for f in facts if f.cost is not None), Decimal(0))
    assert Decimal(total["stored_usd"]) == stored
    assert Decimal(total["savings_usd"]) > 0  # the levers moved something


def test_pyiceberg_reads_the_s3_tables_through_the_postgres_catalog(
    both: tuple[list[str], list[str], list[Fact]], cluster_config: WarehouseConfig
) -> None:
    """Another engine: pyiceberg's SqlCatalog on the same PostgreSQL database, nothing of
    spendstream between it and the Iceberg metadata and Parquet files on S3."""
    from urllib.parse import urlsplit, urlunsplit

    from pyiceberg.catalog.sql import SqlCatalog

    _, _, facts = both
    url = urlsplit(cluster_config.catalog_uri)
    password = os.environ[cluster_config.catalog_password_env]
    netloc = f"{url.username}:{password}@{url.hostname}" + (f":{url.port}" if url.port else "")
    catalog = SqlCatalog(
        cluster_config.catalog_name,
        uri=urlunsplit((url.scheme, netloc, url.path, url.query, "")),
        **{
            "s3.endpoint": cluster_config.s3.endpoint_url,
            "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "s3.region": cluster_config.s3.region,
        },
    )
    ns = cluster_config.namespace
    assert {t[-1] for t in catalog.list_tables(ns)} >= {"usage_facts", "alerts", "breaker_events"}
    usage = catalog.load_table((ns, "usage_facts"))
    assert usage.location().startswith(cluster_config.location + "/")
    rows: pa.Table = usage.scan(selected_fields=("event_id", "team", "cost_usd")).to_arrow()
    got: dict[str, tuple[Any, ...]] = {
        r["event_id"]: (r["team"], r["cost_usd"]) for r in rows.to_pylist()
    }
    assert len(got) == rows.num_rows == len(facts)
    assert got == {
        f.event.event_id: (f.event.team, f.cost.cost_usd if f.cost else None) for f in facts
    }
    assert rows.schema.field("cost_usd").type == pa.decimal128(38, 18)
    # A filtered scan (pushed down to the files' statistics) answers too.
    day2 = usage.scan(row_filter="ts >= '2026-03-03T00:00:00+00:00'").to_arrow()
    assert sorted(day2["event_id"].to_pylist()) == sorted(
        f.event.event_id for f in facts if f.event.ts >= DAY1 + timedelta(days=1)
    )
    alerts = catalog.load_table((ns, "alerts")).scan().to_arrow()
    assert alerts["alert_id"].to_pylist() == ["cr-alert"]
