"""Alert router throughput vs bare HTTP posting, on the same alerts, same local server, same run.

    .venv/bin/python -m bench.alert_routing [--alerts 3000] [--keys 30] [--batch 200]

A storm: ``--alerts`` runaway_session alerts spread over ``--keys`` api keys, delivered to a
PagerDuty-shaped sink on a local ThreadingHTTPServer (127.0.0.1, answers 202). Measured:

* ``bare_httpx`` (the baseline): one ``httpx.Client.post`` per alert, nothing else — what a
  router with no routing, state or noise control would cost, and the pages it would send;
* ``router_ungrouped``: ``AlertRouter.handle`` in batches, one incident per alert (every
  alert paged: routing, sqlite state, rendering and delivery per notification);
* ``router_grouped``: the same with ``group_by = ["kind", "api_key_id"]`` (one page per key).

Results: bench/results/alert_routing.json and a line in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench._common import machine as shared_machine
from bench._common import record
from spendstream.alerts.delivery import HttpDeliverer, RetryPolicy
from spendstream.alerts.router import AlertRouter
from spendstream.config import config_from_dict
from spendstream.records import Alert, stable_id

NAME = "alert_routing"
KEY = "B3NCHKEY0123456789abcdefABCDEF00"


def machine() -> dict[str, Any]:
    return shared_machine(("spendstream", "httpx", "pydantic"))


class _Server:
    def __init__(self) -> None:
        self.count = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real endpoints do
            disable_nagle_algorithm = True  # else delayed ACKs cost 40 ms a request

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    outer.count += 1
                self.send_response(202)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v2/enqueue"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def storm(n: int, keys: int) -> list[Alert]:
    t0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        scope = f"session:s{i}"
        dedup = stable_id("runaway_session", scope, "turns")
        out.append(
            Alert(
                alert_id=stable_id(dedup, "0"),
                kind="runaway_session",
                scope=scope,
                severity="critical",
                ts=t0 + timedelta(milliseconds=i),
                value=Decimal(101),
                threshold=Decimal(100),
                message=f"{scope} is over its turns limit: 101 turns > 100",
                dedup_key=dedup,
                details={"limit": "turns", "api_key_id": f"key-{i % keys}"},
            )
        )
    return out


def bare(alerts: list[Alert], url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with httpx.Client() as client:
        for a in alerts:
            body = {
                "routing_key": KEY,
                "event_action": "trigger",
                "dedup_key": a.dedup_key,
                "payload": {"summary": a.message, "source": "bench", "severity": "critical"},
            }
            client.post(
                url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
    return time.perf_counter() - start, len(alerts)


def routed(alerts: list[Alert], url: str, batch: int, group_by: list[str]) -> tuple[float, int]:
    cfg = config_from_dict(
        {
            "alerts": {
                "sink": [
                    {
                        "name": "pd",
                        "type": "pagerduty",
                        "url": url,
                        "routing_key_env": "K",
                        "max_per_scope": 1000,
                    }
                ],
                "route": [{"name": "page", "sinks": ["pd"], "group_by": group_by}],
            }
        }
    ).alerts
    with tempfile.TemporaryDirectory() as tmp:
        router = AlertRouter.from_config(
            cfg, Path(tmp), environ={"K": KEY}, deliverer=HttpDeliverer(RetryPolicy(max_attempts=1))
        )
        sent = 0
        start = time.perf_counter()
        for i in range(0, len(alerts), batch):
            sent += router.handle(alerts[i : i + batch]).triggered
        elapsed = time.perf_counter() - start
        router.close()
    return elapsed, sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.alert_routing", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--alerts", type=int, default=3000)
    ap.add_argument("--keys", type=int, default=30)
    ap.add_argument("--batch", type=int, default=200)
    args = ap.parse_args(argv)
    alerts = storm(args.alerts, args.keys)
    server = _Server()
    try:
        results: dict[str, dict[str, float | int]] = {}
        for name, run in (
            ("bare_httpx", lambda: bare(alerts, server.url)),
            ("router_ungrouped", lambda: routed(alerts, server.url, args.batch, [])),
            (
                "router_grouped",
                lambda: routed(alerts, server.url, args.batch, ["kind", "api_key_id"]),
            ),
        ):
            before = server.count
            seconds, pages = run()
            results[name] = {
                "seconds": round(seconds, 4),
                "alerts_per_s": round(len(alerts) / seconds),
                "pages_sent": pages,
                "requests_received": server.count - before,
            }
    finally:
        server.stop()
    report: dict[str, Any] = {
        "name": NAME,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "params": vars(args),
        **results,
        "ungrouped_vs_bare": round(
            results["router_ungrouped"]["alerts_per_s"] / results["bare_httpx"]["alerts_per_s"], 2
        ),
        "grouped_vs_bare": round(
            results["router_grouped"]["alerts_per_s"] / results["bare_httpx"]["alerts_per_s"], 2
        ),
    }
    r = results
    line = (
        f"- {NAME} ({report['when']}, {report['machine']['cpu_model']}, {report['machine']['cores']} cores, "
        f"{args.alerts} alerts over {args.keys} keys): bare httpx {r['bare_httpx']['alerts_per_s']}/s "
        f"({r['bare_httpx']['pages_sent']} pages); router ungrouped {r['router_ungrouped']['alerts_per_s']}/s "
        f"({report['ungrouped_vs_bare']}x, {r['router_ungrouped']['pages_sent']} pages); grouped "
        f"{r['router_grouped']['alerts_per_s']}/s ({report['grouped_vs_bare']}x, "
        f"{r['router_grouped']['pages_sent']} pages) -> results/{NAME}.json"
    )
    record(NAME, report, line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
