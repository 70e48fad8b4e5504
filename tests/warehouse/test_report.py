"""The HTML report as a person uses it: rendered by headless Chromium, numbers checked by SQL.

Chromium is a Debian package (``chromium``) that scripts/install-system-deps installs;
without it these tests fail, they never skip.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import pytest

from spendstream.cli import main
from spendstream.producers.event import UsageEvent
from spendstream.records import Alert, BreakerEvent, Fact
from spendstream.stream.pricing import Pricer
from spendstream.warehouse import Warehouse
from spendstream.warehouse.charts import PALETTE
from spendstream.warehouse.report import write_report
from spendstream.warehouse.revenue import load_revenue

DAY1 = datetime(2026, 3, 2, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)
CHARTS = (
    "chart-spend",
    "chart-features",
    "chart-models",
    "chart-api-keys",
    "chart-unit",
    "chart-cache",
    "chart-retry",
    "chart-split",
)
# (team, feature, provider, model, calls per hour on day 1, on day 2)
TRAFFIC = (
    ("search", "semantic-search", "openai", "gpt-5-mini", 6, 6),
    ("support", "support-chat", "anthropic", "claude-sonnet-4-5", 4, 9),
    ("growth", "onboarding-emails", "openai", "gpt-5", 2, 1),
)


def _events() -> list[UsageEvent]:
    out: list[UsageEvent] = []
    for day, start in ((0, DAY1), (1, DAY2)):
        for hour in range(24):
            for team, feature, provider, model, *per_hour in TRAFFIC:
                for k in range(per_hour[day]):
                    n = len(out)
                    inp = 2000 + 37 * (n % 50)
                    cached = feature == "support-chat" and not (day == 1 and hour >= 16)
                    out.append(
                        UsageEvent.model_validate(
                            {
                                "event_id": f"ev-{n}",
                                "ts": start + timedelta(hours=hour, minutes=k * 5 + 1),
                                "provider": provider,
                                "model": model,
                                "input_tokens": inp,
                                "output_tokens": 150 + n % 300,
                                "cache_read_tokens": int(inp * 0.8) if cached else 0,
                                "attempt": 2 if n % 17 == 0 else 1,
                                "status": "error" if n % 23 == 0 else "ok",
                                "team": team,
                                "feature": feature,
                                "user_id": f"user-{n % 40}",
                                "api_key_id": f"key-{team}",
                                "session_id": f"s-{team}-{day}-{hour}",
                                "tags": {"plan": "pro" if n % 2 else "free"},
                            }
                        )
                    )
    # An agent session with two sub-agents, all on day 2.
    for i, (sid, parent) in enumerate(
        (("agent-root", None), ("agent-sub-a", "agent-root"), ("agent-sub-b", "agent-root"))
    ):
        for k in range(3):
            out.append(
                UsageEvent.model_validate(
                    {
                        "event_id": f"agent-{i}-{k}",
                        "ts": DAY2 + timedelta(hours=3, minutes=i * 10 + k),
                        "provider": "anthropic",
                        "model": "claude-sonnet-4-5",
                        "input_tokens": 30_000,
                        "output_tokens": 2_000,
                        "team": "platform",
                        "feature": "coding-agent",
                        "session_id": sid,
                        "parent_session_id": parent,
                        "user_id": "user-1",
                    }
                )
            )
    return out


def _alert(kind: str, scope: str, ts: datetime) -> Alert:
    return Alert(
        alert_id=f"{kind}-{scope}-{ts:%H}",
        kind=kind,  # type: ignore[arg-type]
        scope=scope,
        severity="warning",
        ts=ts,
        value=Decimal("12.5"),
        threshold=Decimal("3"),
        message=f"{kind} on {scope}",
        dedup_key=f"{kind}|{scope}|{ts:%Y%m%d%H}",
    )


def build_warehouse(workdir: Path, revenue_csv: Path) -> None:
    events = _events()
    costs = Pricer.from_config().price_batch(events)
    assert all(c is not None for c in costs)
    facts = [Fact(e, c, e.ts) for e, c in zip(events, costs, strict=True)]
    alerts = [
        _alert("hourly_anomaly", "team:support", DAY2 + timedelta(hours=14, minutes=30)),
        _alert("runaway_rate", "api_key:key-platform", DAY2 + timedelta(hours=3, minutes=5)),
    ]
    breakers = [
        BreakerEvent("api_key:key-platform", "open", "runaway_rate", DAY2 + timedelta(hours=3))
    ]
    with Warehouse(workdir) as wh:
        wh.commit(facts=facts, alerts=alerts, breaker_events=breakers)
        wh.ensure_views()
        revenue_csv.write_text("month,plan,revenue_usd\n2026-03,pro,40\n2026-03,free,2\n")
        load_revenue(wh, revenue_csv)
        wh.ensure_views()


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: run scripts/install-system-deps (Debian: chromium)"
    return exe


def _browse(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,3000",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        *mode,
        page.as_uri(),
    ]
    # A hang guard, not a speed limit.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows of pixel bytes, bytes per pixel) of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, bpp = 8, bytearray(), 0, 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        f, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if f == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif f == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((left + prev[x]) >> 1)) & 255
        elif f == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


class _Charts(HTMLParser):
    """Counts the drawn marks (rect, path) inside each chart's svg."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[str, int] = {}
        self.ids: dict[str, dict[str, str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids[a["id"]] = a
        if tag == "svg":
            self._open.append(a.get("id", ""))
            self.marks.setdefault(a.get("id", ""), 0)
        elif tag in ("rect", "path") and self._open:
            self.marks[self._open[-1]] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg" and self._open:
            self._open.pop()


@dataclass
class Rendered:
    workdir: Path
    page: Path
    html: str
    dom: _Charts
    png: bytes


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    tmp = tmp_path_factory.mktemp("report")
    workdir = tmp / "work"
    build_warehouse(workdir, tmp / "revenue.csv")
    page = write_report(workdir, tmp / "out" / "report.html", since=DAY2, until=DAY3)
    dom_text = _browse(page, tmp / "profile", "--dump-dom").stdout
    dom = _Charts()
    dom.feed(dom_text)
    shot = tmp / "shot.png"
    _browse(page, tmp / "profile", f"--screenshot={shot}")
    yield Rendered(workdir, page, page.read_text("utf-8"), dom, shot.read_bytes())


def _sql(workdir: Path, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(workdir / "warehouse" / "spendstream.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def test_every_chart_is_drawn_in_the_browser(rendered: Rendered) -> None:
    for chart in CHARTS:
        assert rendered.dom.marks.get(chart, 0) > 0, f"{chart} drew nothing"
    # The timeline carries the alert, the breaker opening and the anomaly's hour.
    assert 'class="marker alert"' in rendered.html
    assert 'class="marker breaker"' in rendered.html
    assert 'class="anomaly"' in rendered.html


def test_the_screenshot_shows_the_charts_colours(rendered: Rendered) -> None:
    width, height, rows, bpp = decode_png(rendered.png)
    assert (width, height) == (1400, 3000)
    colours: set[bytes] = set()
    for row in rows:
        colours.update(row[x : x + 3] for x in range(0, len(row), bpp))
    assert len(colours) > 100, "the page looks blank"
    # Each team's series colour and the unit-economics band colours were painted.
    for hex_colour in (*PALETTE[:4], "#59a14f"):
        assert bytes.fromhex(hex_colour[1:]) in colours, hex_colour


def test_summary_numbers_match_sql_on_the_same_warehouse(rendered: Rendered) -> None:
    ids = rendered.dom.ids
    [(total, calls)] = _sql(
        rendered.workdir,
        "SELECT sum(cost_usd), count(*) FROM usage_facts WHERE ts >= ? AND ts < ?",
        [DAY2, DAY3],
    )
    assert Decimal(ids["summary-total"]["data-usd"]) == total
    assert int(ids["summary-calls"]["data-calls"]) == calls
    [(before,)] = _sql(
        rendered.workdir,
        "SELECT sum(cost_usd) FROM usage_facts WHERE ts >= ? AND ts < ?",
        [DAY1, DAY2],
    )
    assert Decimal(ids["summary-change"]["data-before-usd"]) == before
    assert Decimal(ids["summary-change"]["data-after-usd"]) == total
    movers = _sql(
        rendered.workdir,
        "SELECT team || ' / ' || feature, coalesce(sum(cost_usd) FILTER (WHERE ts >= ?), 0) "
        "- coalesce(sum(cost_usd) FILTER (WHERE ts < ?), 0) AS d FROM usage_facts "
        "WHERE ts >= ? AND ts < ? GROUP BY 1 ORDER BY abs(d) DESC LIMIT 3",
        [DAY2, DAY2, DAY1, DAY3],
    )
    shown = [v["data-name"] for v in _movers(rendered.html)]
    assert shown == [m[0] for m in movers]
    assert "previous period" in rendered.html


def _movers(html: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []

    class P(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if a.get("class") == "mover":
                found.append(a)

    P().feed(html)
    return found


def test_the_page_fetches_nothing(rendered: Rendered) -> None:
    html = rendered.html.lower()
    for needle in ("<script", "<link", "<img", "src=", "@import", "url(", 'href="http'):
        assert needle not in html, needle


def test_unit_economics_bands_follow_revenue(rendered: Rendered) -> None:
    # March revenue $42 against AI cost: the plan and total rows carry the view's bands.
    rows = _sql(
        rendered.workdir,
        "SELECT key, band FROM unit_economics WHERE level = 'plan' ORDER BY key",
    )
    assert rows
    for key, band in rows:
        assert f"<td>{key}</td>" in rendered.html and f"<td>{band}</td>" in rendered.html


def test_sub_agent_tree_is_shown_under_its_root(rendered: Rendered) -> None:
    root = rendered.html.index("agent-root</strong>")
    assert root < rendered.html.index("agent-sub-a") < rendered.html.index("</table>", root)


def test_first_period_compares_the_last_day_with_the_day_before(
    rendered: Rendered, tmp_path: Path
) -> None:
    page = write_report(rendered.workdir, tmp_path / "all.html")
    html = page.read_text("utf-8")
    assert "no facts before 2026-03-02" in html
    p = _Charts()
    p.feed(html)
    [(total,)] = _sql(rendered.workdir, "SELECT sum(cost_usd) FROM usage_facts")
    assert Decimal(p.ids["summary-total"]["data-usd"]) == total
    [(day2,)] = _sql(
        rendered.workdir, "SELECT sum(cost_usd) FROM usage_facts WHERE ts >= ?", [DAY2]
    )
    assert Decimal(p.ids["summary-change"]["data-after-usd"]) == day2


def test_page_size_does_not_grow_with_the_number_of_facts(
    rendered: Rendered, tmp_path: Path
) -> None:
    # Three times the calls over the same hours: only aggregates reach the page.
    more = tmp_path / "more"
    with Warehouse(more) as wh:
        events = _events()
        copies = [
            e.model_copy(update={"event_id": f"{e.event_id}-{k}"}) for e in events for k in range(3)
        ]
        costs = Pricer.from_config().price_batch(copies)
        wh.commit(facts=[Fact(e, c, e.ts) for e, c in zip(copies, costs, strict=True)])
        wh.ensure_views()
    small = write_report(rendered.workdir, tmp_path / "a.html", DAY2, DAY3).stat().st_size
    large = write_report(more, tmp_path / "b.html", DAY2, DAY3).stat().st_size
    assert large < small * 1.1


def test_report_command_writes_the_page_and_rejects_a_bad_date(
    rendered: Rendered, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.html"
    argv = ["report", "--workdir", str(rendered.workdir), "--out", str(out)]
    assert main([*argv, "--since", "2026-03-03", "--until", "2026-03-04"]) == 0
    assert "chart-spend" in out.read_text("utf-8")
    assert main([*argv, "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err
    # Each of these stopped the command with OverflowError (weekly buckets stepped past the
    # year 9999, a next month after December 9999, UTC past the year 9999).
    for bounds, said in [
        (["--since", "0001-01-01", "--until", "9999-12-31"], "at most 9999-01-01"),
        (["--since", "0001-01-01", "--until", "2014-01-01"], "longer than the report charts"),
        (["--since", "9999-12-31T23:30:00Z"], "at most 9999-01-01"),
        (["--until", "9999-12-31T23:59:59-12:00"], "is past the year 9999 in UTC"),
        (["--since", "0001-01-01T00:00:00+01:00"], "is before the year 1 in UTC"),
    ]:
        assert main([*argv, *bounds]) == 2, bounds
        assert said in capsys.readouterr().err, bounds
    # The longest period it charts, and one whose period before would start before year 1.
    assert main([*argv, "--since", "2007-01-01", "--until", "2026-12-01"]) == 0
    assert main([*argv, "--since", "0002-01-01", "--until", "0010-01-01"]) == 0
    # No fact is from before 2015: a since before it reports from there (all of history).
    assert main([*argv, "--since", "0001-01-01", "--until", "2027-01-01"]) == 0
    assert "2015-01-01" in out.read_text("utf-8")
    assert main(["report", "--workdir", str(tmp_path / "empty"), "--out", str(out)]) == 2


def test_report_out_that_cannot_be_a_file_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --out naming a directory stopped with IsADirectoryError (after leaving its temporary
    # page in the directory's parent), a path under a file with FileExistsError.
    events = tmp_path / "calls.jsonl"
    events.write_text(json.dumps(_events()[0].model_dump(mode="json", exclude_none=True)) + "\n")
    work = tmp_path / "work"
    assert main(["ingest", str(events), "--workdir", str(work)]) == 0
    pages = tmp_path / "pages"
    pages.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    argv = ["report", "--workdir", str(work), "--out"]
    capsys.readouterr()
    assert main([*argv, str(pages)]) == 2
    assert f"{pages} is a directory: name the page's file, e.g. {pages / 'report.html'}" in (
        capsys.readouterr().err
    )
    assert main([*argv, str(a_file / "report.html")]) == 2
    assert f"cannot write {a_file / 'report.html'}: File exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "calls.jsonl", "pages", "work"]
    assert list(pages.iterdir()) == []


def test_a_filter_no_fact_matches_is_said_with_the_values_that_occur(
    rendered: Rendered, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "typo.html"
    argv = ["report", "--workdir", str(rendered.workdir), "--out", str(out)]
    assert main([*argv, "--team", "serch"]) == 0
    err = capsys.readouterr().err
    teams = sorted({t for (t,) in _sql(rendered.workdir, "SELECT team FROM usage_facts") if t})
    assert (
        f"no facts have team = serch: the report is empty (team values seen: {', '.join(teams[:10])})"
        in err
    )
    assert main([*argv, "--team", teams[0]]) == 0
    assert "no facts have" not in capsys.readouterr().err


def test_a_period_without_facts_is_said_with_when_the_facts_are(
    rendered: Rendered, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--since` after the last fact (or a year typo'd) wrote an empty page, unsaid.
    out = tmp_path / "later.html"
    argv = ["report", "--workdir", str(rendered.workdir), "--out", str(out)]
    ((first, last),) = _sql(rendered.workdir, "SELECT min(ts), max(ts) FROM usage_facts")
    after = (last + timedelta(days=2)).date().isoformat()
    assert main([*argv, "--since", after]) == 0
    err = capsys.readouterr().err
    assert f"no facts from {after} 00:00 UTC to " in err
    assert (
        f"the report is empty (the facts are from {first:%Y-%m-%d %H:%M} UTC to "
        f"{last:%Y-%m-%d %H:%M} UTC)"
    ) in err
    assert out.exists()
    assert main([*argv, "--since", first.date().isoformat()]) == 0
    assert "no facts from" not in capsys.readouterr().err


def test_demo_ends_pointing_at_the_report_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--events", "1000"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("Report: ")
    page = Path(last.removeprefix("Report: ").split()[0])
    assert page.is_file() and page.parent == (tmp_path / "demo").resolve()
    dom = _Charts()
    dom.feed(_browse(page, tmp_path / "profile", "--dump-dom").stdout)
    assert all(dom.marks.get(c, 0) > 0 for c in ("chart-spend", "chart-features", "chart-cache"))


def test_unit_economics_per_feature_match_the_views(rendered: Rendered) -> None:
    from spendstream.warehouse.reading import connect
    from spendstream.warehouse.report import Period, gather

    con = connect(rendered.workdir)
    try:
        data = gather(con, Period(DAY2, DAY3))
    finally:
        con.close()
    view = {
        (m, f"{t} / {f}"): (u, c, per_user)
        for m, t, f, u, _calls, c, per_user in _sql(
            rendered.workdir, "SELECT * FROM feature_user_month WHERE active_users > 0"
        )
    }
    [(revenue, users)] = _sql(
        rendered.workdir,
        "SELECT (SELECT sum(revenue_usd) FROM revenue), count(DISTINCT user_id) FROM usage_facts",
    )
    assert len(data.unit_features) == len(view)
    for month, key, n, cost, per_user, rev_per_user in data.unit_features:
        v_users, v_cost, v_per_user = view[(month, key)]
        assert (n, cost) == (v_users, v_cost)
        assert abs(per_user - v_per_user) <= Decimal("1e-9")
        assert abs(rev_per_user - revenue / users) <= Decimal("1e-9")
