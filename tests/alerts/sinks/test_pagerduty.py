from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from spendstream.alerts.delivery import HttpDeliverer, RetryPolicy
from spendstream.alerts.notification import Notification
from spendstream.alerts.sinks import build_sink
from spendstream.alerts.sinks.pagerduty import PagerDutySink, pagerduty_event
from spendstream.config import PagerDutySinkConfig
from spendstream.errors import ConfigError

from ..conftest import ScriptedServer, check_pagerduty
from ..factories import PD_KEY, T0, make_alert


def trigger(**kw: object) -> Notification:
    args: dict[str, object] = {
        "action": "trigger",
        "key": "dk-1",
        "route": "page",
        "alert": make_alert(),
    }
    args.update(kw)
    return Notification(**args)  # type: ignore[arg-type]


def sink_for(server: ScriptedServer) -> PagerDutySink:
    cfg = PagerDutySinkConfig(name="pd", type="pagerduty", url=server.url, routing_key_env="PD_KEY")
    sink = build_sink(cfg, environ={"PD_KEY": PD_KEY})
    assert isinstance(sink, PagerDutySink)
    return sink


def test_trigger_and_resolve_pass_the_events_v2_checks(
    http_server: Callable[..., ScriptedServer],
) -> None:
    server = http_server(check=check_pagerduty)
    deliverer = HttpDeliverer(RetryPolicy(max_attempts=1), rng=random.Random(1))
    sink = sink_for(server)
    assert sink.deliver(trigger(), deliverer).delivered
    assert sink.deliver(trigger(action="resolve", opened_at=T0), deliverer).delivered
    first, second = (r.json() for r in server.accepted())
    assert first["event_action"] == "trigger" and second["event_action"] == "resolve"
    assert first["dedup_key"] == second["dedup_key"] == "dk-1"
    assert first["routing_key"] == PD_KEY
    assert first["payload"]["severity"] == "critical"
    assert first["payload"]["class"] == "runaway_session"
    assert first["payload"]["component"] == "session:s1"
    assert first["payload"]["custom_details"]["value"] == "51.25"


def test_the_checking_server_refuses_a_malformed_event(
    http_server: Callable[..., ScriptedServer],
) -> None:
    # Guards the guard: a body the real API would reject is rejected here too.
    server = http_server(check=check_pagerduty)
    deliverer = HttpDeliverer(RetryPolicy(max_attempts=1))
    bad = PagerDutySink(name="pd", url=server.url, routing_key=SecretStr("short"))
    assert not bad.deliver(trigger(), deliverer).delivered
    assert server.received[0].status == 400


def test_summary_is_cut_to_1024_characters() -> None:
    alert = make_alert()
    long = trigger(
        alert=alert.__class__(
            **{**{f: getattr(alert, f) for f in alert.__slots__}, "message": "x" * 5000}
        )
    )
    event = pagerduty_event(long, PD_KEY)
    assert len(event["payload"]["summary"]) == 1024
    assert check_pagerduty(event) == []


def test_severity_maps_through_the_sink_config() -> None:
    event = pagerduty_event(
        trigger(alert=make_alert(severity="warning")), PD_KEY, severity_map={"warning": "error"}
    )
    assert event["payload"]["severity"] == "error"


def test_a_storm_page_carries_its_count_and_scopes() -> None:
    n = trigger(
        count=312,
        scopes=("session:a", "session:b"),
        group={"kind": "runaway_session", "api_key_id": "key-ci"},
    )
    event = pagerduty_event(n, PD_KEY)
    assert event["payload"]["summary"].startswith(
        "312 runaway_session alerts (kind=runaway_session, api_key_id=key-ci)"
    )
    assert event["payload"]["custom_details"]["count"] == 312
    assert event["payload"]["custom_details"]["scopes"] == ["session:a", "session:b"]


def test_routing_key_comes_from_a_file_and_never_shows_in_repr(tmp_path: Path) -> None:
    f = tmp_path / "pd.key"
    f.write_text(PD_KEY + "\n")
    cfg = PagerDutySinkConfig(name="pd", type="pagerduty", routing_key_file=str(f))
    sink = build_sink(cfg, environ={})
    assert isinstance(sink, PagerDutySink)
    assert sink.routing_key.get_secret_value() == PD_KEY
    assert PD_KEY not in repr(sink) and PD_KEY not in str(sink)


def test_a_missing_routing_key_is_a_config_error_naming_the_key() -> None:
    cfg = PagerDutySinkConfig(name="oncall", type="pagerduty", routing_key_env="NOPE_NOT_SET")
    with pytest.raises(ConfigError, match=r"alerts\.sink\.oncall\.routing_key_env.*NOPE_NOT_SET"):
        build_sink(cfg, environ={})


@pytest.mark.parametrize("severity", ["critical", "warning", "info"])
def test_without_a_map_each_severity_is_sent_as_pagerduty_spells_it(severity: str) -> None:
    event = pagerduty_event(trigger(alert=make_alert(severity=severity)), PD_KEY)
    assert event["payload"]["severity"] == severity
    assert check_pagerduty(event) == []


def test_info_keeps_its_severity_through_the_default_config_map() -> None:
    cfg = PagerDutySinkConfig(name="pd", type="pagerduty", routing_key_env="PD_KEY")
    sink = build_sink(cfg, environ={"PD_KEY": PD_KEY})
    assert isinstance(sink, PagerDutySink)
    event = json.loads(sink.request(trigger(alert=make_alert(severity="info"))).body)
    assert event["payload"]["severity"] == "info"


def test_timestamp_is_the_alerts_event_time_with_its_utc_offset() -> None:
    event = pagerduty_event(trigger(), PD_KEY)
    assert event["payload"]["timestamp"] == "2026-11-23T12:00:00+00:00"
    assert datetime.fromisoformat(event["payload"]["timestamp"]) == T0


def test_group_is_the_scope_kind_and_class_the_alert_kind() -> None:
    event = pagerduty_event(trigger(alert=make_alert("api_key:k9", kind="runaway_rate")), PD_KEY)
    assert event["payload"]["group"] == "api_key"
    assert event["payload"]["component"] == "api_key:k9"
    assert event["payload"]["class"] == "runaway_rate"


def test_the_link_points_at_the_alerts_scope() -> None:
    event = pagerduty_event(trigger(), PD_KEY, link_base_url="https://grafana.example/d/spend")
    link = "https://grafana.example/d/spend?scope=session%3As1"
    assert event["client_url"] == link
    assert event["links"] == [{"href": link, "text": "spend of session:s1"}]
    assert check_pagerduty(event) == []
    assert "client_url" not in pagerduty_event(trigger(), PD_KEY)
