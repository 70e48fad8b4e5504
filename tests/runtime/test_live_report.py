"""``spendstream serve`` as a person uses it: a real server process, pages loaded by headless
Chromium (driven over the DevTools protocol), numbers checked against ``spendstream sql``,
and a fact ingested while the page is open appearing on it without a reload.

Chromium is a Debian package (``chromium``; scripts/install-system-deps): without it these
tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from spendstream.cli import main
from spendstream.local.kafka import find_free_port

TOKEN = "serve-test-token"
DEADLINE_S = 120.0  # hang guards only; nothing here asserts speed


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendstream", *args],
        capture_output=True, text=True, check=False, timeout=300, env=env,
    )  # fmt: skip


def _sql(workdir: Path, sql: str) -> list[dict[str, Any]]:
    done = _cli("sql", "--workdir", str(workdir), "--format", "json", sql)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@dataclass
class Server:
    url: str
    workdir: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("serve") / "wd"
    assert main(["demo", "--workdir", str(workdir), "--events", "6000"]) == 0
    port = find_free_port()
    log = workdir / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spendstream", "serve", "--workdir", str(workdir),
             "--port", str(port), "--refresh-s", "0.5"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "SPENDSTREAM_INGEST_TOKEN": TOKEN},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    try:
        yield Server(url, workdir, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Page:
    """One headless Chromium tab, driven over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return dict(msg["result"])

    async def js(self, expression: str) -> Any:
        out = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in out, out
        return out["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.until(
            "document.readyState === 'complete' && !!document.getElementById('summary-total')"
        )

    async def until(self, expression: str) -> Any:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            value = await self.js(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"never true: {expression}"
            await asyncio.sleep(0.2)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: run scripts/install-system-deps (Debian: chromium)"
    return exe


def in_browser(profile: Path, scenario: Any) -> Any:
    """Run ``scenario(page)`` (a coroutine function) in a fresh headless Chromium."""
    profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + DEADLINE_S
        while not (active.exists() and active.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            target = next(t for t in json.loads(r.read()) if t["type"] == "page")

        async def drive() -> Any:
            url = target["webSocketDebuggerUrl"]
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(url, max_msg_size=0) as ws,
            ):
                page = Page(ws)
                await page.call("Page.enable")
                return await scenario(page)

        return asyncio.run(drive())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_page_loads_and_its_numbers_match_sql(served: Server, tmp_path: Path) -> None:
    async def scenario(page: Page) -> dict[str, Any]:
        await page.goto(f"{served.url}/?token={TOKEN}")  # the token once; a cookie keeps it
        return dict(
            await page.js(
                "({usd: document.getElementById('summary-total').dataset.usd,"
                " calls: document.getElementById('summary-calls').dataset.calls,"
                " address: location.href,"
                " breakers: [...document.querySelectorAll('#open-breakers tbody tr')]"
                "   .map(r => r.cells[0].textContent),"
                " alerts: document.querySelectorAll('#recent-alerts tbody tr').length})"
            )
        )

    seen = in_browser(tmp_path / "profile", scenario)
    [facts] = _sql(served.workdir, "SELECT sum(cost_usd) AS usd, count(*) AS n FROM usage_facts")
    assert Decimal(seen["usd"]) == Decimal(str(facts["usd"])) and int(seen["calls"]) == facts["n"]
    assert "token" not in seen["address"]  # redirected away from the address bar
    open_now = _sql(
        served.workdir,
        "SELECT scope FROM (SELECT scope, arg_max(state, ts) AS s FROM breaker_events "
        "GROUP BY scope) WHERE s <> 'closed' ORDER BY scope",
    )
    assert sorted(seen["breakers"]) == [r["scope"] for r in open_now]
    [alerts] = _sql(served.workdir, "SELECT count(*) AS n FROM alerts")
    assert seen["alerts"] == min(20, alerts["n"])


def test_filters_narrow_the_page_like_sql(served: Server, tmp_path: Path) -> None:
    async def scenario(page: Page) -> list[Any]:
        await page.goto(f"{served.url}/?token={TOKEN}")
        out = []
        for query in ("team=search", "feature=support-chat", "team=growth&since=2000-01-01"):
            await page.goto(f"{served.url}/?{query}")
            out.append(
                await page.js(
                    "[document.getElementById('summary-total').dataset.usd,"
                    " document.getElementById('summary-calls').dataset.calls,"
                    " document.querySelector('select[name=team]').value,"
                    " document.querySelector('select[name=feature]').value]"
                )
            )
        return out

    search, chat, growth = in_browser(tmp_path / "profile", scenario)
    for seen, where, team, feature in (
        (search, "team = 'search'", "search", ""),
        (chat, "feature = 'support-chat'", "", "support-chat"),
        (growth, "team = 'growth'", "growth", ""),
    ):
        [row] = _sql(
            served.workdir,
            f"SELECT sum(cost_usd) AS usd, count(*) AS n FROM usage_facts WHERE {where}",
        )
        assert (Decimal(seen[0]), int(seen[1])) == (Decimal(str(row["usd"])), row["n"])
        assert seen[2:] == [team, feature]  # the form shows what is applied


def test_a_fact_ingested_while_the_page_is_open_appears_without_a_reload(
    served: Server, tmp_path: Path
) -> None:
    event = {
        "event_id": "live-page-new-fact",
        "ts": "2026-11-20T12:00:00Z",
        "provider": "openai",
        "model": "gpt-5-mini",
        "input_tokens": 1_000_000,
        "output_tokens": 100_000,
        "team": "newcomers",
    }
    new_file = tmp_path / "one.jsonl"
    new_file.write_text(json.dumps(event) + "\n")

    async def scenario(page: Page) -> tuple[int, int, Any]:
        await page.goto(f"{served.url}/?token={TOKEN}&since=2000-01-01")
        before = int(await page.js("document.getElementById('summary-calls').dataset.calls"))
        await page.js("window.sameDocument = true")  # gone if the page reloads
        done = await asyncio.to_thread(
            _cli, "ingest", "--workdir", str(served.workdir), str(new_file)
        )
        assert done.returncode == 0, done.stderr
        after = int(
            await page.until(
                f"Number(document.getElementById('summary-calls').dataset.calls) > {before}"
                " && document.getElementById('summary-calls').dataset.calls"
            )
        )
        state = await page.js(
            "({same: window.sameDocument === true,"
            " teams: [...document.querySelectorAll('#chart-spend ~ * , .legend span')]"
            "   .map(e => e.textContent).join(' '),"
            " status: document.getElementById('live-status-text').textContent})"
        )
        return before, after, state

    before, after, state = in_browser(tmp_path / "profile", scenario)
    assert after == before + 1
    assert state["same"]  # swapped in place by the page's own refresh
    assert "newcomers" in state["teams"]
    [row] = _sql(served.workdir, "SELECT count(*) AS n FROM usage_facts")
    assert row["n"] == after
    assert f"{after:,} facts" in state["status"]


def test_every_page_but_health_needs_the_token(served: Server) -> None:
    def get(path: str, **headers: str) -> int:
        req = urllib.request.Request(served.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return int(r.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    assert get("/healthz") == 200
    for path in ("/", "/fragment", "/api/summary"):
        assert get(path) == 401
        assert get(path, Authorization="Bearer wrong") == 401
        assert get(path, Cookie="spendstream_token=wrong") == 401
        assert get(path, Authorization=f"Bearer {TOKEN}") == 200
        assert get(path, Cookie=f"spendstream_token={TOKEN}") == 200
    summary = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                served.url + "/api/summary?team=search",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ),
            timeout=30,
        ).read()
    )
    [row] = _sql(
        served.workdir, "SELECT sum(cost_usd) AS usd FROM usage_facts WHERE team = 'search'"
    )
    assert Decimal(summary["total_usd"]) == Decimal(str(row["usd"]))
    assert get("/?scope=nonsense", Authorization=f"Bearer {TOKEN}") == 400


def test_without_a_token_configured_the_page_is_open(tmp_path: Path) -> None:
    from spendstream.runtime.live_report import serve
    from spendstream.warehouse import Warehouse

    with Warehouse(tmp_path / "wd") as wh:
        wh.ensure_views()
    httpd = serve(tmp_path / "wd", port=0)
    try:
        port = httpd.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            page = r.read().decode()
        assert r.status == 200 and 'id="live-content"' in page and "No breaker is open." in page
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_summary_of_nothing_is_a_plain_zero(tmp_path: Path) -> None:
    # An empty sum of DECIMAL(38, 18) came back as "0E-18" for a filter that matched nothing.
    from spendstream.runtime.live_report import serve
    from spendstream.warehouse import Warehouse

    with Warehouse(tmp_path / "wd") as wh:
        wh.ensure_views()
    httpd = serve(tmp_path / "wd", port=0)
    try:
        port = httpd.server_address[1]
        url = f"http://127.0.0.1:{port}/api/summary?team=nobody"
        with urllib.request.urlopen(url, timeout=30) as r:
            summary = json.loads(r.read())
        assert summary["total_usd"] == "0.000000000000000000"
        assert summary["calls"] == 0
    finally:
        httpd.shutdown()
        httpd.server_close()


def _ask(url: str, method: str = "GET", body: bytes | None = None, **headers: str) -> Any:
    """(status, headers, body) of one request, errors included."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_a_post_of_events_is_told_to_go_to_run_and_a_wrong_token_is_called_wrong(
    tmp_path: Path,
) -> None:
    from spendstream.runtime.live_report import serve
    from spendstream.warehouse import Warehouse

    with Warehouse(tmp_path / "wd") as wh:
        wh.ensure_views()
    httpd = serve(tmp_path / "wd", port=0, token=TOKEN)
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        events = b'[{"event_id": "e1"}]' + b" " * (1 << 20)  # a body larger than one read
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        # A newcomer's POST of events: JSON, not http.server's HTML 501, naming `run`'s port.
        for headers in ({}, auth):
            status, answer, body = _ask(f"{url}/v1/events", "POST", events, **headers)
            assert status == 404 and answer["Content-Type"] == "application/json"
            error = json.loads(body)["error"]
            assert "POST /v1/events goes to `spendstream run`" in error and "8787" in error
        status, _, body = _ask(f"{url}/v1/events", **auth)  # a GET of it says the same
        assert status == 404 and "`spendstream run`" in json.loads(body)["error"]
        for path in ("/", "/api/summary", "/healthz"):
            status, answer, body = _ask(url + path, "POST", b"{}", **auth)
            assert (status, answer["Allow"]) == (405, "GET, HEAD"), path
            assert json.loads(body) == {"error": f"{path} takes GET (or HEAD), not POST"}
        status, _, body = _ask(f"{url}/nowhere", "DELETE", **auth)
        assert (status, json.loads(body)) == (404, {"error": "no page /nowhere"})

        # A token given but not the one: "wrong token", however it came; none: "required".
        for path, headers in (
            ("/?token=nope", {}),
            ("/api/summary", {"Authorization": "Bearer nope"}),
            ("/", {"Cookie": "spendstream_token=nope"}),
        ):
            status, answer, body = _ask(url + path, **headers)
            assert status == 401 and answer["WWW-Authenticate"].startswith("Bearer"), path
            assert body.decode().startswith("spendstream serve: wrong token:"), path
        status, _, body = _ask(f"{url}/")
        assert status == 401 and b"a token is required" in body and b"wrong" not in body
        status, _, _ = _ask(f"{url}/api/summary", Authorization=f"Bearer {TOKEN}")
        assert status == 200
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_target_that_is_no_url_is_a_400_and_a_stalled_request_lets_its_thread_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `GET http://[x/` raised ValueError in urlsplit: the connection got no answer. A POST
    # announcing a megabyte and sending one byte held its thread for ever, before any
    # token check (one thread per connection).
    import socket

    from spendstream.runtime import live_report
    from spendstream.warehouse import Warehouse

    with Warehouse(tmp_path / "wd") as wh:
        wh.ensure_views()
    monkeypatch.setattr(live_report, "SOCKET_TIMEOUT_S", 1.0)
    httpd = live_report.serve(tmp_path / "wd", port=0, token=TOKEN)
    address = ("127.0.0.1", httpd.server_address[1])
    try:
        for method in (b"GET", b"POST"):
            with socket.create_connection(address, timeout=30) as conn:
                conn.sendall(method + b" http://[x/ HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
                answer = conn.makefile("rb").read()
            assert answer.startswith(b"HTTP/1.0 400 "), answer
            assert b"is not a URL" in answer
        with socket.create_connection(address, timeout=30) as conn:
            conn.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 1000000\r\n\r\nx")
            # Closed by the server once a read waited SOCKET_TIMEOUT_S; without that, the
            # client's own 30 s timeout fails the test.
            assert conn.recv(1) == b""
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_start_line_says_where_the_token_is_kept(served: Server, tmp_path: Path) -> None:
    # With [http] token_file the hint named $SPENDSTREAM_INGEST_TOKEN, which was not set.
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = tmp_path / "c.toml"
    config.write_text(f'[http]\ntoken_file = "{token_file}"\n')
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "SPENDSTREAM_INGEST_TOKEN"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spendstream", "serve", "--workdir", str(served.workdir),
             "--config", str(config), "--port", "0"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE_S
        while "spendstream serve:" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        line = log.read_text().strip().splitlines()[-1]
        assert f"?token=<the token in {token_file}> once" in line, line
        assert f"the warehouse in {served.workdir} at http://127.0.0.1:" in line, line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
