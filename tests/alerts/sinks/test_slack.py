from __future__ import annotations

from collections.abc import Callable

from spendstream.alerts.delivery import HttpDeliverer, RetryPolicy
from spendstream.alerts.notification import Notification
from spendstream.alerts.sinks import build_sink
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
