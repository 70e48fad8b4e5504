"""POST /v1/traces on a worker's HTTP server: the real OpenTelemetry SDK's OTLP/HTTP exporter
posts GenAI spans; they reach the usage topic as keyed usage events, a rejected span is a
dead letter, and the answers are what OTLP exporters expect."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from spendstream.local.kafka import find_free_ports
from spendstream.producers.event import UsageEvent
from spendstream.topics import DEAD_LETTERS, USAGE, partition_key
from spendstream.warehouse.reading import run_sql
from tests.kafka_fixtures import read_topic
from tests.producers.otel_spans import (
    GENAI_BAD,
    GENAI_CHAT,
    GENAI_CLAUDE,
    GENAI_EMBEDDINGS,
    SpanMaker,
    json_export,
    protobuf_export,
)
from tests.runtime.http_served import TOKEN, Served, make_config, served

pytestmark = pytest.mark.kafka

GPT, EMBED, BAD = GENAI_CHAT, GENAI_EMBEDDINGS, GENAI_BAD
CLAUDE = {**GENAI_CLAUDE, "spendstream.api_key_id": "key-claude"}


def _post(s: Served, body: bytes, ctype: str, *, gzipped: bool = True) -> tuple[int, str, bytes]:
    headers = {"Content-Type": ctype}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    status, answer_headers, answer = s.request("/v1/traces", body, headers=headers)
    return status, answer_headers["Content-Type"], answer


def _usage_events(s: Served) -> list[tuple[bytes, UsageEvent]]:
    return [
        (m.key(), UsageEvent.model_validate_json(m.value()))
        for m in read_topic(s.config.kafka.bootstrap_servers, s.topic(USAGE))
    ]


def test_sdk_exported_genai_spans_reach_the_usage_topic_and_bad_spans_are_dead_letters(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = make_config(kafka_bootstrap, tmp_path)
    with served(config, tmp_path / "wd") as s:
        exporter = OTLPSpanExporter(
            endpoint=s.url + "/v1/traces",
            headers={"Authorization": f"Bearer {TOKEN}"},
            compression=Compression.Gzip,
            timeout=30,
        )
        maker = SpanMaker({"service.name": "support-bot", "service.namespace": "support"})
        # The SDK's own processor exports each span as it ends, over OTLP/HTTP protobuf.
        maker.provider.add_span_processor(SimpleSpanProcessor(exporter))
        with maker.span("POST /answer", {"http.request.method": "POST"}):
            maker.add("chat gpt-4o-mini", GPT)
            maker.add("chat claude-sonnet-4-5", CLAUDE)
            maker.add("embeddings", EMBED)
            maker.add("chat broken", BAD)
        spans = maker.finished()
        assert len(spans) == 5
        assert maker.provider.force_flush()
        # A wrong token is refused (401: the exporter does not retry it) and publishes nothing.
        wrong = OTLPSpanExporter(
            endpoint=s.url + "/v1/traces", headers={"Authorization": "Bearer nope"}, timeout=30
        )
        assert wrong.export(spans) == SpanExportResult.FAILURE

        keyed = _usage_events(s)
        events = sorted((e for _, e in keyed), key=lambda e: e.model)
        assert [(e.provider, e.model) for e in events] == [
            ("anthropic", "claude-sonnet-4-5"),
            ("openai", "gpt-4o-mini-2024-07-18"),
            ("openai", "text-embedding-3-small"),
        ]
        assert [
            (e.input_tokens, e.cache_read_tokens, e.cache_write_tokens, e.output_tokens)
            for e in events
        ] == [(1500, 0, 1000, 120), (2000, 1024, 0, 300), (4000, 0, 0, 0)]
        assert {(e.team, e.feature) for e in events} == {("support", "support-bot")}
        assert [e.session_id for e in events] == [None, "conv-1", None]
        assert all(
            k == partition_key(e.api_key_id, e.session_id, e.request_id, e.event_id)
            for k, e in keyed
        )
        assert any(k == b"key-claude" for k, _ in keyed)
        ids = {sp.get_span_context().span_id for sp in spans}
        assert all(int(e.event_id.rsplit("-", 1)[1], 16) in ids for e in events)

        # OTLP/JSON, gzip: the rejected span is reported as a partial success.
        status, ctype, answer = _post(
            s, json.dumps(json_export(spans)).encode(), "application/json"
        )
        assert status == 200 and ctype.startswith("application/json")
        partial = json.loads(answer)["partialSuccess"]
        assert partial["rejectedSpans"] == "1"
        assert "input_excludes_cache" in partial["errorMessage"]
        # Unreadable bodies: a google.rpc.Status in the request's encoding, nothing published.
        status, ctype, answer = _post(s, b"{not json", "application/json")
        assert status == 400 and "not JSON" in json.loads(answer)["message"]
        status, ctype, answer = _post(s, b"\xff\xff", "application/x-protobuf", gzipped=False)
        assert status == 400 and ctype == "application/x-protobuf"
        assert Status.FromString(answer).message
        status, _, _ = _post(s, protobuf_export(spans), "text/csv", gzipped=False)
        assert status == 415

        assert len(_usage_events(s)) == 6  # the SDK's export and the JSON one: 3 events each
        dead = [
            json.loads(m.value())
            for m in read_topic(s.config.kafka.bootstrap_servers, s.topic(DEAD_LETTERS))
        ]
        assert [d["source"] for d in dead] == ["http:/v1/traces"] * 2
        assert all("input_excludes_cache" in d["error"] for d in dead)
        # The same input from the same source is one dead letter in the warehouse.
        landed = run_sql(s.workdir, "SELECT source, count(*) FROM dead_letters GROUP BY 1")[1]
        assert landed == [("http:/v1/traces", 1)]
        metrics = s.metrics()
        assert 'spendstream_otel_spans_total{result="event"} 6.0' in metrics
        assert 'spendstream_otel_spans_total{result="ignored"} 2.0' in metrics
        assert 'spendstream_otel_spans_total{result="rejected"} 2.0' in metrics
        assert 'spendstream_dead_letters_total{stage="http"} 2.0' in metrics


def test_traces_that_cannot_be_published_answer_503_which_exporters_retry(
    tmp_path: Path,
) -> None:
    [port] = find_free_ports(1)
    config = make_config(f"127.0.0.1:{port}", tmp_path)
    maker = SpanMaker()
    maker.add("chat", GPT)
    proto = protobuf_export(maker.finished())
    with served(
        config, tmp_path / "wd", send_timeout_s=2.0, ready_timeout_s=2.0, create=False
    ) as s:
        status, ctype, answer = _post(s, proto, "application/x-protobuf")
        assert status == 503 and ctype == "application/x-protobuf"
        assert Status.FromString(answer).message.startswith("not accepted, send again: ")
        status, ctype, answer = _post(s, json.dumps(json_export(maker.finished())).encode(),
                                      "application/json")  # fmt: skip
        assert status == 503 and "send again" in json.loads(answer)["message"]
        assert "spendstream_otel_spans_total{" not in s.metrics()
