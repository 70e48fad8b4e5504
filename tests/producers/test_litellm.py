"""The LiteLLM callback with the real litellm library: ``mock_response`` runs LiteLLM's own
call path and callbacks (sync, async, streaming, failures) without a network."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

# LiteLLM would fetch its model price map from the internet at import: use the bundled one.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from litellm import ModelResponse, Usage

from spendstream.errors import SpendstreamError
from spendstream.producers.integrations.litellm import (
    SpendstreamLogger,
    event_fields,
)
from spendstream.producers.meter import Meter
from tests.producers.collecting import CollectingTransport, collecting_meter, flushed

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def metered() -> Iterator[tuple[Meter, CollectingTransport]]:
    meter, transport = collecting_meter()
    logger = SpendstreamLogger(meter, environment="test")
    litellm.callbacks = [logger]  # what an SDK user writes
    try:
        yield meter, transport
    finally:
        # LiteLLM copies callbacks into its internal lists: take this one out of all of them.
        litellm.logging_callback_manager.remove_callback_from_all_lists(logger)
        meter.close(timeout_s=5)


def _events(metered: tuple[Meter, CollectingTransport], n: int) -> list[dict[str, Any]]:
    # LiteLLM runs success callbacks of sync calls in a thread of its own: wait for them.
    meter, transport = metered
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = flushed(meter, transport)
        if len(events) >= n:
            time.sleep(0.2)  # and make sure no extra event follows
            events = flushed(meter, transport)
            assert len(events) == n, events
            return events
        time.sleep(0.05)
    pytest.fail(f"expected {n} events, got {transport.events()}")


def test_sync_completion_is_recorded_with_litellms_cost(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    response = litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="hi there",
        metadata={"team": "search", "feature": "faq", "turn": 3},
        user="u-7",
    )
    (event,) = _events(metered, 1)
    usage = response.usage
    assert (event["provider"], event["model"]) == ("openai", response.model)
    assert (event["input_tokens"], event["output_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert (event["cache_read_tokens"], event["cache_write_tokens"]) == (0, 0)
    assert event["status"] == "ok"
    assert Decimal(event["reported_cost_usd"]) == Decimal(
        f"{response._hidden_params['response_cost']:.15g}"
    )
    assert Decimal(event["reported_cost_usd"]) > 0
    assert (event["team"], event["feature"], event["turn"], event["user_id"]) == (
        "search",
        "faq",
        3,
        "u-7",
    )
    assert event["environment"] == "test"  # the logger's defaults
    assert event["event_id"].startswith("litellm-") and event["request_id"]
    assert event["latency_ms"] >= 0
    assert event["tags"]["call_type"] == "completion"


def test_calls_of_one_session_are_separate_requests_and_a_given_trace_id_is_kept(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    # LiteLLM's logging payload puts metadata's session_id in its trace_id by default: taken
    # as the request id, a session's sixth call raised retry_storm.
    for turn in range(3):
        litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="ok",
            metadata={"session_id": "agent-run-42", "turn": turn + 1},
        )
    litellm.completion(
        model="gpt-4o-mini", messages=MESSAGES, mock_response="ok", litellm_trace_id="req-7"
    )
    events = _events(metered, 4)
    sessions = [e for e in events if e.get("session_id") == "agent-run-42"]
    assert len(sessions) == 3
    assert len({e["request_id"] for e in sessions}) == 3
    assert all(e["request_id"] != "agent-run-42" for e in sessions)
    assert [e["request_id"] for e in events if e not in sessions] == ["req-7"]


def test_an_anthropic_model_is_provider_anthropic_with_cached_tokens_inside_input(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    mock = ModelResponse(
        model="claude-sonnet-4-5-20250929",
        choices=[{"message": {"role": "assistant", "content": "ok"}}],
        usage=Usage(
            prompt_tokens=1320,  # LiteLLM's OpenAI shape: 20 uncached + 1000 read + 300 written
            completion_tokens=180,
            prompt_tokens_details={"cached_tokens": 1000},
            cache_read_input_tokens=1000,
            cache_creation_input_tokens=300,
            completion_tokens_details={"reasoning_tokens": 120},
        ),
    )
    litellm.completion(model="anthropic/claude-sonnet-4-5", messages=MESSAGES, mock_response=mock)
    (event,) = _events(metered, 1)
    assert (event["provider"], event["model"]) == ("anthropic", "claude-sonnet-4-5-20250929")
    assert (event["input_tokens"], event["cache_read_tokens"], event["cache_write_tokens"]) == (
        1320,
        1000,
        300,
    )
    assert event["output_tokens"] == 180
    assert event["tags"]["reasoning_tokens"] == "120"
    assert Decimal(event["reported_cost_usd"]) > 0


def test_audio_image_tokens_and_web_searches_become_billable_fields(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    mock = ModelResponse(
        model="gpt-4o-audio-preview",
        choices=[{"message": {"role": "assistant", "content": "ok"}}],
        usage=Usage(
            prompt_tokens=1000,
            completion_tokens=400,
            prompt_tokens_details={"audio_tokens": 600, "image_tokens": 100},
            completion_tokens_details={"audio_tokens": 250, "reasoning_tokens": 40},
            server_tool_use={"web_search_requests": 3},
        ),
    )
    litellm.completion(model="openai/gpt-4o-audio-preview", messages=MESSAGES, mock_response=mock)
    (event,) = _events(metered, 1)
    assert (event["input_audio_tokens"], event["input_image_tokens"]) == (600, 100)
    assert (event["output_audio_tokens"], event["output_image_tokens"]) == (250, 0)
    assert event["tool_requests"] == {"web_search": 3}
    # What the event has no field for stays a tag; what became a field does not repeat as one.
    assert event["tags"]["reasoning_tokens"] == "40"
    assert not any(k.startswith(("audio_", "image_", "server_tool_web")) for k in event["tags"])


def test_modal_parts_that_exceed_their_whole_are_dropped_not_the_event(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    mock = ModelResponse(
        model="gpt-4o-mini",
        choices=[{"message": {"role": "assistant", "content": "ok"}}],
        usage=Usage(
            prompt_tokens=100,
            completion_tokens=10,
            prompt_tokens_details={"audio_tokens": 500},  # more than the whole input
            completion_tokens_details={"audio_tokens": 11},
        ),
    )
    litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response=mock)
    (event,) = _events(metered, 1)
    assert (event["input_tokens"], event["output_tokens"]) == (100, 10)
    assert (event["input_audio_tokens"], event["output_audio_tokens"]) == (0, 0)


def test_async_completion_is_recorded(metered: tuple[Meter, CollectingTransport]) -> None:
    async def call() -> Any:
        response = await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="async hi"
        )
        await asyncio.sleep(0.5)  # LiteLLM logs async successes in a task of their own
        return response

    response = asyncio.run(call())
    (event,) = _events(metered, 1)
    assert event["input_tokens"] == response.usage.prompt_tokens
    assert event["tags"]["call_type"] == "acompletion"


def test_a_sync_stream_is_recorded_once_when_it_ends(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    stream = litellm.completion(
        model="anthropic/claude-sonnet-4-5",
        messages=MESSAGES,
        mock_response="a streamed answer in several chunks",
        stream=True,
    )
    chunks = list(stream)
    assert len(chunks) > 1
    (event,) = _events(metered, 1)
    assert event["provider"] == "anthropic"
    assert event["input_tokens"] > 0 and event["output_tokens"] > 0


def test_an_async_stream_is_recorded_once_when_it_ends(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    async def call() -> int:
        stream = await litellm.acompletion(
            model="gpt-4o-mini", messages=MESSAGES, mock_response="streamed async", stream=True
        )
        n = 0
        async for _ in stream:
            n += 1
        await asyncio.sleep(0.5)
        return n

    assert asyncio.run(call()) > 1
    (event,) = _events(metered, 1)
    assert event["output_tokens"] > 0 and event["status"] == "ok"


@pytest.mark.parametrize(
    ("kwargs", "raised", "status"),
    [
        ({"mock_response": Exception("boom")}, "InternalServerError", "error"),
        ({"mock_response": "litellm.RateLimitError"}, "RateLimitError", "error"),
        ({"mock_timeout": True, "timeout": 0.01}, "Timeout", "timeout"),
    ],
)
def test_failures_are_recorded_as_error_or_timeout(
    metered: tuple[Meter, CollectingTransport], kwargs: dict[str, Any], raised: str, status: str
) -> None:
    with pytest.raises(Exception) as err:
        litellm.completion(model="anthropic/claude-sonnet-4-5", messages=MESSAGES, **kwargs)
    assert type(err.value).__name__ == raised
    (event,) = _events(metered, 1)
    assert (event["status"], event["provider"]) == (status, "anthropic")
    assert (event["input_tokens"], event["output_tokens"]) == (0, 0)


def test_an_async_failure_is_recorded(metered: tuple[Meter, CollectingTransport]) -> None:
    async def call() -> None:
        try:
            await litellm.acompletion(
                model="gpt-4o", messages=MESSAGES, mock_response=Exception("down")
            )
        finally:
            await asyncio.sleep(0.5)

    with pytest.raises(Exception, match="down"):
        asyncio.run(call())
    (event,) = _events(metered, 1)
    assert event["status"] == "error" and event["model"] == "gpt-4o"


def test_embeddings_are_recorded(metered: tuple[Meter, CollectingTransport]) -> None:
    response = litellm.embedding(
        model="text-embedding-3-small", input=["a", "b"], mock_response=[0.1, 0.2]
    )
    (event,) = _events(metered, 1)
    assert (event["model"], event["input_tokens"], event["output_tokens"]) == (
        "text-embedding-3-small",
        response.usage.prompt_tokens,
        0,
    )
    assert event["tags"]["call_type"] == "embedding"


def test_proxy_identities_attribute_the_call(metered: tuple[Meter, CollectingTransport]) -> None:
    litellm.completion(
        model="gpt-4o-mini",
        messages=MESSAGES,
        mock_response="hi",
        metadata={
            "user_api_key_alias": "key-search-prod",
            "user_api_key_team_alias": "search",
            "user_api_key_project_alias": "apollo",
            "user_api_key_end_user_id": "end-user-1",
            "tags": ["beta"],
        },
    )
    (event,) = _events(metered, 1)
    assert (event["api_key_id"], event["team"], event["project"], event["user_id"]) == (
        "key-search-prod",
        "search",
        "apollo",
        "end-user-1",
    )


def test_litellm_cache_hits_made_no_provider_call_and_are_not_recorded() -> None:
    payload = {"standard_logging_object": {"cache_hit": True, "id": "x", "model": "gpt-4o"}}
    assert event_fields(payload, None, failed=False) is None
    assert event_fields(payload, None, failed=True) is not None


def test_the_proxy_loads_the_handler_by_its_dotted_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from litellm.proxy.types_utils.utils import get_instance_fn

    from spendstream.producers.integrations import litellm as module

    loaded = get_instance_fn("spendstream.producers.integrations.litellm.handler")
    assert loaded is module.handler and isinstance(loaded, SpendstreamLogger)
    # Its Meter comes from the environment (nothing is sent here: it is closed unused).
    monkeypatch.setenv("SPENDSTREAM_METER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SPENDSTREAM_INGEST_TOKEN", "t")
    monkeypatch.setenv("SPENDSTREAM_METER_TAGS", "team=gateway, environment=prod")
    logger = SpendstreamLogger()
    meter = logger.meter
    try:
        assert meter.transport.name == "http"
        assert dict(meter.defaults) == {"team": "gateway", "environment": "prod"}
        assert logger.meter is meter
    finally:
        meter.close(timeout_s=0)


def test_a_handler_without_its_environment_says_so_once_not_with_a_traceback_per_call(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SPENDSTREAM_METER_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("SPENDSTREAM_INGEST_TOKEN", raising=False)
    logger = SpendstreamLogger()
    litellm.callbacks = [logger]
    try:
        for _ in range(3):  # the LLM calls go on, unmetered
            litellm.completion(model="gpt-4o-mini", messages=MESSAGES, mock_response="ok")
        deadline = time.monotonic() + 30
        while "not metered" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        litellm.logging_callback_manager.remove_callback_from_all_lists(logger)
    lines = [r for r in caplog.records if "not metered" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "SPENDSTREAM_INGEST_TOKEN" in lines[0].getMessage() and lines[0].exc_info is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SPENDSTREAM_METER_URL"),
        ({"SPENDSTREAM_METER_URL": "ftp://x"}, "kafka://host:9092"),
        ({"SPENDSTREAM_METER_URL": "http://h:1"}, "SPENDSTREAM_INGEST_TOKEN"),
        (
            {"SPENDSTREAM_METER_URL": "kafka://h:1", "SPENDSTREAM_METER_TAGS": "colour=red"},
            "not field=value",
        ),
    ],
)
def test_meter_from_env_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for var in ("SPENDSTREAM_METER_URL", "SPENDSTREAM_METER_TAGS", "SPENDSTREAM_INGEST_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SpendstreamError, match=message):
        Meter.from_env()


def test_meter_from_env_kafka_url_lists_brokers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDSTREAM_METER_URL", "kafka://a:9092,b:9092")
    monkeypatch.delenv("SPENDSTREAM_METER_TAGS", raising=False)
    meter = Meter.from_env(spool_dir=None)
    try:
        assert meter.transport.name == "kafka"
        assert meter.transport.settings.bootstrap_servers == "a:9092,b:9092"  # type: ignore[attr-defined]
    finally:
        meter.close(timeout_s=0)


@pytest.mark.parametrize(
    ("extra", "reported"),
    [
        ({"response_cost": 0.009600000000000001}, "0.0096"),
        ({"response_cost": 0}, "0"),
        ({"response_cost": float("nan")}, None),
        ({"response_cost": float("inf")}, None),
        ({"response_cost": None}, None),
        ({"response_cost": 0.5, "response_cost_failure_debug_info": {"error": "?"}}, None),
    ],
)
def test_reported_cost_is_litellms_figure_to_a_floats_precision(
    extra: dict[str, Any], reported: str | None
) -> None:
    slo = {"id": "r1", "litellm_call_id": "c1", "model": "gpt-4o", "endTime": 1.7e9, **extra}
    fields = event_fields({"standard_logging_object": slo}, None, failed=False)
    assert fields is not None
    assert fields.get("reported_cost_usd") == (None if reported is None else Decimal(reported))
    assert fields["event_id"] == "litellm-c1-r1"


def test_openai_cached_tokens_are_cache_reads_and_audio_past_the_uncached_input_is_dropped(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    # An OpenAI model's usage has cached_tokens only (no Anthropic-style top-level counts).
    usage = {"prompt_tokens": 1000, "completion_tokens": 50}
    cached = ModelResponse(
        model="gpt-4o-2024-08-06",
        choices=[{"message": {"role": "assistant", "content": "ok"}}],
        usage=Usage(**usage, prompt_tokens_details={"cached_tokens": 800}),
    )
    # 600 audio tokens fit in the input (1000) but not in its uncached part (200): the
    # event's rule (cache writes/reads are text) would make the whole event invalid.
    audio = ModelResponse(
        model="gpt-4o-audio-preview",
        choices=[{"message": {"role": "assistant", "content": "ok"}}],
        usage=Usage(**usage, prompt_tokens_details={"cached_tokens": 800, "audio_tokens": 600}),
    )
    litellm.completion(model="openai/gpt-4o", messages=MESSAGES, mock_response=cached)
    litellm.completion(model="openai/gpt-4o-audio-preview", messages=MESSAGES, mock_response=audio)
    events = sorted(_events(metered, 2), key=lambda e: e["model"])
    for event in events:
        assert (event["input_tokens"], event["cache_read_tokens"]) == (1000, 800)
        assert event.get("input_audio_tokens", 0) == 0


def test_a_failure_litellm_reports_as_http_408_is_a_timeout() -> None:
    slo = {
        "id": "r1",
        "litellm_call_id": "c1",
        "model": "gpt-4o",
        "endTime": 1.7e9,
        "error_information": {"error_code": "408", "error_class": "APIError"},
    }
    fields = event_fields({"standard_logging_object": slo}, None, failed=True)
    assert fields is not None and fields["status"] == "timeout"
    slo["error_information"] = {"error_code": "500", "error_class": "APIError"}
    fields = event_fields({"standard_logging_object": slo}, None, failed=True)
    assert fields is not None and fields["status"] == "error"


def test_token_counts_of_the_logging_payload_are_used_without_a_usage_object() -> None:
    slo = {"id": "r1", "litellm_call_id": "c1", "model": "gpt-4o", "endTime": 1.7e9}
    fields = event_fields(
        {"standard_logging_object": {**slo, "prompt_tokens": 12, "completion_tokens": 3}},
        None,
        failed=False,
    )
    assert fields is not None
    assert (fields["input_tokens"], fields["output_tokens"]) == (12, 3)


# -- pinned by a mutation pass --------------------------------------------------------------


def test_a_failure_is_one_event_per_call_whatever_response_id_it_carries() -> None:
    # A success names its response (a call's stream and its retries are told apart); a
    # failure has no response: its event id is the call's alone.
    slo = {"id": "r1", "litellm_call_id": "c1", "model": "gpt-4o", "endTime": 1.7e9}
    failed = event_fields({"standard_logging_object": slo}, None, failed=True)
    assert failed is not None and failed["event_id"] == "litellm-c1"


def test_the_event_is_at_the_calls_end_with_its_duration_and_the_contracts_provider() -> None:
    from datetime import UTC, datetime

    slo = {
        "id": "r1",
        "litellm_call_id": "c1",
        "model": "gemini-2.5-flash",
        "custom_llm_provider": "vertex_ai",
        "startTime": 1_700_000_000.0,
        "endTime": 1_700_000_002.5,
    }
    fields = event_fields({"standard_logging_object": slo}, None, failed=False)
    assert fields is not None
    assert fields["ts"] == datetime.fromtimestamp(1_700_000_002.5, UTC)
    assert fields["latency_ms"] == 2500.0
    assert fields["provider"] == "google"


def test_without_a_call_id_in_the_payload_the_callbacks_own_is_used() -> None:
    slo = {"id": "r1", "model": "gpt-4o", "endTime": 1.7e9}
    kwargs = {"litellm_call_id": "c9", "standard_logging_object": slo}
    fields = event_fields(kwargs, None, failed=False)
    assert fields is not None and fields["event_id"] == "litellm-c9-r1"


_SLO = {"id": "r1", "litellm_call_id": "c1", "model": "gpt-4o", "endTime": 1.7e9}


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # Anthropic through LiteLLM: the top-level counts alone
        (
            {"prompt_tokens": 100, "completion_tokens": 5, "cache_read_input_tokens": 40},
            {"cache_read_tokens": 40, "cache_write_tokens": 0},
        ),
        # the first non-zero of cached_tokens, cache_read_input_tokens
        (
            {
                "prompt_tokens": 100,
                "prompt_tokens_details": {"cached_tokens": 30},
                "cache_read_input_tokens": 40,
            },
            {"cache_read_tokens": 30},
        ),
        (
            {
                "prompt_tokens": 100,
                "prompt_tokens_details": {"cached_tokens": 0},
                "cache_read_input_tokens": 40,
            },
            {"cache_read_tokens": 40},
        ),
        (
            {"prompt_tokens": 100, "prompt_tokens_details": {"cache_creation_tokens": 20}},
            {"cache_write_tokens": 20},
        ),
        (
            {"prompt_tokens": 100, "prompt_tokens_details": {"cache_write_tokens": 25}},
            {"cache_write_tokens": 25},
        ),
        (
            {"prompt_tokens": 100, "cache_creation_input_tokens": 30},
            {"cache_write_tokens": 30},
        ),
        # output image tokens, and modal parts equal to their whole are kept
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 1290,
                "completion_tokens_details": {"image_tokens": 1290},
            },
            {"output_image_tokens": 1290},
        ),
        # zero web searches are no tool request
        (
            {"prompt_tokens": 10, "server_tool_use": {"web_search_requests": 0}},
            {"tool_requests": None},
        ),
    ],
)
def test_the_usage_object_of_the_logging_payload_fills_the_token_fields(
    usage: dict[str, Any], expected: dict[str, Any]
) -> None:
    slo = {**_SLO, "metadata": {"usage_object": usage}}
    fields = event_fields({"standard_logging_object": slo}, None, failed=False)
    assert fields is not None
    assert {k: fields.get(k) for k in expected} == expected


def test_client_metadata_wins_over_proxy_identities_and_the_sdk_metadata_over_the_proxys() -> None:
    slo = {
        **_SLO,
        "session_id": "sess-litellm",
        "end_user": "end-user-1",
        "metadata": {
            "user_api_key_team_alias": "search",
            "user_api_key_team_id": "team-123",
            "user_api_key_alias": "key-prod",
            "user_api_key_hash": "88dc28",
            "user_api_key_project_alias": "apollo",
            "user_api_key_project_id": "proj-9",
            "requester_metadata": {"feature": "from-client", "cost_center": "cc-1"},
        },
        "model_group": "gpt-4o-group",
        "request_tags": ["beta", "eu"],
    }
    kwargs = {
        "standard_logging_object": slo,
        "user": "u-kwargs",
        "litellm_params": {"metadata": {"feature": "from-sdk"}},
    }
    fields = event_fields(kwargs, None, failed=False)
    assert fields is not None
    assert (fields["team"], fields["api_key_id"], fields["project"]) == (
        "search",
        "key-prod",
        "apollo",
    )
    assert (fields["user_id"], fields["session_id"]) == ("end-user-1", "sess-litellm")
    assert (fields["feature"], fields["cost_center"]) == ("from-sdk", "cc-1")
    assert fields["tags"]["model_group"] == "gpt-4o-group"
    assert fields["tags"]["litellm_tags"] == "beta,eu"
    # Without LiteLLM's end user, the proxy's, then the call's own user.
    slo["end_user"] = None
    assert (event_fields(kwargs, None, failed=False) or {})["user_id"] == "u-kwargs"


def test_long_identities_and_trace_ids_are_cut_to_the_contracts_lengths() -> None:
    slo = {**_SLO, "metadata": {"user_api_key_team_alias": "t" * 300}}
    kwargs = {"standard_logging_object": slo, "litellm_trace_id": "x" * 200}
    fields = event_fields(kwargs, None, failed=False)
    assert fields is not None
    assert (fields["team"], fields["request_id"]) == ("t" * 256, "x" * 128)


def test_a_timeout_error_class_is_a_timeout_without_the_exception() -> None:
    slo = {**_SLO, "error_information": {"error_code": "", "error_class": "Timeout"}}
    fields = event_fields({"standard_logging_object": slo}, None, failed=True)
    assert fields is not None and fields["status"] == "timeout"


def test_the_calls_metadata_wins_over_the_loggers_defaults() -> None:
    meter, transport = collecting_meter()
    logger = SpendstreamLogger(meter, team="gateway", environment="prod")
    slo = {**_SLO, "custom_llm_provider": "openai"}
    kwargs = {"standard_logging_object": slo, "litellm_params": {"metadata": {"team": "search"}}}
    try:
        logger.log_success_event(kwargs, None, None, None)
        (event,) = flushed(meter, transport)
    finally:
        meter.close(timeout_s=5)
    assert (event["team"], event["environment"]) == ("search", "prod")


def test_a_payload_ending_when_it_starts_has_latency_zero() -> None:
    slo = {**_SLO, "startTime": 1.7e9}
    fields = event_fields({"standard_logging_object": slo}, None, failed=False)
    assert fields is not None and fields["latency_ms"] == 0.0


def test_a_turn_sent_as_text_is_read_and_a_turn_that_is_no_number_does_not_lose_the_call(
    metered: tuple[Meter, CollectingTransport],
) -> None:
    # Through the proxy, a client's metadata turn may be a JSON string: the call is metered
    # all the same (it was lost, "invalid usage event"), with the turn when it is a number.
    turns = ("2", " 7 ", 1_000_000_000, "third", True, "²", -1, 1_000_000_001, "99999999999")
    for turn in turns:
        litellm.completion(
            model="gpt-4o-mini",
            messages=MESSAGES,
            mock_response="ok",
            metadata={"session_id": f"s-{turn}", "turn": turn},
        )
    events = {e["session_id"]: e for e in _events(metered, len(turns))}
    assert events["s-2"]["turn"] == 2
    assert events["s- 7 "]["turn"] == 7
    assert events["s-1000000000"]["turn"] == 1_000_000_000  # the bound itself
    for dropped in turns[3:]:
        assert "turn" not in events[f"s-{dropped}"], dropped
