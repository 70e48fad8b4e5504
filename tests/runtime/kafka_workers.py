"""Test harness for ``spendstream run`` (the Kafka runtime): real worker subprocesses (so kill -9 is real),
configs on a unique topic prefix, event files, kcat, and warehouse read-outs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from spendstream.config import WarehouseConfig
from spendstream.synthetic import generate
from spendstream.topics import partition_key
from tests import kafka_fixtures
from tests.kafka_fixtures import end_offsets

# Deadlines only turn a hang into a failure with a message; nothing asserts speed.
READY_TIMEOUT_S = 180.0
DONE_TIMEOUT_S = 300.0
TOKEN = "test-token-" + uuid.uuid4().hex


def write_config(
    path: Path,
    bootstrap: str,
    *,
    partitions: int = 1,
    batch_size: int = 500,
    backlog_batch_size: int | None = None,
    prefix: str | None = None,
    idle_advance_s: float = 0,
    extra: str = "",
) -> tuple[Path, str]:
    """A config on a fresh topic prefix / app id; returns (path, prefix).

    ``backlog_batch_size`` (how large a partition's batches grow while it is behind) is
    three batches unless given: the runtime's default path, with batches of many sizes.
    ``idle_advance_s`` is off by default: these tests compare ``run`` with ``ingest``, and a
    worker stalled on a loaded machine must not move breakers by processing time."""
    prefix = prefix or f"t{uuid.uuid4().hex[:10]}."
    path.write_text(
        "[kafka]\n"
        f'bootstrap_servers = "{bootstrap}"\n'
        f'topic_prefix = "{prefix}"\n'
        f'app_id = "{prefix.rstrip(".")}"\n'
        f"usage_partitions = {partitions}\n"
        "session_timeout_s = 10\n"
        "[pipeline]\n"
        f"batch_size = {batch_size}\n"
        f"backlog_batch_size = {backlog_batch_size or 3 * batch_size}\n"
        "batch_within_s = 0.2\n"
        # Generous: a worker paused by a loaded machine must not count as idle.
        "align_idle_s = 5\n"
        "[breaker]\n"
        f"idle_advance_s = {idle_advance_s}\n" + extra
    )
    return path, prefix


def event_lines(n: int, seed: int) -> list[bytes]:
    return [json.dumps(e, separators=(",", ":")).encode() for e in generate(n, seed=seed)]


_AHEAD = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
BAD_LINES = [
    b"not json at all",
    b'{"event_id": "no-fields"}',
    b'{"event_id":"cache-over","ts":"2026-01-05T10:00:00Z","provider":"openai","model":"gpt-5-mini",'
    b'"input_tokens":10,"output_tokens":1,"cache_read_tokens":20}',
    # Issue 12's poison pills: each stopped a worker for good (exit 75 on every restart).
    b'{"event_id":"p1","ts":"9999-12-31T23:59:59Z","provider":"openai","model":"gpt-5-mini",'
    b'"input_tokens":10,"output_tokens":1}',
    b'{"event_id":"p2","ts":"0001-01-01T00:00:00Z","provider":"openai","model":"gpt-5-mini",'
    b'"input_tokens":10,"output_tokens":1}',
    b'{"event_id":"p3","ts":"2026-01-05T10:00:00Z","provider":"openai","model":"gpt-5-mini",'
    b'"input_tokens":10,"output_tokens":1,"reported_cost_usd":"1e400"}',
    b'{"event_id":"p4","ts":"2026-01-05T10:00:00Z","provider":"openai","model":"gpt-5-mini",'
    b'"input_tokens":9223372036854775807,"output_tokens":9223372036854775807}',
    # ... and the one that blinded detection: two hours ahead of its receipt.
    f'{{"event_id":"p5","ts":"{_AHEAD}","provider":"openai","model":"gpt-5-mini",'
    '"input_tokens":10,"output_tokens":1,"api_key_id":"k"}'.encode(),
]
DEAD_SQL = "SELECT raw, error FROM dead_letters ORDER BY raw, error"


def event_file(tmp_path: Path, n: int, seed: int) -> tuple[Path, list[bytes]]:
    """``n`` generated events with bad records and one re-sent event among them."""
    lines = event_lines(n, seed)
    # Bad records and a re-sent event among the good ones.
    lines = lines[:100] + BAD_LINES + lines[100:] + [lines[7]]
    return write_lines(tmp_path / "events.jsonl", lines), lines


def ingest(path: Path, config: Path, workdir: Path) -> None:
    """``spendstream ingest`` of ``path`` (the embedded reference), in a subprocess."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spendstream",
            "ingest",
            str(path),
            "--workdir",
            str(workdir),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def key_calls(key: str, n: int, start: datetime, step: timedelta) -> list[bytes]:
    """``n`` small calls of one api key, ``step`` apart: a loop that trips its rate limit."""
    return [
        json.dumps(
            {
                "event_id": f"{key}-{i}",
                "ts": (start + i * step).isoformat(),
                "provider": "openai",
                "model": "gpt-5",
                "input_tokens": 10,
                "output_tokens": 1,
                "api_key_id": key,
            }
        ).encode()
        for i in range(n)
    ]


def write_lines(path: Path, lines: Iterable[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def key_of(line: bytes) -> bytes:
    """The documented usage key, or the raw line for records that are not even JSON."""
    try:
        d = json.loads(line)
        return partition_key(
            d.get("api_key_id"), d.get("session_id"), d.get("request_id"), str(d["event_id"])
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return b"bad"


def kcat_path() -> str:
    """Debian's kcat (a librdkafka client, not Python); installed here if missing."""
    found = shutil.which("kcat")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "kcat"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"cannot install kcat ({' '.join(cmd)}): {proc.stderr[-2000:]}")
    found = shutil.which("kcat")
    if not found:
        pytest.fail("kcat is not on PATH after apt-get install kcat")
    return found


def kcat_produce(bootstrap: str, topic: str, lines: list[bytes], *, keyed: bool) -> None:
    """Produce one message per line with kcat; keyed: ``key<TAB>value`` (-K)."""
    body = b"".join((key_of(line) + b"\t" + line if keyed else line) + b"\n" for line in lines)
    cmd = [kcat_path(), "-P", "-b", bootstrap, "-t", topic, "-X", "acks=all"]
    if keyed:
        # murmur2: the partitioner of the Java and Python clients, so keys land alike.
        cmd += ["-K", "\t", "-X", "topic.partitioner=murmur2_random"]
    proc = subprocess.run(cmd, input=body, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


LISTEN_WAIT_S = 120.0  # a worker's start on a loaded machine: topics, groups, warehouse


class Worker:
    """One ``spendstream run`` subprocess with its own HTTP port and log file.

    The port is the system's pick (``--http-port 0``), read from the worker's start-up line:
    a free port chosen here and bound by the worker seconds later was, once, taken by
    another process in between, and the worker exited."""

    def __init__(self, workdir: Path, config: Path, log_dir: Path, name: str = "w") -> None:
        self.workdir = workdir
        self.config = config
        self._port: int | None = None
        self.log_path = log_dir / f"worker-{name}-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {**os.environ, "SPENDSTREAM_INGEST_TOKEN": TOKEN}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spendstream",
                "run",
                "--workdir",
                str(self.workdir),
                "--config",
                str(self.config),
                "--http-port",
                "0",
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        return self

    @property
    def port(self) -> int:
        """The HTTP port, once the worker has said it listens: waited for while the worker
        runs (a test may ask for its URL right after ``start``), an OSError (as a refused
        connection would be) if it exits first or does not listen within ``LISTEN_WAIT_S``."""
        deadline = time.monotonic() + LISTEN_WAIT_S
        while self._port is None:
            try:
                text = self.log_path.read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            found = re.search(r"^spendstream run: .*; http://[^\s:]+:(\d+)", text, re.MULTILINE)
            if found is not None:
                self._port = int(found.group(1))
            elif not self.alive() or time.monotonic() > deadline:
                raise ConnectionRefusedError(f"{self.log_path.name}: not listening")
            else:
                time.sleep(0.1)
        return self._port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _get(self, path: str, token: str | None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        request = urllib.request.Request(self.url(path), headers=headers)
        return urllib.request.urlopen(request, timeout=10)

    def get_json(self, path: str, token: str | None = TOKEN) -> Any:
        with self._get(path, token) as resp:
            return json.loads(resp.read())

    def get_text(self, path: str, token: str | None = TOKEN) -> str:
        with self._get(path, token) as resp:
            return str(resp.read().decode())

    def status(self, path: str, token: str | None = None) -> int:
        """The HTTP status of a GET (401, 404... included)."""
        try:
            with self._get(path, token) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    def assigned(self) -> list[str]:
        try:
            return list(self.get_json("/healthz")["assigned"])
        except OSError:
            return []

    def wait_ready(self, prefix: str) -> None:
        """Until the worker's consumer holds at least one of our partitions."""
        wait_for(
            lambda: any(a.startswith(prefix) for a in self.assigned()),
            f"worker {self.log_path.name} never got a partition",
            self,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def running_worker(workdir: Path, config: Path, prefix: str, log_dir: Path) -> Iterator[Worker]:
    """A worker holding at least one of ``prefix``'s partitions, which must stop cleanly."""
    w = Worker(workdir, config, log_dir).start()
    try:
        w.wait_ready(prefix)
        yield w
    finally:
        assert w.stop() == 0, w.log_tail()


def wait_for(
    cond: Callable[[], bool], what: str, *workers: Worker, timeout_s: float = DONE_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        for w in workers:
            if not w.alive():
                pytest.fail(
                    f"{what}: worker exited ({w.proc and w.proc.returncode})\n{w.log_tail()}"
                )
        time.sleep(0.5)
    tails = "\n---\n".join(w.log_tail() for w in workers)
    pytest.fail(f"{what} (after {timeout_s:.0f} s)\n{tails}")


# Warehouse read-outs (DuckDB views, read-only, like an analyst).


def query(workdir: Path, sql: str, config: WarehouseConfig | None = None) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` over the workdir's views, or over a cluster's tables with ``config``
    (a reader with a workdir of its own, like another machine)."""
    import duckdb

    if config is not None:
        from spendstream.errors import ConfigError
        from spendstream.warehouse.reading import run_sql

        try:
            return run_sql(workdir, sql, config=config)[1]
        except ConfigError as exc:
            # Before the first worker created the tables (like the missing file below).
            if str(exc).startswith("no spendstream tables"):
                return []
            raise
    db = workdir / "warehouse" / "spendstream.duckdb"
    if not db.exists():
        return []
    for attempt in range(5):
        con = duckdb.connect(str(db), read_only=True)
        try:
            con.execute("SET TimeZone = 'UTC'")
            return [tuple(r) for r in con.execute(sql).fetchall()]
        except duckdb.IOException as exc:
            # docs/warehouse.md: the views' glob can name a file a writer deleted before the
            # read (a batch whose landing was given up, here one split to fit the facts
            # topic); the user's answer is to run the query again, and so is ours.
            if "Cannot open file" not in str(exc) or attempt == 4:
                raise
        finally:
            con.close()
    raise AssertionError("unreachable")


FACT_SQL = (
    "SELECT event_id, input_cost_usd, cache_read_cost_usd, cache_write_cost_usd, "
    "output_cost_usd, cost_usd, priced, price_source FROM usage_facts ORDER BY event_id"
)
ALERT_SQL = (
    "SELECT alert_id, kind, scope, severity, ts, value, threshold, message, dedup_key "
    "FROM alerts ORDER BY alert_id"
)
ALERT_IDENTITY_SQL = "SELECT alert_id, kind, scope, dedup_key FROM alerts ORDER BY alert_id"
BREAKER_SQL = "SELECT scope, state, reason, ts FROM breaker_events ORDER BY scope, ts, state"


def fact_count(workdir: Path, config: WarehouseConfig | None = None) -> int:
    rows = query(workdir, "SELECT count(*) FROM usage_facts", config)
    return int(rows[0][0]) if rows else 0


def writer_states(
    workdir: Path, config: WarehouseConfig | None = None
) -> dict[str, tuple[dict[str, int], dict[str, Any]]]:
    """Every warehouse writer's last positions and (JSON) state, {} before the first commit.

    With ``config`` (a cluster), read from the catalog through a reader of its own."""
    from spendstream.warehouse import Warehouse

    if config is None and not (workdir / "warehouse").exists():
        return {}
    with Warehouse(workdir, writer="reader", config=config) as wh:
        found = wh.writers()
    out = {}
    for name, resume in found.items():
        try:
            state = dict(json.loads(resume.state)) if resume.state else {}
        except ValueError:
            state = {}
        out[name] = (dict(resume.positions or {}), state)
    return out


def scope_state(
    workdir: Path, config: WarehouseConfig | None = None
) -> dict[str, tuple[dict[str, int], dict[str, Any]]]:
    """The scope owners' (``scopes/<q>`` writers') positions and state."""
    return {w: v for w, v in writer_states(workdir, config).items() if w.startswith("scopes/")}


def landed_breakers(workdir: Path, config: WarehouseConfig | None = None) -> list[Any]:
    """The breakers every engine holds in its landed state (per-key engines of the usage
    partitions and scope owners)."""
    out: list[Any] = []
    for name, (_, state) in writer_states(workdir, config).items():
        if name.startswith("usage/"):
            out.append(state.get("breakers"))
        elif name.startswith("scopes/") and state.get("engine"):
            out.append(json.loads(state["engine"]).get("breakers"))
    return out


_LOOPS = {"usage": "spendstream.usage", "scopes": "spendstream.partials"}


def all_judged(
    workdir: Path,
    bootstrap: str,
    prefix: str,
    config: WarehouseConfig | None = None,
    loops: Iterable[str] = ("usage", "scopes"),
) -> bool:
    """Whether every usage record is landed by its usage partition's writer and every
    partials record is merged and landed by its scope owner (of ``loops``: either)."""
    states = writer_states(workdir, config)
    for kind in loops:
        topic = _LOOPS[kind]
        name = prefix + topic
        for part, end in end_offsets(bootstrap, name).items():
            if end == 0:
                continue
            positions = states.get(f"{kind}/{part}", ({}, {}))[0]
            if positions.get(f"{name}/{part}", -1) < end - 1:
                return False
    return True


def wait_all_judged(
    workdir: Path,
    bootstrap: str,
    prefix: str,
    facts: int,
    *workers: Worker,
    config: WarehouseConfig | None = None,
) -> None:
    """Until every fact landed and every usage and partials record was judged."""
    wait_for(lambda: fact_count(workdir, config) >= facts, f"{facts} facts never landed", *workers)
    wait_for(
        lambda: all_judged(workdir, bootstrap, prefix, config),
        "the loops never judged every record",
        *workers,
    )


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every record of a topic, from the beginning."""
    return [(m.key(), m.value()) for m in kafka_fixtures.read_topic(bootstrap, topic)]


def usage_batches(workdir: Path) -> list[tuple[str, int, int, int]]:
    """(writer, facts, first ts, last ts in us) of every usage commit, in commit order."""
    from spendstream.warehouse import Warehouse
    from spendstream.warehouse import snapshots as sn

    out = []
    with Warehouse(workdir, writer="reader") as wh:
        table = wh.tables.load("usage_facts")
        for snap in reversed(list(sn.ancestors_until(table, None))):
            writer = sn.summary_of(snap).get(sn.WRITER, "")
            files = sn.added_files(table, snap)
            if not writer.startswith("usage/") or not files:
                continue
            ts = sn.read_columns(wh.storage, [f.file_path for f in files], ["ts"])["ts"]
            us = pc.cast(pc.cast(ts, pa.timestamp("us", "UTC")), pa.int64())
            out.append((writer, len(ts), pc.min(us).as_py(), pc.max(us).as_py()))
    return out
