"""The integrations into a running ``spendstream run`` worker on a real broker: the real
OpenTelemetry SDK exports GenAI spans to POST /v1/traces, and the real litellm library's
callbacks send through a Meter; both land as priced facts."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from tests.producers.otel_spans import (
    GENAI_BAD,
    GENAI_CHAT,
    GENAI_CLAUDE,
    GENAI_EMBEDDINGS,
    SpanMaker,
    json_export,
)
from tests.runtime.kafka_workers import (
    TOKEN,
    Worker,
    query,
    running_worker,
    wait_all_judged,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

GPT, CLAUDE, EMBED, BAD = GENAI_CHAT, GENAI_CLAUDE, GENAI_EMBEDDINGS, GENAI_BAD


def _post_json(w: Worker, body: bytes) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        w.url("/v1/traces"),
        data=gzip.compress(body),
        method="POST",
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.headers["Content-Type"].startswith("application/json")
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_sdk_exported_genai_spans_land_priced_and_a_reexport_is_a_duplicate(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap)
    wd = tmp_path / "wd"
    with running_worker(wd, config, prefix, tmp_path) as w:
        exporter = OTLPSpanExporter(
            endpoint=w.url("/v1/traces"),
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

        # Exporting the same spans again (a retrying exporter, a replayed batch) is accepted...
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        # ... and a wrong token is refused (401: the exporter does not retry it).
        wrong = OTLPSpanExporter(
            endpoint=w.url("/v1/traces"), headers={"Authorization": "Bearer nope"}, timeout=30
        )
        assert wrong.export(spans) == SpanExportResult.FAILURE

        # OTLP/JSON, gzip: the rejected span is reported as a partial success.
        status, answer = _post_json(w, json.dumps(json_export(spans)).encode())
        assert status == 200
        partial = answer["partialSuccess"]
        assert isinstance(partial, dict) and partial["rejectedSpans"] == "1"
        assert "input_excludes_cache" in str(partial["errorMessage"])
        status, answer = _post_json(w, b"{not json")
        assert status == 400 and "not JSON" in str(answer["message"])

        wait_all_judged(wd, kafka_bootstrap, prefix, 3, w)
        rows = query(
            wd,
            "SELECT provider, model, input_tokens, cache_read_tokens, cache_write_tokens, "
            "output_tokens, priced, cost_usd > 0, team, feature, session_id, tags['operation'] "
            "FROM usage_facts ORDER BY provider, model",
        )
        assert rows == [
            (
                "anthropic",
                "claude-sonnet-4-5",
                1500,
                0,
                1000,
                120,
                True,
                True,
                "support",
                "support-bot",
                None,
                "chat",
            ),
            (
                "openai",
                "gpt-4o-mini-2024-07-18",
                2000,
                1024,
                0,
                300,
                True,
                True,
                "support",
                "support-bot",
                "conv-1",
                "chat",
            ),
            (
                "openai",
                "text-embedding-3-small",
                4000,
                0,
                0,
                0,
                True,
                True,
                "support",
                "support-bot",
                None,
                "embeddings",
            ),
        ]
        ids = {s.get_span_context().span_id for s in spans}
        assert all(
            int(eid.rsplit("-", 1)[1], 16) in ids
            for (eid,) in query(wd, "SELECT event_id FROM usage_facts")
        )
        # The broken span: one dead letter, however often it was exported (3 times, as
        # protobuf and as JSON): the same input from the same source is one dead letter.
        wait_for(
            lambda: query(wd, "SELECT count(*) FROM dead_letters") == [(1,)],
            "the rejected spans were never dead-lettered",
            w,
        )
        assert query(wd, "SELECT DISTINCT source FROM dead_letters") == [("http:/v1/traces",)]
        # The re-exported spans are judged duplicates in their own batches, which may come
        # after the dead letter's: wait for the count rather than read it once.
        wait_for(
            lambda: "spendstream_duplicates_total 6.0" in w.get_text("/metrics"),
            "the re-exported spans were never counted as duplicates",
            w,
        )
        metrics = w.get_text("/metrics")
        assert 'spendstream_otel_spans_total{result="event"} 9.0' in metrics
        assert 'spendstream_otel_spans_total{result="ignored"} 3.0' in metrics
        assert 'spendstream_otel_spans_total{result="rejected"} 3.0' in metrics
        assert "spendstream_duplicates_total 6.0" in metrics


def test_litellm_calls_land_priced_with_litellms_cost_for_reconcile(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from litellm import ModelResponse, Usage

    from spendstream.producers.integrations.litellm import SpendstreamLogger
    from spendstream.producers.meter import Meter

    config, prefix = write_config(tmp_path / "c.toml", kafka_bootstrap)
    wd = tmp_path / "wd"
    w = Worker(wd, config, tmp_path).start()
    meter = Meter.http(w.url(""), TOKEN, spool_dir=tmp_path / "spool")
    logger = SpendstreamLogger(meter, team="gateway")
    litellm.callbacks = [logger]
    try:
        w.wait_ready(prefix)
        claude = ModelResponse(
            model="claude-sonnet-4-5-20250929",
            choices=[{"message": {"role": "assistant", "content": "ok"}}],
            usage=Usage(
                prompt_tokens=3000,
                completion_tokens=400,
                prompt_tokens_details={"cached_tokens": 2000},
                cache_read_input_tokens=2000,
            ),
        )
        messages = [{"role": "user", "content": "hi"}]
        litellm.completion(
            model="anthropic/claude-sonnet-4-5", messages=messages, mock_response=claude
        )
        litellm.completion(model="gpt-4o-mini", messages=messages, mock_response="hello")
        with pytest.raises(litellm.RateLimitError):
            litellm.completion(
                model="gpt-4o-mini", messages=messages, mock_response="litellm.RateLimitError"
            )
        wait_for(lambda: meter.metrics.sent >= 3, "the meter never sent 3 events", w)
        wait_all_judged(wd, kafka_bootstrap, prefix, 3, w)
        rows = query(
            wd,
            "SELECT provider, model, status, input_tokens, cache_read_tokens, priced, "
            "reported_cost_usd > 0, team FROM usage_facts ORDER BY provider, status",
        )
        assert rows == [
            ("anthropic", "claude-sonnet-4-5-20250929", "ok", 3000, 2000, True, True, "gateway"),
            ("openai", "gpt-4o-mini", "error", 0, 0, True, False, "gateway"),
            ("openai", rows[2][1], "ok", rows[2][3], 0, True, True, "gateway"),
        ]
        reconcile = subprocess.run(
            [
                sys.executable,
                "-m",
                "spendstream",
                "prices",
                "reconcile",
                "--workdir",
                str(wd),
                "--format",
                "json",
                "--provider",
                "anthropic",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert reconcile.returncode == 0, reconcile.stderr
        (row,) = json.loads(reconcile.stdout)
        assert (row["model"], row["calls"]) == ("claude-sonnet-4-5-20250929", 1)
        # LiteLLM's figure and ours, side by side: Sonnet 4.5 at $3 in, $0.30 cached, $15 out.
        assert Decimal(str(row["reported_cost_usd"])) == Decimal("0.0096")
        assert Decimal(str(row["our_cost_usd"])) == Decimal("0.0096")
    finally:
        litellm.logging_callback_manager.remove_callback_from_all_lists(logger)
        meter.close(timeout_s=5)
        assert w.stop() == 0, w.log_tail()
