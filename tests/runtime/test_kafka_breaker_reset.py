"""``spendstream breakers reset`` of a wide scope reaches its scope owner through the partials
topic: a team's hard budget opens the team's breaker in the scope loop, a reset closes it
there (the owner forgets it in its landed state) and the closed event lands once."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.runtime.kafka_workers import (
    kcat_produce,
    landed_breakers,
    query,
    read_topic,
    running_worker,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TEAM = "reset-team"
SCOPE = f"team:{TEAM}"


def _calls(
    n: int,
    *,
    prefix: str = "reset",
    team: str = TEAM,
    tokens: tuple[int, int] = (200_000, 20_000),
    keys: int = 5,
    key_prefix: str = "key",
    ago: timedelta = timedelta(minutes=5),
) -> list[bytes]:
    """``n`` calls a second apart from ``ago``, over ``keys`` api keys (spread over the usage
    partitions)."""
    start = datetime.now(UTC) - ago
    return [
        json.dumps(
            {
                "event_id": f"{prefix}-{i}",
                "ts": (start + i * timedelta(seconds=1)).isoformat(),
                "provider": "openai",
                "model": "gpt-5",
                "input_tokens": tokens[0],
                "output_tokens": tokens[1],
                "api_key_id": f"{key_prefix}-{i % keys}",
                "team": team,
            }
        ).encode()
        for i in range(n)
    ]


def test_a_wide_scope_reset_reaches_its_owner_and_lands_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config, prefix = write_config(
        tmp_path / "c.toml",
        kafka_bootstrap,
        partitions=3,
        extra=(
            "[leases]\nserve_in_run = false\n"
            f'[[budget]]\nscope = "{SCOPE}"\nperiod = "day"\namount_usd = "1"\n'
            'hard_limit = "1.0"\n'
        ),
    )
    wd = tmp_path / "wd"
    with running_worker(wd, config, prefix, tmp_path) as w:
        kcat_produce(kafka_bootstrap, prefix + "spendstream.usage", _calls(20), keyed=True)
        states = f"SELECT state, reason FROM breaker_events WHERE scope = '{SCOPE}' ORDER BY ts"
        wait_for(lambda: bool(query(wd, states)), "the team's budget breaker never opened", w)
        assert query(wd, states)[0][0] == "open"
        wait_for(
            lambda: SCOPE in json.dumps(landed_breakers(wd)),
            "no scope owner landed the open breaker in its state",
            w,
        )
        reset = subprocess.run(
            [sys.executable, "-m", "spendstream", "breakers", "reset", SCOPE,
             "--workdir", str(wd), "--config", str(config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert reset.returncode == 0, reset.stderr
        wait_for(
            lambda: SCOPE not in json.dumps(landed_breakers(wd)),
            "the scope owner never forgot the reset breaker",
            w,
        )
        closed = f"SELECT count(*) FROM breaker_events WHERE scope = '{SCOPE}' AND state = 'closed'"
        assert query(wd, closed) == [(1,)]  # the command's and the owner's event land once
        on_topic = [
            json.loads(v)
            for k, v in read_topic(kafka_bootstrap, prefix + "spendstream.breakers")
            if k == SCOPE.encode()
        ]
        assert on_topic[0]["state"] == "open"
        assert on_topic[-1]["state"] == "closed" and on_topic[-1]["reason"] == "manual reset"
        # The command went to the scope's owner on the partials topic, nowhere else.
        resets = [
            m
            for m in read_topic(kafka_bootstrap, prefix + "spendstream.partials")
            if m[0] == SCOPE.encode()
        ]
        assert len(resets) == 1
