"""A Faust app that only counts: ``take_events(batch, within)`` over a topic, nothing else.

Run by bench.kafka_pipeline as a subprocess: ``python -m bench._faust_take BOOTSTRAP TOPIC N
BATCH DATADIR``; prints one JSON line with the sustained events/s (first batch to the Nth
event), then exits. It measures what Faust's stream machinery alone costs per event.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

import faust


def main() -> None:
    bootstrap, topic, n, batch, datadir = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
        sys.argv[5],
    )
    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        datadir=datadir,
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        autodiscover=False,
        # Extra App settings to try, e.g. '{"stream_buffer_maxsize": 20000}'.
        **json.loads(os.environ.get("BENCH_FAUST_SETTINGS", "{}")),
    )
    source = app.topic(
        topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    state: dict[str, Any] = {"seen": 0, "t_first": None, "batches": 0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for events in stream.take_events(batch, within=0.2):
            if state["t_first"] is None:
                state["t_first"] = time.perf_counter()
            state["seen"] += len(events)
            state["batches"] += 1
            if state["seen"] >= n:
                elapsed = time.perf_counter() - state["t_first"]
                print(
                    json.dumps(
                        {
                            "events": state["seen"],
                            "seconds": round(elapsed, 3),
                            "events_per_s": round(state["seen"] / elapsed),
                            "batches": state["batches"],
                        }
                    ),
                    flush=True,
                )
                os._exit(0)

    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
