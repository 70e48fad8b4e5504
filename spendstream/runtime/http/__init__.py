"""The HTTP server of a ``spendstream run`` worker (aiohttp), and what it needs from the worker.

    server         HttpServer (asyncio), ServerThread (its own loop in a thread), build_app
    events         check_body: a POST /v1/events body judged line by line (pure)
    traces         receive_traces: an OTLP/HTTP export judged span by span (pure)
    backend        WorkerBackend: the protocol the server talks to the worker through
    kafka_backend  KafkaBackend: that protocol on the Kafka adapter (spendstream.kafka)
    metrics        WorkerMetrics: the worker's Prometheus registry, labels from data capped

Endpoints and their answers: docs/kafka.md ("HTTP endpoints").
"""

from __future__ import annotations

from spendstream.runtime.http.backend import UsageRecord, WorkerBackend
from spendstream.runtime.http.kafka_backend import KafkaBackend, LandDeadLetters
from spendstream.runtime.http.metrics import OTHER, LabelBudget, LagSource, WorkerMetrics
from spendstream.runtime.http.server import MAX_BODY_BYTES, HttpServer, ServerThread, build_app

__all__ = [
    "MAX_BODY_BYTES",
    "OTHER",
    "HttpServer",
    "KafkaBackend",
    "LabelBudget",
    "LagSource",
    "LandDeadLetters",
    "ServerThread",
    "UsageRecord",
    "WorkerBackend",
    "WorkerMetrics",
    "build_app",
]
