from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from spendstream.alerts.delivery import HttpDeliverer, RetryPolicy
from spendstream.alerts.notification import Notification
from spendstream.alerts.sinks import build_sink
from spendstream.alerts.sinks._text import sql_literal
from spendstream.alerts.sinks.slack import SlackSink, slack_message
from spendstream.config import SlackSinkConfig

from ..conftest import ScriptedServer, check_slack
from ..factories import T0, make_alert


def note(action: str = "trigger", **kw: object) -> Notification:
    args: dict[str, object] = {"action": action, "key": "k", "route": "r", "alert": make_alert()}
    args.update(kw)
    return Notification(**args)  # type: ignore[arg-type]


def _text(message: dict[str, object]) -> str:
    import json

    return json.dumps(message)


def test_a_trigger_says_what_which_scope_how_much_and_since_when() -> None:
    msg = slack_message(note())
    assert check_slack(msg) == []
    text = _text(msg)
    assert "runaway_session" in text and "session:s1" in text
    assert "51.25 (threshold 50)" in text
    assert "2026-11-23 12:00:00 UTC" in text
    assert "spendstream sql" in text and "session_id = 's1'" in text
    assert 'spendstream sql "' not in text  # the query is shown, never a shell command


HOSTILE = ("s1$(touch {mark})", "s1`touch {mark}`", "s1'; COPY t TO '{mark}' --\"\\!x\n")


@pytest.mark.parametrize("template", HOSTILE)
def test_investigate_never_hands_a_shell_a_command_built_from_data(
    template: str, tmp_path: Path
) -> None:
    mark = tmp_path / "ran"
    session = template.format(mark=mark)
    msg = slack_message(note(alert=make_alert(scope=f"session:{session}")))
    assert check_slack(msg) == []
    look = msg["blocks"][-1]["text"]["text"]
    assert 'spendstream sql "' not in look
    sql = look.split("```")[1]
    # Nothing a shell (or Slack's code block) acts on is left in the query...
    assert not any(c in sql for c in '$`\\"!\n')
    # ...so even pasted into a shell's double quotes it is inert and arrives intact,
    echoed = subprocess.run(
        ["bash", "-c", f'printf %s "{sql}"'], capture_output=True, text=True, check=True
    ).stdout
    assert echoed == sql and not mark.exists()
    # and as SQL it still finds exactly the hostile session's calls.
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE usage_facts AS SELECT * FROM (VALUES (?, TIMESTAMPTZ '2026-11-23 12:00+00', "
        "1.5::DECIMAL(38,18)), ('s1', TIMESTAMPTZ '2026-11-23 12:00+00', 9::DECIMAL(38,18))) "
        "AS t(session_id, ts, cost_usd)",
        [session],
    )
    assert con.execute(sql).fetchall()[0][1:] == (1, Decimal("1.5"))
    assert not mark.exists()


@pytest.mark.parametrize("value", ["", "plain", "it's", "a\tb", "é ü 中", "\u202eevil", "''''"])
def test_sql_literal_round_trips_any_value(value: str) -> None:
    literal = sql_literal(value)
    assert not any(c in literal for c in '$`\\"!\n\t\u202e')
    assert duckdb.connect().execute(f"SELECT {literal}").fetchone() == (value,)


def test_a_scope_too_long_to_quote_still_fits_slacks_limits() -> None:
    # 256 characters a shell acts on, each spelled chr(36) in the query: the section passed
    # Slack's 3000 characters, and Slack's 400 is not retried (the page was dead-lettered).
    alert = make_alert(scope="session:" + "$" * 256)
    msg = slack_message(note(alert=alert))
    assert check_slack(msg) == []
    look = msg["blocks"][-1]["text"]["text"]
    assert f"SELECT * FROM alerts WHERE alert_id = {sql_literal(alert.alert_id)}" in look
    # A scope that fits keeps its own query.
    fits = slack_message(note(alert=make_alert(scope="session:" + "$" * 200)))
    assert "WHERE session_id = " in fits["blocks"][-1]["text"]["text"]


def test_a_link_replaces_the_sql_when_a_dashboard_is_configured() -> None:
    text = _text(slack_message(note(), link_base_url="https://grafana.example/d/spend"))
    assert "https://grafana.example/d/spend?scope=session%3As1" in text
    assert "spendstream sql" not in text


def test_a_resolve_says_it_is_over() -> None:
    msg = slack_message(note("resolve", opened_at=T0))
    assert check_slack(msg) == []
    assert msg["blocks"][0]["text"]["text"].startswith(
        ":white_check_mark: Resolved: runaway_session"
    )


def test_mrkdwn_control_characters_in_messages_are_escaped() -> None:
    alert = make_alert(scope="session:<!channel>")
    msg = slack_message(note(alert=alert))
    # Everything Slack parses as mrkdwn (plain_text headers are shown verbatim).
    parsed = [msg["text"]] + [
        str(b.get("text", "")) + str(b.get("fields", "")) + str(b.get("elements", ""))
        for b in msg["blocks"]
        if b["type"] != "header"
    ]
    assert all("<!channel>" not in t for t in parsed)
    assert "&lt;!channel&gt;" in msg["text"]


def test_a_storm_lists_some_of_its_scopes() -> None:
    scopes = tuple(f"session:s{i}" for i in range(25))
    msg = slack_message(note(count=25, scopes=scopes, group={"api_key_id": "key-ci"}))
    assert check_slack(msg) == []
    assert "and 15 more" in _text(msg)


def test_delivery_to_a_real_webhook_passes_the_block_checks(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(check=check_slack)
    cfg = SlackSinkConfig(name="slack", type="slack", webhook_url_env="HOOK")
    sink = build_sink(cfg, environ={"HOOK": server.url})
    assert isinstance(sink, SlackSink)
    assert server.url not in repr(sink)  # the webhook URL is the secret
    assert sink.deliver(note(), HttpDeliverer(RetryPolicy(max_attempts=1))).delivered
    assert len(server.accepted()) == 1


def test_the_header_names_kind_and_severity_and_a_count_only_for_a_storm() -> None:
    title = slack_message(note())["blocks"][0]["text"]["text"]
    assert title == ":rotating_light: runaway_session (critical)"
    storm = slack_message(note(count=3, scopes=("session:a",), group={"kind": "x"}))
    assert storm["blocks"][0]["text"]["text"] == ":rotating_light: runaway_session (critical) x3"
    warn = slack_message(note(alert=make_alert(severity="warning")))
    assert warn["blocks"][0]["text"]["text"] == ":warning: runaway_session (warning)"


def test_a_long_resolve_header_is_cut_to_slacks_150_characters() -> None:
    msg = slack_message(note("resolve", alert=make_alert(scope="session:" + "x" * 300)))
    assert len(msg["blocks"][0]["text"]["text"]) == 150
    assert check_slack(msg) == []


def test_ampersands_are_escaped_as_well_as_angle_brackets() -> None:
    # Typed as text, "&lt;!channel&gt;" must show as written, not be decoded into a mention.
    msg = slack_message(note(alert=make_alert(scope="team:R&D &lt;!channel&gt;")))
    assert "team:R&amp;D &amp;lt;!channel&amp;gt;" in msg["text"]
    fields = msg["blocks"][2]["fields"]
    assert fields[0]["text"] == "*Scope*\n`team:R&amp;D &amp;lt;!channel&amp;gt;`"


def _since(msg: dict[str, Any]) -> str:
    return str(msg["blocks"][2]["fields"][2]["text"])


def test_since_is_utc_whatever_the_alerts_offset_or_the_hosts_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An alert may arrive with any UTC offset (records only require one); the host may run in
    # any zone. "Since" says UTC, so it must be UTC.
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        plus2 = T0.astimezone(timezone(timedelta(hours=2)))
        assert _since(slack_message(note(alert=make_alert(at=plus2)))) == (
            "*Since*\n2026-11-23 12:00:00 UTC"
        )
        assert _since(slack_message(note())) == "*Since*\n2026-11-23 12:00:00 UTC"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_resolve_says_since_when_the_incident_opened() -> None:
    opened = T0 - timedelta(hours=3)
    msg = slack_message(note("resolve", opened_at=opened))
    assert _since(msg) == "*Since*\n2026-11-23 09:00:00 UTC"
    assert _since(slack_message(note("resolve"))) == "*Since*\n2026-11-23 12:00:00 UTC"
