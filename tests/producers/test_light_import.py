"""The producer client stays light: services that meter calls do not pull in the pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["faust", "aiokafka", "duckdb", "pyarrow", "pandas", "numpy", "great_expectations"]


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_producers_and_meter_loads_no_pipeline_dependency() -> None:
    loaded = _modules_after(
        "from spendstream.producers import Meter, UsageEvent, openai_usage\n"
        "m = Meter.http('http://127.0.0.1:9', 't', spool_dir=None)\n"
        "m.record(provider='openai', model='m', input_tokens=1, output_tokens=1)\n"
        "m.close(timeout_s=0)"
    )
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []
    assert "genai_prices" not in loaded  # imported by the helpers only when called
    assert "confluent_kafka" not in loaded  # the Kafka client loads with a Kafka transport
    assert not any(
        m.startswith(("spendstream.stream", "spendstream.warehouse", "spendstream.alerts"))
        for m in loaded
    )


def test_the_kafka_transport_and_breaker_view_load_the_kafka_client_but_no_pipeline() -> None:
    loaded = _modules_after(
        "from spendstream.producers import BreakerView, Meter\n"
        "m = Meter.kafka('127.0.0.1:9', spool_dir=None, max_block_ms=100)\n"
        "m.record(provider='openai', model='m', input_tokens=1, output_tokens=1)\n"
        "m.flush(timeout_s=1)\n"
        "m.close(timeout_s=0)\n"
        "v = BreakerView('127.0.0.1:9').start(); v.close()"
    )
    assert "confluent_kafka" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []


def test_the_sdk_client_integration_modules_load_no_pipeline_dependency() -> None:
    # instrument() is split over several modules (clients, calls, answers,
    # background_responses, collected): none of them may pull in the pipeline.
    loaded = _modules_after("import spendstream.producers.integrations.clients")
    assert "spendstream.producers.integrations.background_responses" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []
    assert "genai_prices" not in loaded  # imported by instrument(), not by its modules
    assert not any(
        m.startswith(("spendstream.stream", "spendstream.warehouse", "spendstream.alerts"))
        for m in loaded
    )
