"""``prices update`` against a real local HTTP server; ``prices show`` of every rate and its age."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from spendstream.cli import main
from spendstream.config import Config
from spendstream.pricebook import pricer_for
from spendstream.pricedata import load_price_data, price_data_paths
from spendstream.producers import UsageEvent

# genai-prices' published format: a JSON array of providers with their models and prices.
DATA = [
    {
        "id": "openai",
        "name": "OpenAI",
        "api_pattern": "https://api\\.openai\\.com",
        "models": [
            {
                "id": "gpt-5",
                "match": {"equals": "gpt-5"},
                "prices": {"input_mtok": "9", "output_mtok": "90", "web_searches_kcount": "20"},
            }
        ],
    }
]
LAST_MODIFIED = "Tue, 10 Nov 2026 08:00:00 GMT"


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, bytes]]] = {}
    last_modified: ClassVar[str] = LAST_MODIFIED

    def do_GET(self) -> None:
        status, body = self.routes.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Last-Modified", self.last_modified)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.routes = {
        "/data.json": (200, json.dumps(DATA).encode()),
        "/broken.json": (200, b'[{"id": 1}]'),
        "/html": (200, b"<html>"),
    }
    _Handler.last_modified = LAST_MODIFIED
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _gpt5(**kw: Any) -> UsageEvent:
    return UsageEvent.model_validate(
        {
            "event_id": "e1",
            "ts": "2026-11-20T00:00:00Z",
            "provider": "openai",
            "model": "gpt-5",
            "input_tokens": 1_000_000,
            "output_tokens": 0,
            **kw,
        }
    )


def test_update_keeps_the_fetched_data_with_its_date_and_the_pricer_uses_it(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wd = tmp_path / "wd"
    bundled = pricer_for(wd, Config()).price(_gpt5())
    assert bundled is not None and bundled.cost_usd == Decimal("1.25")
    assert main(["prices", "update", "--url", f"{server}/data.json", "--workdir", str(wd)]) == 0
    out = capsys.readouterr().out
    assert "1 providers, 1 models, as of 2026-11-10" in out
    data_path, meta_path = price_data_paths(wd)
    assert json.loads(data_path.read_text()) == DATA
    meta = json.loads(meta_path.read_text())
    assert meta["url"] == f"{server}/data.json"
    assert meta["as_of"].startswith("2026-11-10T08:00:00")
    loaded = load_price_data(wd)
    assert loaded is not None and loaded.as_of == datetime(2026, 11, 10, 8, tzinfo=UTC)

    cost = pricer_for(wd, Config()).price(_gpt5(tool_requests={"web_search": 5}))
    assert cost is not None
    assert cost.cost_usd == Decimal(9) + Decimal("0.1")  # the fetched $9 and $20/1K searches
    assert cost.price_source == "genai-prices:openai/gpt-5"

    # The pipeline prices with it too: ingest into the same workdir.
    events = tmp_path / "events.jsonl"
    events.write_text(_gpt5().model_dump_json() + "\n")
    assert main(["ingest", str(events), "--workdir", str(wd)]) == 0
    capsys.readouterr()
    assert (
        main(["sql", "--workdir", str(wd), "--format", "json", "SELECT cost_usd FROM usage_facts"])
        == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert Decimal(str(row["cost_usd"])) == 9

    assert main(["prices", "show", "openai", "gpt-5", "--workdir", str(wd)]) == 0
    err = capsys.readouterr().err
    assert f"price data: {server}/data.json (fetched " in err
    assert "as of 2026-11-10" in err


def test_show_says_1_day_not_1_days(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    _Handler.last_modified = format_datetime(now - timedelta(days=1, hours=1), usegmt=True)
    yesterday = (now - timedelta(days=1)).date()
    dated = [
        {
            **DATA[0],
            "models": [
                {
                    "id": "gpt-5",
                    "match": {"equals": "gpt-5"},
                    "prices": [
                        {"prices": {"input_mtok": "10", "output_mtok": "100"}},
                        {
                            "constraint": {"start_date": yesterday.isoformat()},
                            "prices": {"input_mtok": "9", "output_mtok": "90"},
                        },
                    ],
                }
            ],
        }
    ]
    _Handler.routes["/dated.json"] = (200, json.dumps(dated).encode())
    wd = str(tmp_path / "wd")
    assert main(["prices", "update", "--url", f"{server}/dated.json", "--workdir", wd]) == 0
    capsys.readouterr()
    assert main(["prices", "show", "openai", "gpt-5", "--workdir", wd]) == 0
    err = capsys.readouterr().err
    assert f"as of {(now - timedelta(days=1, hours=1)):%Y-%m-%d} (1 day old)" in err
    assert f"newest dated price change in the data: {yesterday} (1 day ago)" in err


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/missing.json", "could not fetch price data"),
        ("/html", "did not return JSON"),
        ("/broken.json", "genai-prices cannot load this data"),
    ],
)
def test_a_bad_download_is_an_error_and_keeps_the_previous_data(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, why: str
) -> None:
    wd = tmp_path / "wd"
    assert main(["prices", "update", "--url", f"{server}/data.json", "--workdir", str(wd)]) == 0
    assert main(["prices", "update", "--url", f"{server}{path}", "--workdir", str(wd)]) == 1
    assert why in capsys.readouterr().err
    assert json.loads(price_data_paths(wd)[0].read_text()) == DATA


def test_show_prints_every_dimension_tier_batch_and_discount_with_the_data_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[prices.discount]]\nprovider = "anthropic"\npercent = 10\n')
    args = ["prices", "show", "anthropic", "claude-opus-4-1", "--at", "2026-01-05"]
    assert main([*args, "--config", str(cfg), "--workdir", str(tmp_path), "--format", "json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    by = {(r["dimension"], r["applies_when"]): r for r in rows}
    write_1h = by[("cache_write_1h_tokens", "always")]
    assert (write_1h["list_rate_usd"], write_1h["rate_usd"]) == ("30", "27")  # 10% off
    assert write_1h["batch_rate_usd"] == "13.5"  # and 50% off for batch
    search = by[("tool:web_search", "always")]
    assert (search["unit"], search["list_rate_usd"], search["rate_usd"]) == (
        "USD / 1K requests",
        "10",
        "9",
    )
    audio = by[("input_audio_tokens", "always")]
    assert audio["rate_usd"] == by[("input_tokens", "always")]["rate_usd"]
    assert audio["note"].startswith("no own rate")
    assert len({r["dimension"] for r in rows}) == 12  # 11 token dimensions + web search
    assert "genai-prices:anthropic/claude-opus-4-1+discount:10%" in captured.err
    assert "+batch:50%+discount:10%" in captured.err
    assert "price data: genai-prices 0.2.3 bundled snapshot" in captured.err
    assert "newest dated price change in the data: " in captured.err


def test_show_lists_long_context_bands_and_service_tiers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["prices", "show", "anthropic", "claude-sonnet-4-5", "--format", "json"]) == 0
    whens = {r["applies_when"] for r in json.loads(capsys.readouterr().out)}
    assert whens == {"input_tokens <= 200000", "input_tokens > 200000"}
    args = ["prices", "show", "openai", "gpt-5", "--at", "2026-11-01", "--format", "json"]
    assert main([*args, "--service-tier", "flex"]) == 0
    captured = capsys.readouterr()
    rows = {r["dimension"]: r for r in json.loads(captured.out)}
    assert rows["input_tokens"]["rate_usd"] == "0.625"
    assert "+service_tier:flex" in captured.err


@pytest.mark.parametrize(
    ("provider", "model", "suggestion"),
    [("openai", "gpt5", "gpt-5"), ("anthropic", "claude-sonet-4-5", "claude-sonnet-4-5")],
)
def test_an_unknown_model_suggests_the_closest_known_ids(
    provider: str, model: str, suggestion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["prices", "show", provider, model]) == 2
    err = capsys.readouterr().err
    assert "did you mean" in err and suggestion in err
