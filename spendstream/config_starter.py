"""The commented starter ``spendstream.toml`` that ``spendstream init`` writes.

Two shapes: ``local`` (one machine, a ``spendstream kafka-local`` broker, found by itself)
and ``cluster`` (your Kafka brokers, the HTTP endpoint open to other hosts, tokens from
files). Both load as they are; every commented ``# key = value`` line shows a real key, and
uncommenting all of them still gives a valid configuration (a test checks both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from spendstream.errors import ConfigError

__all__ = ["CLUSTER", "LOCAL", "starter_text", "write_starter"]

_HEAD = """\
# spendstream.toml, written by `spendstream init`{flag}.
# Every key has a default: a commented line shows one you may change. Each key, its type,
# default and meaning: docs/configuration.md. A wrong key stops every command with a message
# naming it (and the key it probably meant).
"""

_ALERTS = """
# -- pages ---------------------------------------------------------------------------
# With no sink, `spendstream alerts` prints each alert on stderr, and `spendstream ingest`
# lands them only (spendstream sql "SELECT kind, scope, message FROM alerts"); with one,
# ingest pages it itself. Slack: create an incoming webhook and export its URL (a secret:
# it never goes in this file). Other sinks (PagerDuty, a signed webhook): docs/alerts.md.
#   export SLACK_WEBHOOK_URL=https://hooks.slack.com/services/...
# [[alerts.sink]]
# name = "slack"
# type = "slack"
# webhook_url_env = "SLACK_WEBHOOK_URL"
# max_per_scope = 10             # notifications per scope and hour, then suppressed
#
# [[alerts.route]]
# name = "runaways-to-slack"
# sinks = ["slack"]
# kinds = ["runaway_rate", "runaway_session", "budget_exceeded", "hourly_anomaly"]
# min_severity = "warning"
"""

_DETECTION = """
# -- what counts as a problem --------------------------------------------------------
[runaway]
# max_calls_per_minute = 120     # per api key and per session: runaway_rate, breaker opens
# max_session_turns = 100        # runaway_session, breaker opens
# max_session_cost_usd = 50.0
# max_session_minutes = 30

[anomaly]
# factor = 3.0                   # an hour's spend > factor x its previous-24h hourly mean
# min_baseline_usd = 1.0
# scopes = ["global", "team", "feature", "api_key"]

# A budget (repeat the block for more; scope: global, team:<t>, feature:<f>, api_key:<k>...):
# [[budget]]
# scope = "team:search"
# period = "month"               # month | day | hour, UTC
# amount_usd = 500.0
# alert_at = [0.5, 0.8, 1.0]     # budget_threshold alerts
# hard_limit = 1.5               # budget_exceeded, and the team's breaker opens

# -- prices ---------------------------------------------------------------------------
# genai-prices' catalog prices the known models; add your own (self-hosted, fine-tuned):
# [[prices.model]]
# provider = "self-hosted"
# model = "llama-3.1-8b-support-ft"
# input_per_mtok = 0.10          # USD per million tokens
# output_per_mtok = 0.40
#
# [[prices.discount]]
# provider = "openai"
# percent = 15                   # negotiated, off list price
"""

LOCAL = (
    _HEAD.format(flag="")
    + """
# -- where things run (one machine) ----------------------------------------------------
[kafka]
# Left unset, `spendstream run`, `alerts`, `breakers` and `leases serve` use the broker
# that `spendstream kafka-local start` runs on this machine. Set it for any other broker.
# bootstrap_servers = "localhost:9092"

[http]
# `spendstream run` serves POST /v1/events here; it needs a bearer token, read from the
# environment variable named below (a token never goes in this file):
#   export SPENDSTREAM_INGEST_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(24))")
# token_env = "SPENDSTREAM_INGEST_TOKEN"
# host = "127.0.0.1"
# port = 8787
"""
    + _DETECTION
    + _ALERTS
)

CLUSTER = (
    _HEAD.format(flag=" --cluster")
    + """
# -- where things run (a Kafka cluster; workers on several hosts or in containers) -----
[kafka]
bootstrap_servers = "kafka-1:9092,kafka-2:9092,kafka-3:9092"   # your brokers
usage_partitions = 12            # the most usage workers that can share the load
# topic_prefix = "prod."         # e.g. one cluster for several environments
# app_id = "spendstream"         # consumer group of the stream workers

[http]
host = "0.0.0.0"                 # reachable from other hosts: put it behind your proxy
# port = 8787
token_file = "/run/secrets/spendstream-ingest-token"   # POST /v1/events bearer token

[pipeline]
# batch_within_s = 0.2           # runaway -> refusal latency follows it

# -- the warehouse every worker lands in (a PostgreSQL catalog, tables on S3) ----------
# Workers on several hosts share one warehouse; without this section each host keeps its
# own under its --workdir. Secrets come from the environment, never from this file:
#   export SPENDSTREAM_CATALOG_PASSWORD=... AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
[warehouse]
catalog_uri = "postgresql+psycopg2://spendstream@db:5432/spendstream"   # your database
location = "s3://your-bucket/spendstream"                                 # your bucket

[warehouse.s3]
# endpoint_url = "http://minio:9000"   # unset: AWS S3
# region = "us-east-1"
# checksums = "when_required"          # for S3 servers without the newer AWS checksums

# -- breaker records are signed: clients ignore forged ones -----------------------------
#   openssl rand -hex 32 > /run/secrets/spendstream-breaker-key   (the same file on every host)
[breaker]
hmac_key_file = "/run/secrets/spendstream-breaker-key"
"""
    + _DETECTION
    + _ALERTS.replace("# With no sink", "# Workers run headless: configure a sink.\n# With no sink")
)


def starter_text(kind: Literal["local", "cluster"] = "local") -> str:
    """The starter file's text."""
    return CLUSTER if kind == "cluster" else LOCAL


def write_starter(
    path: Path, kind: Literal["local", "cluster"] = "local", *, force: bool = False
) -> Path:
    """Write the starter to ``path``; an existing file is kept unless ``force``."""
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; keep it, or overwrite it with --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(starter_text(kind), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        # A failed rename (the name is a directory, say) left the hidden .tmp file behind.
        tmp.unlink(missing_ok=True)
        raise
    return path
