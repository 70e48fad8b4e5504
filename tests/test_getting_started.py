"""docs/getting-started.md, executed: every shell block of the guide, in order, in one shell.

The guide is the test's script. Its ``sh`` blocks run as written in one bash session (so
``cd``, ``export`` and background jobs carry over, as in the reader's terminal); a
``python title="NAME"`` block is written to NAME where the reader would save it. A step
that fails fails the test, naming the step.

What the test changes, and why (each substitution must match, so guide and test stay in
step): the ``git clone`` line becomes a ``cd`` into this checkout; ``make demo`` writes its
data into the test's directory instead of the checkout; the Slack webhook URL is a local
Slack-shaped server's; the broker, ``run`` and ``serve`` get free ports instead of 9092,
8787 and 8788 (other test sessions share the machine). ``$HOME`` is a fresh directory (so
``~/spend-trial`` and kafka-local's state start empty) while the Kafka jar cache is the
machine's; the producers' spool is the test's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from spendstream.local.kafka import find_free_ports
from tests.alerts.conftest import ScriptedServer, check_slack

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "getting-started.md"
SLACK_PLACEHOLDER = "https://hooks.slack.com/services/T0000000/B0000000/XXXXXXXXXXXXXXXX"
GUIDE_TIMEOUT_S = 1500  # a hang guard (first Kafka start, shared cores), not a speed limit

_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Step:
    kind: str  # "sh" or "file"
    text: str
    name: str = ""


def guide_steps(markdown: str) -> list[Step]:
    """The guide's executable blocks: shell blocks, and python blocks that name a file."""
    steps: list[Step] = []
    for lang, info, body in _BLOCK.findall(markdown):
        if lang == "sh":
            steps.append(Step("sh", body))
        elif lang == "python":
            title = re.search(r'title="([^"]+)"', info)
            assert title, f"a python block without title= cannot be run:\n{body}"
            steps.append(Step("file", body, title.group(1)))
    return steps


def substitute(steps: list[Step], table: dict[str, str]) -> list[Step]:
    out = []
    used = dict.fromkeys(table, 0)
    for step in steps:
        text = step.text
        for old, new in table.items():
            used[old] += text.count(old)
            text = text.replace(old, new)
        out.append(Step(step.kind, text, step.name))
    unused = [old for old, n in used.items() if n == 0]
    assert not unused, f"the guide no longer contains {unused}: update the test's substitutions"
    return out


# The guide's ``until ...; do sleep 1; done`` waits are endless, as a reader's would be; in the
# test each gives up after this long, so a pipeline that never delivers fails at its step,
# with the logs, instead of running into the whole-guide hang guard.
STEP_WAIT_S = 600
_WAIT_LOOP = "do sleep 1; done"
_GIVE_UP = f"""guide_waited() {{
  if (( SECONDS - guide_step_started > {STEP_WAIT_S} )); then
    echo '@@ gave up waiting after {STEP_WAIT_S} s'; exit 124
  fi
}}"""


def script_of(steps: list[Step]) -> str:
    lines = ["set -euo pipefail", _GIVE_UP]
    for i, step in enumerate(steps, start=1):
        lines.append(f"echo '@@ step {i} start'; guide_step_started=$SECONDS")
        if step.kind == "file":
            marker = "GUIDE_FILE_EOF"
            assert marker not in step.text
            lines.append(f"cat > {step.name} <<'{marker}'\n{step.text}{marker}")
        else:
            lines.append(step.text.rstrip("\n"))
        lines.append(f"echo; echo '@@ step {i} ok'")  # its output may lack a final newline
    return "\n".join(lines) + "\n"


def test_the_guide_has_the_steps_it_promises() -> None:
    steps = guide_steps(GUIDE.read_text())
    text = "\n".join(s.text for s in steps)
    for needed in (
        "make demo",
        "spendstream init",
        "spendstream kafka-local start",
        "spendstream run",
        "Meter.kafka(",
        "curl -sS http://127.0.0.1:8787/v1/events",
        "spendstream sql",
        "spendstream report",
        "spendstream alerts",
        "meter.guard()",
        "spendstream serve",
        "spendstream kafka-local stop",
    ):
        assert needed in text, needed
    assert [s.name for s in steps if s.kind == "file"] == [
        "first_call.py",
        "runaway.py",
        "guard.py",
    ]


def test_the_guide_says_what_to_do_when_its_ports_are_taken() -> None:
    # A first user whose 9092 (another Kafka) or 8787 is taken was told by the command to
    # pick another port, and the guide then went on with 8787 and a broker it had not got.
    text = " ".join(GUIDE.read_text().split())
    assert "spendstream kafka-local start --port " in text
    assert "`--http-port N` to `run` and use port N instead of 8787" in text


@pytest.mark.kafka
@pytest.mark.slow
def test_the_getting_started_guide_runs_as_written(tmp_path: Path) -> None:
    slack = ScriptedServer(check=check_slack).start()
    kafka_port, controller_port, http_port, serve_port = find_free_ports(4)
    steps = substitute(
        guide_steps(GUIDE.read_text()),
        {
            "git clone https://github.com/spendstream/spendstream.git && cd spendstream": (
                f"cd {ROOT}"
            ),
            "make demo": f"SPENDSTREAM_HOME={tmp_path / 'demo-data'} make demo",
            SLACK_PLACEHOLDER: slack.url,
            "spendstream kafka-local start": (
                f"spendstream kafka-local start --port {kafka_port} "
                f"--controller-port {controller_port}"
            ),
            "spendstream run --config spendstream.toml": (
                f"spendstream run --config spendstream.toml --http-port {http_port}"
            ),
            "127.0.0.1:8787": f"127.0.0.1:{http_port}",
            "spendstream serve": f"spendstream serve --port {serve_port}",
            "127.0.0.1:8788": f"127.0.0.1:{serve_port}",
            _WAIT_LOOP: "do sleep 1; guide_waited; done",
        },
    )
    home = tmp_path / "home"
    home.mkdir()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")},
        "HOME": str(home),
        "XDG_CACHE_HOME": cache,  # the Kafka jars fetched once per machine
        "SPENDSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
        "PATH": "/usr/local/bin:/usr/bin:/bin",  # a fresh shell: no .venv/bin until activated
    }
    env.pop("XDG_DATA_HOME", None)
    env.pop("VIRTUAL_ENV", None)
    script = tmp_path / "guide.sh"
    script.write_text(script_of(steps))
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its background jobs share its group: ended together below
    )
    timed_out = False
    try:
        out_bytes, _ = proc.communicate(timeout=GUIDE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        timed_out = True
        out_bytes = bytes(exc.output or b"")
    finally:
        if proc.poll() is None:
            proc.kill()
        with_killpg(proc.pid)
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "spendstream"), "kafka-local", "stop"],
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        slack.stop()
    out = out_bytes.decode(errors="replace")
    (tmp_path / "guide.out").write_text(out)  # what a reader would have seen, for debugging
    if timed_out or proc.returncode != 0:
        started = re.findall(r"^@@ step (\d+) start$", out, re.MULTILINE)
        failed = int(started[-1]) if started else 0
        step = steps[failed - 1] if failed else None
        logs = "".join(
            f"\n--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}"
            for p in (home / "spend-trial").glob("*.log")
        )
        pytest.fail(
            f"guide step {failed} failed "
            f"({'hung' if timed_out else f'exit {proc.returncode}'}):\n"
            f"{step.text if step else ''}\n--- output:\n{out[-6000:]}{logs}",
            pytrace=False,
        )

    ok = re.findall(r"^@@ step (\d+) ok$", out, re.MULTILINE)
    assert len(ok) == len(steps)
    assert "What it caught:" in out  # the demo ran
    assert '{"accepted":1,"rejected":[],"request_id":"' in out  # the curl call was taken
    assert re.search(r"^recorded [0-9a-f]{32}$", out, re.MULTILINE)  # first_call.py
    trial = home / "spend-trial"
    assert (trial / "spendstream.toml").exists() and (trial / "report.html").exists()
    # Paged in Slack, with a message Slack accepts, about the runaway key.
    pages = [r.json() for r in slack.accepted()]
    assert any(
        "runaway_rate" in json.dumps(p) and "api_key:key-agent" in json.dumps(p) for p in pages
    ), pages
    # The next call was refused, naming the scope.
    refused = re.search(r"^refused: .*api_key:key-agent.*$", out, re.MULTILINE)
    assert refused and "\nallowed\n" not in out
    # The live page's summary: the two first calls and the 300 of the runaway, for my-team.
    summary = json.loads(re.findall(r'^\{"version".*\}$', out, re.MULTILINE)[-1])
    assert summary["filter"] == {"team": "my-team"} and summary["calls"] == 302


def with_killpg(pgid: int) -> None:
    """End what the guide left running in its shell's group (run, alerts, serve)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
