"""The [alerts] section of the one config model: typed, secrets never inline, errors name keys."""

from __future__ import annotations

import tomllib

import pytest

from spendstream.config import PagerDutySinkConfig, SlackSinkConfig, config_from_dict
from spendstream.errors import ConfigError

FULL = """
[alerts]
link_base_url = "https://grafana.example/d/spend"

[alerts.delivery]
max_attempts = 5
retry_budget_s = 120

[[alerts.sink]]
name = "oncall"
type = "pagerduty"
routing_key_file = "/run/secrets/pd"
severity_map = { warning = "error" }

[[alerts.sink]]
name = "slack"
type = "slack"
webhook_url_env = "SLACK_HOOK"

[[alerts.sink]]
name = "hook"
type = "webhook"
url = "https://finops.example/hook"
secret_env = "HOOK_SECRET"

[[alerts.sink]]
name = "console"
type = "console"
stream = "log"

[[alerts.route]]
name = "page"
kinds = ["runaway_session"]
min_severity = "critical"
sinks = ["oncall", "slack"]
group_by = ["kind", "api_key_id"]
quiet_hours = "22:00-07:00"
"""


def _errors(doc: str) -> str:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(tomllib.loads(doc))
    return str(exc.value)


def test_the_documented_example_loads_into_typed_sinks_and_routes() -> None:
    alerts = config_from_dict(tomllib.loads(FULL)).alerts
    pd, slack = alerts.sink[0], alerts.sink[1]
    assert isinstance(pd, PagerDutySinkConfig) and pd.routing_key_file == "/run/secrets/pd"
    assert pd.severity_map == {"warning": "error"}
    assert isinstance(slack, SlackSinkConfig) and slack.webhook_url_env == "SLACK_HOOK"
    assert alerts.route[0].group_by == ["kind", "api_key_id"]
    assert alerts.delivery.max_attempts == 5 and alerts.delivery.retry_budget_s == 120


def test_an_unknown_key_in_a_sink_is_an_error_naming_it() -> None:
    err = _errors('[[alerts.sink]]\nname = "c"\ntype = "console"\ncolour = "red"\n')
    assert "alerts.sink.0.console.colour: unknown key" in err


def test_an_unknown_key_in_the_section_is_an_error_naming_it() -> None:
    assert "alerts.routes: unknown key" in _errors("[alerts]\nroutes = []\n")


def test_an_inline_routing_key_is_refused() -> None:
    err = _errors('[[alerts.sink]]\nname = "pd"\ntype = "pagerduty"\nrouting_key = "abc123"\n')
    assert "routing_key must not be written inline; use routing_key_env" in err
    assert "abc123" not in err


def test_a_route_to_an_unknown_sink_is_an_error() -> None:
    err = _errors('[[alerts.route]]\nname = "r"\nsinks = ["nowhere"]\n')
    assert "route 'r' names unknown sink(s): nowhere" in err


def test_sink_names_must_be_unique() -> None:
    doc = '[[alerts.sink]]\nname = "a"\ntype = "console"\n[[alerts.sink]]\nname = "a"\ntype = "console"\n'
    assert "sink names must be unique: a" in _errors(doc)


def test_quiet_hours_must_be_hh_mm_hh_mm() -> None:
    doc = '[[alerts.sink]]\nname = "c"\ntype = "console"\n[[alerts.route]]\nname = "r"\nsinks = ["c"]\nquiet_hours = "10pm-7am"\n'
    assert "alerts.route.0.quiet_hours" in _errors(doc)


def test_a_sink_type_that_does_not_exist_is_named() -> None:
    assert "'teams'" in _errors('[[alerts.sink]]\nname = "x"\ntype = "teams"\n')
